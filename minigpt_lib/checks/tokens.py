"""Checks for chapter 1: a GPT-2 encoder and sliding windows of token ids."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from ..tokenizer import get_tokenizer
from ._common import CheckError, assert_close, call_learner, success

_TOKEN_TEXTS = (
    "Every effort moves you",
    "Hello, do you like tea? In the sunlit terraces of someunknownPlace.",
    "  Two spaces, 1234 digits, a tab\tand a newline\nend.",
)


def _as_id_list(ids: Any, what: str) -> list[int]:
    """Accept a list/tuple of ints or an integer tensor of shape (n,) or (1, n)."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1 or ids.dtype.is_floating_point:
            raise CheckError(
                f"{what}: expected integer ids of shape (n,) or (1, n), got {ids.dtype} {tuple(ids.shape)}"
            )
        return ids.tolist()
    if isinstance(ids, (list, tuple)) and all(isinstance(i, numbers.Integral) for i in ids):
        return [int(i) for i in ids]
    raise CheckError(f"{what}: expected a list of int token ids or a tensor, got {type(ids).__name__}")


def check_token_ids(encode_fn: Callable[[str], Any]) -> None:
    """Check a GPT-2 BPE encoder ``encode_fn(text) -> ids`` against tiktoken's ``gpt2`` encoding.

    Compares the ids of a few sentences (spaces, punctuation, digits, an unknown word) token by token.
    """
    tokenizer = get_tokenizer("gpt2")
    for text in _TOKEN_TEXTS:
        what = f"encode_fn({text!r})"
        got = _as_id_list(call_learner(encode_fn, (text,), what), what)
        expected = tokenizer.encode(text)
        if got == expected:
            continue
        hint = ""
        if len(got) == len(text):
            hint = "\n  hint: one id per character: that is a character-level tokenizer, not GPT-2's BPE"
        elif len(got) == len(text.split()):
            hint = "\n  hint: one id per whitespace-separated word: BPE splits words into subword pieces"
        pos = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected))
        )
        exp_piece = repr(tokenizer.decode([expected[pos]])) if pos < len(expected) else "end of text"
        got_id = got[pos] if pos < len(got) else None
        if got_id is None:
            got_piece = "end of ids"
        elif 0 <= got_id < tokenizer.n_vocab:
            got_piece = f"{got_id} = {tokenizer.decode([got_id])!r}"
        else:
            got_piece = f"{got_id} (outside the GPT-2 vocabulary 0..{tokenizer.n_vocab - 1})"
        raise CheckError(
            f"{what}: expected {len(expected)} ids {expected}, got {len(got)} ids {got}; first difference at "
            f"position {pos}: expected {expected[pos] if pos < len(expected) else None} = {exp_piece}, "
            f"got {got_piece}" + hint
        )
    success("GPT-2 tokenizer")


def _reference_windows(ids: list[int], max_length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows as :class:`~minigpt_lib.data.GPTDataset` makes them: start i·stride, targets shifted by one."""
    starts = range(0, len(ids) - max_length, stride)
    inputs = torch.tensor([ids[s : s + max_length] for s in starts])
    targets = torch.tensor([ids[s + 1 : s + max_length + 1] for s in starts])
    return inputs, targets


def _as_long_matrix(x: Any, what: str) -> torch.Tensor:
    """A window batch as a (windows, max_length) long tensor; lists of rows or of tensors are stacked."""
    if isinstance(x, (list, tuple)):
        try:
            x = torch.stack([torch.as_tensor(row) for row in x]) if x else torch.empty(0, 0, dtype=torch.long)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CheckError(f"{what}: could not stack the windows into one tensor ({exc})") from exc
    if not isinstance(x, torch.Tensor):
        raise CheckError(f"{what}: expected a tensor of shape (windows, max_length), got {type(x).__name__}")
    if x.dtype.is_floating_point:
        raise CheckError(f"{what}: expected integer token ids, got dtype {x.dtype}")
    return x.long()


def check_sliding_windows(make_windows: Callable[[list[int], int, int], tuple[Any, Any]]) -> None:
    """Check ``make_windows(ids, max_length, stride) -> (inputs, targets)`` on a list of token ids.

    Window ``i`` must start at ``i * stride``; targets are the inputs shifted one token to the right.
    """
    ids = list(range(100, 121))  # 21 distinct ids: the value shows the position (id - 100)
    for max_length, stride in ((4, 4), (4, 1), (5, 3), (8, 2)):
        what = f"make_windows(ids of length {len(ids)}, max_length={max_length}, stride={stride})"
        result = call_learner(make_windows, (list(ids), max_length, stride), what)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise CheckError(f"{what}: expected a pair (inputs, targets), got {type(result).__name__}")
        inputs = _as_long_matrix(result[0], f"{what} inputs")
        targets = _as_long_matrix(result[1], f"{what} targets")
        exp_in, exp_tg = _reference_windows(ids, max_length, stride)
        n_exp = exp_in.shape[0]
        if inputs.shape[0] != n_exp:
            hint = ""
            if inputs.shape[0] == n_exp - 1:
                hint = (
                    "one window short: the last start is len(ids) - max_length - 1 "
                    "(range(0, len(ids) - max_length, stride))"
                )
            elif inputs.shape[0] == n_exp + 1:
                hint = "one window too many: its target would run past the end of ids"
            raise CheckError(
                f"{what}: expected {n_exp} windows (starts {list(range(0, len(ids) - max_length, stride))}), "
                f"got {inputs.shape[0]}" + (f"\n  hint: {hint}" if hint else "")
            )
        assert_close(
            inputs,
            exp_in,
            f"{what} inputs",
            atol=0,
            rtol=0,
            variants={
                "windows start one token apart: advance the start by stride, not by 1": torch.stack(
                    [torch.tensor(ids[i : i + max_length]) for i in range(n_exp)]
                ),
            },
        )
        assert_close(
            targets,
            exp_tg,
            f"{what} targets",
            atol=0,
            rtol=0,
            variants={
                "targets equal the inputs: shift them one token to the right (ids[i+1 : i+max_length+1])": exp_in,
                "targets are shifted by two tokens instead of one": exp_tg + 1,
            },
        )
    success("sliding-window function")
