"""Instruction fine-tuning: batches of encoded examples, one epoch of training steps, and the two measurements.

Training reuses :func:`minigpt_lib.train.train_step` unchanged: its loss skips targets equal to ``-100``, which
is how :func:`~minigpt_lib.instruct.collate` marks prompt and padding positions. The two measurements are the
masked validation loss (how likely the model finds the wanted responses) and exact-match accuracy (how often
greedy decoding writes exactly the wanted response), which is what a user of the model sees.

The custom task, :func:`date_examples`, is generated here: rewrite a date such as "March 5, 2021" or
"5 March 2021" as "2021-03-05". The answer is short and its format fixed, so a few dozen LoRA steps can teach it,
and the examples are drawn from a seeded generator, so the training and held-out sets are the same on every run.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm.auto import tqdm

from .chat import format_chat
from .generate import generate
from .instruct import (
    IGNORE_INDEX,
    InstructionBatch,
    InstructionExample,
    collate,
    encode_example,
    masked_cross_entropy,
    split_examples,
)
from .lora import apply_lora, count_trainable, load_adapter, save_adapter
from .train import make_adamw, train_step
from .utils import atomic_write, check_positive_int, eval_mode, remove_stale_temporaries

Pair = tuple[list[int], list[int]]

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
DATE_INSTRUCTION = "Rewrite the date in the format YYYY-MM-DD."


def date_examples(n: int, seed: int) -> list[InstructionExample]:
    """``n`` distinct date-rewriting examples drawn with ``seed`` (years 1900-2099, two input styles)."""
    check_positive_int("n", n)
    rng = random.Random(seed)
    examples: dict[str, InstructionExample] = {}
    while len(examples) < n:
        year, month, day = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
        text = f"{MONTHS[month - 1]} {day}, {year}" if rng.random() < 0.5 else f"{day} {MONTHS[month - 1]} {year}"
        examples.setdefault(text, InstructionExample(DATE_INSTRUCTION, text, f"{year}-{month:02d}-{day:02d}"))
    return list(examples.values())


def chat_prompt(example: InstructionExample) -> str:
    """The example as a user turn in SmolLM2's chat format (:func:`~minigpt_lib.chat.format_chat`), ending where
    the assistant's answer begins.

    The instruction and the input form one user message, so the fine-tuned model answers the same way in
    :func:`~minigpt_lib.chat.chat`; the response it learns ends with ``<|im_end|>``.
    """
    message = example.instruction + (f"\n\n{example.input}" if example.input else "")
    return format_chat([{"role": "user", "content": message}])


def batches(
    pairs: Sequence[Pair], batch_size: int, pad_id: int, seed: int | None = None, max_length: int | None = None
) -> Iterator[InstructionBatch]:
    """Padded batches of ``pairs`` in order, or shuffled with ``seed``; the last batch may be smaller."""
    check_positive_int("batch_size", batch_size)
    order = list(range(len(pairs)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        yield collate([pairs[i] for i in order[start:start + batch_size]], pad_id, max_length)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    pairs: Sequence[Pair],
    batch_size: int,
    pad_id: int,
    seed: int,
    on_step: Callable[[float], None] | None = None,
) -> list[float]:
    """One pass over ``pairs`` in a seeded order, one :func:`~minigpt_lib.train.train_step` per batch; the losses."""
    losses = []
    model.train()
    for batch in batches(pairs, batch_size, pad_id, seed):
        losses.append(train_step(model, optimizer, batch.inputs, batch.targets))
        if on_step is not None:
            on_step(losses[-1])
    return losses


@torch.no_grad()
def response_loss(model: nn.Module, pairs: Sequence[Pair], batch_size: int, pad_id: int) -> float:
    """Masked cross-entropy over all response tokens of ``pairs`` (each token counts once), in eval mode."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with eval_mode(model):
        for batch in batches(pairs, batch_size, pad_id):
            n = int((batch.targets != IGNORE_INDEX).sum())
            logits = model(batch.inputs.to(device))
            total += masked_cross_entropy(logits, batch.targets.to(device)).item() * n
            count += n
    return total / count


@torch.no_grad()
def answers(
    model: nn.Module, prompts: Sequence[list[int]], end_id: int, max_new_tokens: int = 16
) -> list[list[int] | None]:
    """Greedy continuation of each prompt up to (not including) ``end_id``; ``None`` where the model did not
    write ``end_id`` within ``max_new_tokens`` (it would have gone on talking).

    Prompts of equal length are decoded together as one batch (no padding needed): one pass over the weights
    then serves the whole group, which is what makes evaluation affordable on a CPU.
    """
    device = next(model.parameters()).device
    groups: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(len(prompt), []).append(i)
    results: list[list[int] | None] = [None for _ in prompts]
    for length, members in groups.items():
        idx = torch.tensor([prompts[i] for i in members], device=device)
        out = generate(model, idx, max_new_tokens, eos_id=end_id)[:, length:].tolist()
        for i, new in zip(members, out, strict=True):
            results[i] = new[:new.index(end_id)] if end_id in new else None
    return results


def exact_match(
    model: nn.Module,
    examples: Sequence[InstructionExample],
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    end_id: int,
    prompt: Callable[[InstructionExample], str] = chat_prompt,
    max_new_tokens: int = 16,
) -> tuple[float, list[str]]:
    """Fraction of ``examples`` whose greedy answer is exactly the wanted output (outer whitespace ignored), then
    the end token; and the answers, where one that did not end within ``max_new_tokens`` is shown as ``None``.
    """
    new_tokens = answers(model, [encode(prompt(e)) for e in examples], end_id, max_new_tokens)
    texts = [None if tokens is None else decode(tokens).strip() for tokens in new_tokens]
    correct = sum(t == e.output.strip() for t, e in zip(texts, examples, strict=True))
    return correct / len(examples), texts


# --------------------------------------------------------------------------------------------------
# A whole run, as the command line does it: epochs, progress, an adapter written atomically, resumption

#: The model name adapters record, so that one is never applied to another model.
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
ADAPTER_NAME = "adapter.safetensors"
FULL_MODEL_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "finetune_state.json"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state as named tensors (``"3.exp_avg"``), for a safetensors file."""
    tensors = {}
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors


def _load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Put tensors written by :func:`_optimizer_tensors` back, checking that every parameter gets its state."""
    state_dict = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    trained = [i for i, p in enumerate(params) if p.requires_grad]  # frozen ones have no state
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    if sorted(state) != trained:
        raise ValueError(f"{path}: holds optimizer state for {len(state)} parameters, the run trains {len(trained)}")
    optimizer.load_state_dict({"state": state, "param_groups": state_dict["param_groups"]})


def run_finetune(
    model: nn.Module,
    tokenizer,
    examples: Sequence[InstructionExample],
    out: str | os.PathLike[str],
    *,
    settings: dict,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> nn.Module:
    """Fine-tune ``model`` on ``examples`` for ``settings["epochs"]`` epochs and write the result to ``out``.

    ``settings``: ``epochs``, ``lr``, ``batch_size``, ``full`` (train every weight instead of LoRA), ``lora_rank``,
    ``lora_alpha``, ``val_fraction``, ``seed``, ``base_model``. After every epoch the adapter (or, with ``full``,
    the whole model), the optimizer state and ``finetune_state.json`` are written atomically, the state file last:
    a run stopped at any moment leaves the previous epoch's complete files, and ``resume`` continues from them.
    """
    out = Path(out)
    remove_stale_temporaries(out)
    state_file = out / STATE_NAME
    train, val, _ = split_examples(examples, settings["val_fraction"], 0.0, settings["seed"])
    if not train:
        raise ValueError(f"examples: {len(examples)} record(s) leave none for training after the validation split")
    encode = lambda e: encode_example(e, tokenizer.encode, tokenizer.eos_id, chat_prompt)  # noqa: E731
    train_pairs, val_pairs = [encode(e) for e in train], [encode(e) for e in val]
    done = 0
    if resume:
        if not state_file.is_file():
            raise FileNotFoundError(f"--resume: {state_file} does not exist; start without --resume")
        saved = json.loads(state_file.read_text())
        changed = {k: (saved["settings"].get(k), v) for k, v in settings.items()
                   if k != "epochs" and saved["settings"].get(k) != v}
        if changed or saved.get("records") != len(examples):
            raise ValueError(f"--resume: settings differ from the saved run in {out}: {changed or 'the records'}")
        done = saved["epochs_done"]
    if not settings["full"]:
        if resume:
            load_adapter(model, out / ADAPTER_NAME, base_model=settings["base_model"])
        else:
            apply_lora(model, ["W_query", "W_value"], settings["lora_rank"], settings["lora_alpha"])
    elif resume:
        load_model(model, out / FULL_MODEL_NAME)
    optimizer = make_adamw(model, lr=settings["lr"], weight_decay=0.0)
    if resume:
        _load_optimizer_tensors(optimizer, load_file(out / OPTIMIZER_NAME), out / OPTIMIZER_NAME)
    trainable, total = count_trainable(model)
    log(f"{len(train)} training and {len(val)} validation records; trainable parameters {trainable:,} of {total:,}")
    if val_pairs and done == 0:
        log(f"before fine-tuning: validation loss {response_loss(model, val_pairs, settings['batch_size'], 0):.3f}")
    steps_per_epoch = math.ceil(len(train_pairs) / settings["batch_size"])
    bar = tqdm(total=steps_per_epoch * (settings["epochs"] - done), disable=not progress, unit="step")
    def on_step(loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    for epoch in range(done + 1, settings["epochs"] + 1):
        seed = settings["seed"] + epoch
        losses = train_epoch(model, optimizer, train_pairs, settings["batch_size"], 0, seed, on_step)
        line = f"epoch {epoch}: training loss {sum(losses) / len(losses):.3f}"
        if val_pairs:
            line += f", validation loss {response_loss(model, val_pairs, settings['batch_size'], 0):.3f}"
        bar.write(line) if progress else log(line)
        _save_epoch(model, optimizer, out, settings, epoch, len(examples))
    bar.close()
    return model


def _save_epoch(model: nn.Module, optimizer, out: Path, settings: dict, epoch: int, records: int) -> None:
    """Write the weights, then the optimizer state, then the state file (each atomically)."""
    if settings["full"]:
        with atomic_write(out / FULL_MODEL_NAME) as tmp:
            save_model(model, str(tmp), metadata={"format": "minigpt-finetuned", "base_model": settings["base_model"]})
    else:
        save_adapter(model, out / ADAPTER_NAME, base_model=settings["base_model"])
    with atomic_write(out / OPTIMIZER_NAME) as tmp:
        save_file(_optimizer_tensors(optimizer), str(tmp))
    with atomic_write(out / STATE_NAME) as tmp:
        tmp.write_text(json.dumps({"epochs_done": epoch, "records": records, "settings": settings}, indent=2))


def load_finetuned(model: nn.Module, folder: str | os.PathLike[str], base_model: str) -> nn.Module:
    """Apply what ``finetune --out folder`` wrote to ``model``: its LoRA adapter, or its fully fine-tuned weights."""
    folder = Path(folder)
    if (folder / ADAPTER_NAME).is_file():
        load_adapter(model, folder / ADAPTER_NAME, base_model=base_model)
    elif (folder / FULL_MODEL_NAME).is_file():
        load_model(model, folder / FULL_MODEL_NAME)
    else:
        raise FileNotFoundError(f"--adapter: {folder} holds neither {ADAPTER_NAME} nor {FULL_MODEL_NAME} "
                                "(written by `python -m minigpt_lib finetune`)")
    return model.eval()
