"""Instruction data for fine-tuning: Alpaca-format records, a prompt template, batches and the masked loss.

A record is an ``instruction``, an optional ``input`` and the ``output`` the model should learn to write
(the format of Stanford's Alpaca). The prompt template turns a record's instruction and input into the text the
model reads; the response is the output followed by an end-of-text token. Only the response tokens are trained
on: :func:`collate` sets the targets of prompt and padding tokens to ``IGNORE_INDEX``, which cross-entropy skips,
so the loss is the mean over the response tokens of the batch.

The sample dataset (1,100 records from Sebastian Raschka's *Build a Large Language Model (From Scratch)*
repository, Apache License 2.0) is downloaded once and checked against its sha256, like the pretraining texts
in :mod:`minigpt_lib.corpora`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .corpora import Corpus, data_dir, download_file, sha256_of

#: Targets with this value are skipped by ``F.cross_entropy`` (PyTorch's default ``ignore_index``).
IGNORE_INDEX = -100

FIELDS = ("instruction", "input", "output")

INSTRUCTION_DATA = Corpus(
    filename="instruction-data.json",
    url=(
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
        "ch07/01_main-chapter-code/instruction-data.json"
    ),
    sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    description="1,100 Alpaca-format records from rasbt/LLMs-from-scratch, Apache-2.0; 203,524 bytes",
)


@dataclass(frozen=True)
class InstructionExample:
    """One training record: what to do, what to do it on (may be empty), and the wanted response."""

    instruction: str
    input: str
    output: str


# --------------------------------------------------------------------------------------------------
# Loading and validation


def instruction_data_path() -> Path:
    """Local path of ``instruction-data.json``, downloaded into :func:`~minigpt_lib.corpora.data_dir` on first use.

    A file already there must have the registered sha256; a different one is refused, not overwritten.
    """
    path = data_dir() / INSTRUCTION_DATA.filename
    if not path.exists():
        return download_file(INSTRUCTION_DATA.url, INSTRUCTION_DATA.sha256, path)
    found = sha256_of(path)
    if found != INSTRUCTION_DATA.sha256:
        raise ValueError(
            f"{path} has sha256 {found}, expected {INSTRUCTION_DATA.sha256}: the file is damaged or a "
            f"different dataset; move or delete it to download a fresh copy from {INSTRUCTION_DATA.url}"
        )
    return path


def validate_records(records: object, source: str = "records") -> list[InstructionExample]:
    """Turn parsed JSON into examples, or raise ``ValueError`` naming ``source``, the record and the field.

    Expected: a non-empty list of objects, each with the string fields ``instruction``, ``input`` and
    ``output`` (records are numbered from 0, as in the JSON list). Other fields are ignored.
    """
    if not isinstance(records, list):
        raise ValueError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{source}: the list of records is empty")
    examples = []
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{source}: record {number}: expected an object with fields "
                             f"{', '.join(FIELDS)}, got {type(record).__name__}")
        for name in FIELDS:
            if name not in record:
                raise ValueError(f"{source}: record {number}: field {name!r} is missing")
            if not isinstance(record[name], str):
                raise ValueError(f"{source}: record {number}: field {name!r} must be a string, "
                                 f"got {type(record[name]).__name__} {record[name]!r:.40}")
        examples.append(InstructionExample(record["instruction"], record["input"], record["output"]))
    return examples


def load_instruction_data(path: str | os.PathLike[str] | None = None) -> list[InstructionExample]:
    """Read and validate an Alpaca-format JSON file (default: the sample dataset, downloaded if needed).

    Every record is checked before anything is returned, so a bad file stops a run before training starts,
    with a one-line message naming the file, the record and the field.
    """
    path = instruction_data_path() if path is None else Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected an Alpaca-format JSON file)")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path}: the file is empty (expected a JSON list of records)")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    return validate_records(records, str(path))


def split_examples(
    examples: Sequence[InstructionExample], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 123
) -> tuple[list[InstructionExample], list[InstructionExample], list[InstructionExample]]:
    """Shuffle with ``seed`` and cut into training, validation and test lists (same seed, same split)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction, test_fraction: expected two fractions in [0, 1) with a sum below 1, "
                         f"got {val_fraction!r} and {test_fraction!r}")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_test = round(len(shuffled) * test_fraction)
    n_val = round(len(shuffled) * val_fraction)
    n_train = len(shuffled) - n_val - n_test
    return shuffled[:n_train], shuffled[n_train:n_train + n_val], shuffled[n_train + n_val:]


# --------------------------------------------------------------------------------------------------
# Prompt template and tokens


def alpaca_prompt(example: InstructionExample) -> str:
    """The Alpaca template: a fixed preamble, the instruction, the input (when there is one), a response header."""
    text = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{example.instruction}"
    )
    if example.input:
        text += f"\n\n### Input:\n{example.input}"
    return text + "\n\n### Response:\n"


def encode_example(
    example: InstructionExample,
    encode: Callable[[str], list[int]],
    end_id: int,
    prompt: Callable[[InstructionExample], str] = alpaca_prompt,
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the response (the output, then ``end_id`` so the model learns to stop)."""
    return encode(prompt(example)), encode(example.output) + [end_id]


class InstructionBatch(NamedTuple):
    """A padded batch: ``inputs`` and ``targets`` are ``(batch, tokens)``; ``padding_mask`` is True on real tokens."""

    inputs: torch.Tensor
    targets: torch.Tensor
    padding_mask: torch.Tensor


def collate(
    pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    max_length: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> InstructionBatch:
    """Pad ``(prompt_ids, response_ids)`` pairs to one length and build next-token targets.

    Each sequence is prompt + response, padded with ``pad_id`` to the longest; the inputs are the padded sequences
    without their last position, the targets the same shifted left by one. Targets that predict a prompt token, and
    every position with no next token, get ``ignore_index``, so only response tokens (including the end token) are
    learned; ``padding_mask`` is True where the input is a real token. ``max_length`` cuts
    sequences longer than that many input tokens (from the end of the response).
    """
    if not pairs:
        raise ValueError("pairs: expected at least one (prompt_ids, response_ids) pair, got none")
    sequences = [list(prompt) + list(response) for prompt, response in pairs]
    length = max(len(seq) for seq in sequences) - 1
    if max_length is not None:
        length = min(length, max_length)
    inputs = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), length), ignore_index, dtype=torch.long)
    padding_mask = torch.zeros((len(pairs), length), dtype=torch.bool)
    for row, ((prompt, _), seq) in enumerate(zip(pairs, sequences, strict=True)):
        n_in, n_out = min(len(seq), length), min(len(seq) - 1, length)
        inputs[row, :n_in] = torch.tensor(seq[:n_in])
        padding_mask[row, :n_in] = True
        targets[row, :n_out] = torch.tensor(seq[1:n_out + 1])
        targets[row, :max(len(prompt) - 1, 0)] = ignore_index  # positions whose next token is still prompt
    return InstructionBatch(inputs, targets, padding_mask)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not ``ignore_index`` (response tokens only).

    A batch with no such position has no loss to average (it would be NaN); that raises instead.
    """
    if not bool((targets != ignore_index).any()):
        raise ValueError("targets: every position is ignore_index, so the batch has no response token to learn")
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)
