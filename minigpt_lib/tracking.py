"""Experiment tracking: losses, learning rate, gradient norm, tokens/s and MFU written as TensorBoard scalars.

:class:`TrainingTracker` is a callback for :func:`~minigpt_lib.train.train_model`: the loop calls
``on_step`` after every optimizer step and ``on_evaluation`` after every evaluation, and the tracker measures
and writes; the loop itself does not change. ``tensorboard --logdir LOGDIR`` shows the curves, and
:func:`read_scalars` reads them back (the book compares two runs that way).

Model FLOPs utilization (MFU) says how much of the hardware's arithmetic the training uses::

    MFU = (FLOPs per token * tokens per second) / peak FLOP/s,
    FLOPs per token = 6 N + 12 L T d

with N the weights of the linear layers (embedding tables are looked up, not multiplied), L layers, T the
context length and d the embedding width. ``6 N``: a forward pass costs two FLOPs (a multiply and an add)
per parameter and token, the backward pass twice that (Kaplan et al. 2020); ``12 L T d``: the attention
scores and their weighted sum, which grow with the context (counted in full, as PaLM's appendix does, although a
causal mask makes half of them zeros). The peak is the hardware's: given (``--peak-flops``, e.g. from a GPU's
data sheet) or measured here with a large matrix product (:func:`measure_peak_flops`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .utils import check_number, check_positive_int


def matmul_parameters(model: nn.Module) -> int:
    """Weights that take part in matrix products: those of the ``nn.Linear`` layers (12 d² per block plus the head).

    Embedding lookups, biases and norms cost next to no FLOPs and are left out, as in PaLM's MFU; a weight
    shared by the token embedding and the output head counts once.
    """
    weights = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)}
    return sum(weights.values())


def flops_per_token(model: nn.Module, context_length: int) -> float:
    """Training FLOPs per token, forward and backward: ``6 N + 12 L T d`` (module docstring)."""
    cfg = model.cfg
    return 6 * matmul_parameters(model) + 12 * cfg["n_layers"] * context_length * cfg["emb_dim"]


def measure_peak_flops(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048
) -> float:
    """FLOP/s of a ``size x size`` matrix product on ``device``: a practical peak to measure MFU against.

    The best of a few timed products after a warm-up; an upper bound a real training step approaches, not a
    data-sheet figure (on a GPU, pass the data sheet's peak instead).
    """
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(0)  # leaves torch's global generator untouched
    a, b = (torch.randn(size, size, device=device, dtype=dtype, generator=generator) for _ in range(2))
    best = math.inf
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


class TrainingTracker:
    """Write a run's scalars to TensorBoard (``logdir``) and print tokens/s and MFU every ``log_every`` steps.

    Scalars, by optimizer step: ``loss/step`` (each batch), ``loss/train`` and ``loss/val`` (evaluations),
    ``lr``, ``grad_norm`` (of the gradient the optimizer applied, after any clipping), ``tokens_per_s`` and
    ``mfu`` (averages over the last ``log_every`` steps, evaluation time left out). ``peak_flops`` (FLOP/s)
    turns tokens/s into MFU; without it MFU is not logged. ``logdir=None`` only prints.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str] | None,
        model: nn.Module,
        context_length: int,
        *,
        peak_flops: float | None = None,
        log_every: int = 10,
        verbose: bool = True,
    ) -> None:
        self.flops_per_token = flops_per_token(model, check_positive_int("context_length", context_length))
        self.peak_flops = None if peak_flops is None else check_number("peak_flops", peak_flops, 0, low_open=True)
        self.log_every = check_positive_int("log_every", log_every)
        self.verbose = verbose
        self.model = model
        self.writer = None
        if logdir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package; only here
            except ImportError as exc:
                raise RuntimeError(
                    f"logdir: writing TensorBoard logs needs the tensorboard package ({exc}); "
                    "pip install tensorboard (pinned in requirements.txt)"
                ) from None
            self.writer = SummaryWriter(log_dir=str(Path(logdir)))
        self._tokens, self._seconds = 0, 0.0
        self._clock = time.perf_counter()

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def on_step(self, step: int, loss: float, lr: float, tokens: int) -> None:
        """Record optimizer step ``step`` (1-based): its batch ``loss``, learning rate and ``tokens`` trained on."""
        now = time.perf_counter()
        self._tokens += tokens
        self._seconds += now - self._clock
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        self._scalar("loss/step", loss, step)
        self._scalar("lr", lr, step)
        self._scalar("grad_norm", grad_norm, step)
        if step % self.log_every == 0:
            tokens_per_s = self._tokens / self._seconds
            self._scalar("tokens_per_s", tokens_per_s, step)
            line = f"step {step}: {tokens_per_s:,.0f} tokens/s"
            if self.peak_flops is not None:
                mfu = tokens_per_s * self.flops_per_token / self.peak_flops
                self._scalar("mfu", mfu, step)
                line += f", MFU {mfu:.2%}"
            if self.verbose:
                tqdm.write(line)
            self._tokens, self._seconds = 0, 0.0
        self._clock = time.perf_counter()  # time spent here is not training time

    def on_evaluation(self, step: int, train_loss: float, val_loss: float) -> None:
        """Record the evaluation after step ``step``; its time does not count as training time."""
        self._scalar("loss/train", train_loss, step)
        self._scalar("loss/val", val_loss, step)
        self._clock = time.perf_counter()

    def close(self) -> None:
        """Flush the event file to disk and close it."""
        if self.writer is not None:
            self.writer.close()


def read_scalars(logdir: str | os.PathLike[str]) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar in the TensorBoard event files under ``logdir``: ``{tag: (steps, values)}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = Path(logdir)
    if not any(logdir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"{logdir}: holds no TensorBoard event files (events.out.tfevents.*)")
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {
        tag: ([e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)])
        for tag in events.Tags()["scalars"]
    }
