"""Pretraining: next-token loss, evaluation, a learning-rate schedule and the training loop.

The loop reads top to bottom: for each batch, set the learning rate, take one AdamW step, now and
then evaluate, print a sample and save a checkpoint. With the defaults it follows Raschka's
``train_model_simple``, so a seed gives the same losses as that book's training run.

Exact resumption: shuffling draws from torch's global generator when a loader starts an epoch. A
checkpoint therefore stores the generator state at the start of the current epoch as well as the
state now. Resuming restarts the epoch from the first state (same batch order), skips the batches
already trained on, then restores the second state (same dropout masks), so the losses continue as
if training had never stopped.

Data-parallel training: in processes started by ``torchrun`` (after
:func:`~minigpt_lib.distributed.init_distributed`), the loop wraps the model in
``DistributedDataParallel`` and gives each process its share of every batch
(:mod:`minigpt_lib.distributed`). Logged losses are means over the processes, so they match one
process's; only rank 0 prints, shows progress and writes checkpoints (of the unwrapped model).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import (
    barrier,
    get_world_size,
    is_main_process,
    mean_over_processes,
    shard_loader,
    wrap_model,
)
from .generate import generate
from .layers import linear_cross_entropy
from .tokenizer import Tokenizer, text_to_token_ids, token_ids_to_text
from .utils import check_number, check_positive_int, eval_mode, get_device, remove_stale_temporaries

Batch = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Loss and evaluation


def calc_loss_batch(
    input_batch: torch.Tensor,
    target_batch: torch.Tensor,
    model: nn.Module,
    device: torch.device | str,
) -> torch.Tensor:
    """Mean cross-entropy of the model's next-token predictions for one batch (a scalar tensor).

    Inputs and targets are ``(batch, tokens)``; the logits ``(batch, tokens, vocab)`` are flattened
    so every position counts as one classification.
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(
    data_loader: Iterable[Batch],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
) -> float:
    """Average batch loss over the first ``num_batches`` batches of a loader (all when ``None``).

    An empty loader raises ``ValueError`` rather than returning NaN, so a too-short validation text
    is noticed before training starts instead of as a NaN curve.
    """
    if num_batches is not None:
        check_positive_int("num_batches", num_batches)
    n_available = len(data_loader)
    if n_available == 0:
        raise ValueError(
            "data_loader: yields no batches (the text gives fewer windows than batch_size, "
            "and drop_last drops the partial batch); use more text or a smaller batch_size or "
            "max_length"
        )
    n = n_available if num_batches is None else min(num_batches, n_available)
    total = 0.0
    for input_batch, target_batch in itertools.islice(data_loader, n):
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / n


def evaluate_model(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    device: torch.device | str,
    eval_iter: int | None,
) -> tuple[float, float]:
    """Training and validation loss over ``eval_iter`` batches each, in eval mode without gradients.

    Eval mode turns dropout off, so the numbers measure the model, not the noise; the previous mode
    comes back afterwards.
    """
    with eval_mode(model), torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    return train_loss, val_loss


def perplexity(loss: float | torch.Tensor) -> float | torch.Tensor:
    """``exp(loss)``: how many equally likely tokens the model is, on average, choosing between.

    A tensor gives a tensor; a float gives a float (``inf`` for a loss too large to exponentiate).
    """
    if isinstance(loss, torch.Tensor):
        return torch.exp(loss)
    return math.exp(loss) if loss < 709.0 else math.inf


# --------------------------------------------------------------------------------------------------
# One training step


class NextTokenLoss(nn.Module):
    """A language model and its training loss as one module: ``(inputs, targets)`` to the mean cross-entropy.

    The value is :func:`calc_loss_batch`'s. A model with ``hidden_states`` and a bias-free ``out_head`` (such as
    :class:`~minigpt_lib.model.GPTModel`) gets its output head and loss computed together, a chunk of rows at a
    time (:func:`~minigpt_lib.layers.linear_cross_entropy`): equal to float32 rounding, without ever holding the
    ``(batch, tokens, vocab)`` logits. Targets equal to ``ignore_index`` do not count (padding, prompts).
    Data-parallel training wraps this module, so the loss is part of the wrapped forward pass.
    """

    def __init__(self, model: nn.Module, ignore_index: int = -100) -> None:
        super().__init__()
        self.model = model
        self.ignore_index = ignore_index
        head = getattr(model, "out_head", None)
        # Looked up on the class: a torch.compile'd model forwards attributes to the original module, whose
        # hidden_states would run uncompiled; it keeps its compiled forward and the plain loss instead.
        has_hidden = callable(getattr(type(model), "hidden_states", None))
        self.chunked = has_hidden and isinstance(head, nn.Linear) and head.bias is None

    def forward(self, input_batch: torch.Tensor, target_batch: torch.Tensor) -> torch.Tensor:
        if target_batch.shape != input_batch.shape:
            raise ValueError(
                f"target_batch: expected shape {tuple(input_batch.shape)} like input_batch, "
                f"got {tuple(target_batch.shape)}"
            )
        if self.chunked:
            hidden = self.model.hidden_states(input_batch)
            return linear_cross_entropy(
                hidden.flatten(0, 1), self.model.out_head.weight, target_batch.flatten(), ignore_index=self.ignore_index
            )
        logits = self.model(input_batch)
        return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten(), ignore_index=self.ignore_index)


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm stopped being a finite number: the step is not taken."""


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    input_batch: torch.Tensor,
    target_batch: torch.Tensor,
    *,
    grad_clip: float | None = None,
    amp: bool = False,
    loss_fn: nn.Module | None = None,
    micro_batches: int = 1,
) -> float:
    """One optimization step on one batch: zero the gradients, forward, loss, backward, clip, update.

    Returns the batch loss before the update. ``grad_clip`` caps the gradient norm; ``amp`` runs the forward pass
    in bfloat16 autocast. ``loss_fn`` (default ``NextTokenLoss(model)``) maps ``(inputs, targets)`` to the loss;
    data-parallel training passes the wrapped one. A non-finite loss or gradient norm raises
    :class:`TrainingDivergedError` before the weights change.

    ``micro_batches`` > 1 accumulates gradients: the batch is cut into that many parts along its first dimension,
    each part's forward and backward pass runs on its own (memory for one part only), and each part's loss is
    weighted by its share of the counted targets, so the summed gradient is the whole batch's. In a data-parallel
    run the processes exchange gradients only after the last part.
    """
    if grad_clip is not None:  # 0 would stop learning, a negative cap would flip the gradients
        check_number("grad_clip", grad_clip, 0.0, low_open=True)
    device = next(model.parameters()).device
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    loss_fn = NextTokenLoss(model) if loss_fn is None else loss_fn

    check_positive_int("micro_batches", micro_batches)
    parts = [(input_batch, target_batch, 1.0)]
    if micro_batches > 1:  # weigh each part by its share of the counted targets; parts without any are skipped
        ignore_index = getattr(getattr(loss_fn, "module", loss_fn), "ignore_index", -100)  # DDP: in .module
        inputs, targets = input_batch.chunk(micro_batches), target_batch.chunk(micro_batches)
        counts = [int((t != ignore_index).sum()) for t in targets]
        if sum(counts) > 0:  # (else one part, whose loss is NaN and reported below)
            parts = [(x, y, n / sum(counts)) for x, y, n in zip(inputs, targets, counts, strict=True) if n > 0]

    optimizer.zero_grad()
    loss_value = 0.0
    for i, (inputs, targets, weight) in enumerate(parts):
        sync = i == len(parts) - 1 or not hasattr(loss_fn, "no_sync")  # DDP: exchange gradients once, at the end
        with contextlib.nullcontext() if sync else loss_fn.no_sync():
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(inputs, targets) * weight
            loss_value += loss.item()
            loss.backward()
    loss_value = mean_over_processes(loss_value)  # in a data-parallel run: the loss of the global batch
    if not math.isfinite(loss_value):
        raise TrainingDivergedError(f"loss: became {loss_value}; lower the learning rate or clip gradients")
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:  # measured anyway: a NaN gradient need not show in the loss (PyTorch's fused CPU attention maps NaN to 0)
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if not torch.isfinite(norm):
        raise TrainingDivergedError(f"gradient norm: became {norm.item()}; lower the learning rate")
    optimizer.step()
    return loss_value


# --------------------------------------------------------------------------------------------------
# Learning-rate schedule


#: AdamW settings of a training run when none are given (GPT-3's smallest model trained at 6e-4).
DEFAULT_LR = 4e-4
DEFAULT_WEIGHT_DECAY = 0.1


def make_adamw(
    model: nn.Module, lr: float = DEFAULT_LR, weight_decay: float = DEFAULT_WEIGHT_DECAY
) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters, with PyTorch's fused kernel where their device has one.

    The fused kernel updates every tensor in one pass: the same rule, several times faster on a CPU, where
    the step of an unfused AdamW can take half of a small model's training step.
    """
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def lr_at_step(
    step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0, min_lr: float = 0.0
) -> float:
    """Learning rate at 0-based ``step``: linear warm-up to ``peak_lr``, cosine decay to ``min_lr``.

    Warm-up gives ``peak_lr * (step + 1) / warmup_steps``, so step 0 already learns; decay runs from
    ``peak_lr`` at ``warmup_steps`` to ``min_lr`` at ``total_steps`` (half-way: their mean).
    """
    check_positive_int("total_steps", total_steps)
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an integer >= 0, got {step!r}")
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps: expected an integer in [0, total_steps={total_steps}], "
            f"got {warmup_steps!r}"
        )
    if not peak_lr > 0:
        raise ValueError(f"peak_lr: expected a positive number, got {peak_lr!r}")
    if not 0 <= min_lr <= peak_lr:
        raise ValueError(f"min_lr: expected a number in [0, peak_lr={peak_lr}], got {min_lr!r}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------------
# Training loop


class TrainingCallback(Protocol):
    """What :func:`train_model` calls, on the main process, to let a tracker observe training
    (:class:`~minigpt_lib.tracking.TrainingTracker` is one)."""

    def on_step(self, step: int, loss: float, lr: float, tokens: int) -> None:
        """After optimizer step ``step`` (1-based): the batch loss, learning rate and tokens of the global batch."""

    def on_evaluation(self, step: int, train_loss: float, val_loss: float) -> None:
        """After the evaluation that follows step ``step``."""


@dataclass
class TrainingHistory:
    """What :func:`train_model` measured, ready for :func:`~minigpt_lib.plotting.plot_losses`.

    ``train_losses``, ``val_losses`` and ``tokens_seen`` have one entry per evaluation, taken after
    the optimizer steps listed in ``eval_steps``; ``lrs`` and ``step_losses`` (the batch's loss
    before its update) have one entry per step; ``steps`` counts the steps.
    """

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    steps: int = 0


@dataclass
class _Position:
    """Where the loop stands: what a checkpoint must store to continue exactly."""

    epoch: int = 0
    batches_done: int = 0  # in the current epoch
    tokens_seen: int = 0
    epoch_rng: torch.Tensor | None = None  # CPU generator state when the epoch's loader started


def _epoch_batches(train_loader: Iterable[Batch], position: _Position) -> Iterator[Batch]:
    """Start an epoch's batches, or re-create a half-done epoch's and skip those already trained on.

    Re-creating the loader's iterator from the saved epoch-start generator state gives the same
    shuffle; the generator state from before the skip is put back afterwards.
    """
    if position.batches_done == 0:
        position.epoch_rng = torch.get_rng_state()
        return iter(train_loader)
    now = torch.get_rng_state()
    torch.set_rng_state(position.epoch_rng)
    batches = iter(train_loader)
    for _ in range(position.batches_done):
        next(batches)
    torch.set_rng_state(now)
    return batches


@dataclass
class _Recorder:
    """The bookkeeping around the loop: history, loop position, progress bar and callback, step by step."""

    history: TrainingHistory
    position: _Position
    bar: tqdm
    callback: TrainingCallback | None

    def step(self, loss: float, lr: float, tokens: int) -> None:
        """Note one optimizer step on a global batch of ``tokens`` tokens, whose loss before the update was ``loss``."""
        self.history.steps += 1
        self.history.lrs.append(lr)
        self.history.step_losses.append(loss)
        self.position.batches_done += 1
        self.position.tokens_seen += tokens
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}")
        if self.callback is not None:
            self.callback.on_step(self.history.steps, loss, lr, tokens)

    def evaluation(self, train_loss: float, val_loss: float) -> None:
        """Note an evaluation after the current step and print it (above the progress bar, if any)."""
        history = self.history
        history.train_losses.append(train_loss)
        history.val_losses.append(val_loss)
        history.eval_steps.append(history.steps)
        history.tokens_seen.append(self.position.tokens_seen)
        if is_main_process():
            tqdm.write(
                f"epoch {self.position.epoch + 1}, step {history.steps}: "
                f"train loss {train_loss:.3f}, val loss {val_loss:.3f}"
            )
        if self.callback is not None:
            self.callback.on_evaluation(history.steps, train_loss, val_loss)


@contextlib.contextmanager
def _name_the_step_on_divergence(
    step: int, checkpoint_path: str | os.PathLike[str] | None, saved_step: int | None
) -> Iterator[None]:
    """Re-raise :class:`TrainingDivergedError` with the step it happened at and what the checkpoint still holds."""
    try:
        yield
    except TrainingDivergedError as exc:
        kept = "nothing was saved" if saved_step is None else f"{checkpoint_path} keeps step {saved_step}"
        raise TrainingDivergedError(f"training diverged at step {step}: {exc}; stopped, {kept}") from None


def _print_sample(
    model: nn.Module, tokenizer: Tokenizer, device: torch.device, start_context: str
) -> None:
    """Print 50 greedily generated tokens after ``start_context``, on one line (no random draws)."""
    idx = text_to_token_ids(start_context, tokenizer).to(device)
    text = token_ids_to_text(generate(model, idx, max_new_tokens=50), tokenizer)
    tqdm.write(text.replace("\n", " "))


def _save(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokenizer: Tokenizer | None,
    history: TrainingHistory,
    position: _Position,
) -> None:
    """Write a checkpoint holding the loop position and history besides model and optimizer.

    Only rank 0 writes; the other processes wait until the file is complete.
    """
    extra = {
        "history": asdict(history),
        "epoch": position.epoch,
        "batches_done": position.batches_done,
        "tokens_seen": position.tokens_seen,
    }
    if is_main_process():
        save_checkpoint(
            path,
            model,
            optimizer,
            tokenizer=tokenizer,
            step=history.steps,
            extra=extra,
            tensors={"epoch_rng": position.epoch_rng},
        )
    barrier()


def _check_loop_state(path: str | os.PathLike[str], extra: dict, epoch_rng: torch.Tensor | None) -> None:
    """Check, field by field, the loop position and history that :func:`_save` put in a checkpoint."""

    def expect(ok: bool, name: str, expected: str, value: object) -> None:
        if not ok:
            raise ValueError(f"resume_from: {path}: field {name!r}: expected {expected}, got {value!r:.80}")

    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key in ("epoch", "batches_done", "tokens_seen"):
        expect(count(extra.get(key)), f"extra.{key}", "a non-negative integer", extra.get(key))
    saved, keys = extra["history"], [f.name for f in fields(TrainingHistory)]
    expect(isinstance(saved, dict) and sorted(saved) == sorted(keys), "extra.history", f"an object of {keys}", saved)
    for key in keys:
        value = saved[key]
        if key == "steps":
            ok, expected = count(value) and value == len(saved["step_losses"]), "the number of step_losses"
        else:
            ok = isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
            expected = "a list of numbers"
        expect(ok, f"extra.history.{key}", expected, value)
    state_shape = torch.get_rng_state().shape
    ok = isinstance(epoch_rng, torch.Tensor) and epoch_rng.dtype == torch.uint8 and epoch_rng.shape == state_shape
    expect(ok, "tensors.epoch_rng", f"a generator state ({state_shape[0]} bytes)", epoch_rng)


def _resume(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    n_batches: int,
) -> tuple[TrainingHistory, _Position]:
    """Load a checkpoint written by :func:`train_model` and return its history and loop position.

    A checkpoint taken after an epoch's last batch resumes at the start of the next epoch.
    """
    ckpt = load_checkpoint(path, model, optimizer, restore_rng=True)
    if "history" not in ckpt.extra:
        raise ValueError(
            f"resume_from: {path} was not written by train_model (no loop position in it)"
        )
    _check_loop_state(path, ckpt.extra, ckpt.tensors.get("epoch_rng"))
    history = TrainingHistory(**ckpt.extra["history"])
    position = _Position(
        epoch=ckpt.extra["epoch"],
        batches_done=ckpt.extra["batches_done"],
        tokens_seen=ckpt.extra["tokens_seen"],
        epoch_rng=ckpt.tensors["epoch_rng"],
    )
    if position.batches_done >= n_batches:
        position.epoch += 1
        position.batches_done = 0
    return history, position


def _check_train_args(
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    num_epochs: int | None,
    max_steps: int | None,
    eval_freq: int,
    eval_iter: int,
    checkpoint_every: int | None,
    checkpoint_path: str | os.PathLike[str] | None,
) -> int:
    """Validate :func:`train_model`'s arguments before any work; return the number of steps."""
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        if len(loader) == 0:
            raise ValueError(
                f"{name}: yields no batches; its text gives fewer windows than batch_size "
                "(use more text, or a smaller batch_size or max_length)"
            )
    if num_epochs is None and max_steps is None:
        raise ValueError("num_epochs, max_steps: give at least one of them")
    check_positive_int("eval_freq", eval_freq)
    check_positive_int("eval_iter", eval_iter)
    total = math.inf
    if num_epochs is not None:
        total = check_positive_int("num_epochs", num_epochs) * len(train_loader)
    if max_steps is not None:
        total = min(total, check_positive_int("max_steps", max_steps))
    if checkpoint_every is not None:
        check_positive_int("checkpoint_every", checkpoint_every)
        if checkpoint_path is None:
            raise ValueError("checkpoint_path: needed when checkpoint_every is set")
    return total


def _check_step_args(
    lr: float, weight_decay: float, min_lr: float, grad_clip: float | None, warmup_steps: int
) -> None:
    """Refuse rates and caps outside their meaningful range, naming the argument (a NaN or an infinite
    rate would train to NaN weights; a zero or negative cap would stop learning or flip the gradients)."""
    check_number("lr", lr, 0.0, low_open=True)
    check_number("weight_decay", weight_decay, 0.0)
    check_number("min_lr", min_lr, 0.0)
    if grad_clip is not None:
        check_number("grad_clip", grad_clip, 0.0, low_open=True)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps: expected an integer >= 0, got {warmup_steps!r}")


def train_model(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer | None = None,
    device: torch.device | str | None = None,
    *,
    num_epochs: int | None = 1,
    max_steps: int | None = None,
    eval_freq: int = 5,
    eval_iter: int = 5,
    lr: float = DEFAULT_LR,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    use_schedule: bool = False,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    grad_clip: float | None = None,
    amp: bool = False,
    micro_batches: int = 1,
    compile: bool = False,
    callback: TrainingCallback | None = None,
    start_context: str | None = None,
    tokenizer: Tokenizer | None = None,
    progress: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | os.PathLike[str] | None = None,
) -> TrainingHistory:
    """Train ``model`` for ``num_epochs`` epochs or ``max_steps`` steps, whichever ends first.

    Evaluates ``eval_iter`` batches of each loader after step 1 and every ``eval_freq`` steps after
    it (steps 1, 1 + eval_freq, ...), prints a greedy sample after ``start_context`` at the end of
    each epoch (needs ``tokenizer``), and returns a :class:`TrainingHistory`.

    Without ``optimizer`` a fused AdamW with ``lr`` and ``weight_decay`` is made (:func:`make_adamw`).
    ``use_schedule`` sets each step's rate with :func:`lr_at_step` (peak: the optimizer's starting
    rate); ``grad_clip`` caps the gradient norm; ``amp`` runs forward passes in bfloat16 autocast. With
    ``checkpoint_path`` a checkpoint is written every ``checkpoint_every`` steps and at the end;
    ``resume_from`` continues a run from one exactly (same arguments and loaders needed). ``device``
    defaults to :func:`get_device`.

    ``micro_batches`` accumulates gradients over that many parts of each batch (:func:`train_step`);
    ``compile`` runs the training forward and backward passes through ``torch.compile``; ``callback`` (a
    :class:`TrainingCallback`, such as :class:`~minigpt_lib.tracking.TrainingTracker`) is told about every step
    and every evaluation.

    In a data-parallel run (see :mod:`minigpt_lib.distributed`) the loaders' batches are global:
    each process takes its share, and every process returns the same history.
    """
    total_steps = _check_train_args(
        train_loader,
        val_loader,
        num_epochs,
        max_steps,
        eval_freq,
        eval_iter,
        checkpoint_every,
        checkpoint_path,
    )
    _check_step_args(lr, weight_decay, min_lr, grad_clip, warmup_steps)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if optimizer is None:
        optimizer = make_adamw(model, lr, weight_decay)
    history, position = TrainingHistory(), _Position()
    if resume_from is not None:
        history, position = _resume(resume_from, model, optimizer, len(train_loader))
    peak_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
    if use_schedule:  # a warm-up longer than the run, or min_lr above the peak, fails now rather than at step 1
        for peak in peak_lrs:
            lr_at_step(history.steps, total_steps, peak, warmup_steps, min_lr)
    if checkpoint_path is not None and is_main_process():
        remove_stale_temporaries(Path(checkpoint_path).parent)  # left by a run killed while saving
    # The step the file at checkpoint_path holds, named if the run diverges.
    same_file = resume_from is not None and checkpoint_path is not None and Path(resume_from) == Path(checkpoint_path)
    saved_step = history.steps if same_file else None
    # Data-parallel runs step through the wrapper (gradients averaged over processes) on this
    # process's share of each batch; evaluation, samples and checkpoints use the plain model.
    loss_fn = NextTokenLoss(model)
    if compile:
        loss_fn.compile()  # torch.compile of the model and its loss, in place: the same weights, fused kernels
    loss_fn = wrap_model(loss_fn, device)
    callback = callback if is_main_process() else None
    train_loader, val_loader = shard_loader(train_loader), shard_loader(val_loader)
    progress = progress and is_main_process()  # one progress bar, not one per process

    step_options = {"grad_clip": grad_clip, "amp": amp, "loss_fn": loss_fn, "micro_batches": micro_batches}
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16, enabled=amp)

    model.train()
    with tqdm(total=total_steps, initial=history.steps, disable=not progress, unit="step") as bar:
        record = _Recorder(history, position, bar, callback)
        while history.steps < total_steps:
            # Chapter 8's loop: for each batch, one train_step (zero, forward, loss, backward, clip, update).
            for batch in _epoch_batches(train_loader, position):
                if use_schedule:
                    for group, peak in zip(optimizer.param_groups, peak_lrs, strict=True):
                        group["lr"] = lr_at_step(history.steps, total_steps, peak, warmup_steps, min_lr)
                with _name_the_step_on_divergence(history.steps + 1, checkpoint_path, saved_step):
                    loss = train_step(model, optimizer, *batch, **step_options)
                record.step(loss, optimizer.param_groups[0]["lr"], batch[0].numel() * get_world_size())

                if (history.steps - 1) % eval_freq == 0:
                    with autocast():
                        losses = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                    record.evaluation(*map(mean_over_processes, losses))
                if checkpoint_every and history.steps % checkpoint_every == 0:
                    _save(checkpoint_path, model, optimizer, tokenizer, history, position)
                    saved_step = history.steps
                if history.steps >= total_steps:
                    break

            if position.batches_done == len(train_loader):  # the epoch ran to its end
                if start_context is not None and tokenizer is not None and is_main_process():
                    _print_sample(model, tokenizer, device, start_context)
                position.epoch += 1
                position.batches_done = 0

    if checkpoint_path is not None:
        _save(checkpoint_path, model, optimizer, tokenizer, history, position)
    return history
