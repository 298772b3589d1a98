"""Checks for chapter 11: the targets of one instruction example, and the LoRA forward pass."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..instruct import IGNORE_INDEX, collate
from ._common import CheckError, assert_close, call_learner, seeded_randn, success


def check_example_targets(targets_fn: Callable[[list[int], list[int], int], object]) -> None:
    """Check ``targets_fn(prompt_ids, response_ids, length) -> list or tensor of length ``length````.

    The targets of one padded example: the sequence prompt + response shifted left by one, with the positions that
    predict a prompt token and the padding after the end set to -100.
    """
    cases = [([5, 6, 7], [8, 9], 6), ([3], [4, 5, 6], 5), ([1, 2], [3], 2)]
    for prompt, response, length in cases:
        what = f"targets_fn({prompt}, {response}, length={length})"
        got = call_learner(targets_fn, (list(prompt), list(response), length), what)
        got = torch.as_tensor(got)
        expected = collate([(prompt, response)], pad_id=0, max_length=length).targets[0]
        expected = torch.cat([expected, torch.full((length - len(expected),), IGNORE_INDEX)])
        if got.shape != expected.shape:
            raise CheckError(f"{what}: expected {length} targets, got shape {tuple(got.shape)}")
        if not torch.equal(got.long(), expected):
            seq = prompt + response
            hint = ""
            if got.tolist()[: len(seq)] == seq[:length]:
                hint = " (hint: the targets are the sequence shifted left by one: target i is token i + 1)"
            elif len(prompt) > 1 and got[len(prompt) - 2].item() == prompt[-1]:
                hint = " (hint: a target that is still a prompt token must be -100; only response tokens count)"
            elif got[len(prompt) - 1].item() == IGNORE_INDEX:
                hint = " (hint: the last prompt position predicts the first response token, so it must be kept)"
            raise CheckError(f"{what}: expected {expected.tolist()}, got {got.tolist()}{hint}")
    success("instruction targets")


def check_lora_forward(lora_fn: Callable[..., torch.Tensor]) -> None:
    """Check ``lora_fn(x, weight, lora_A, lora_B, alpha) -> y``: ``x W^T + (alpha / r) x A^T B^T``.

    ``x`` is ``(batch=2, tokens=3, in=6)``, ``weight`` ``(out=5, in=6)``, ``lora_A`` ``(r=2, 6)``, ``lora_B``
    ``(5, 2)``, as in :class:`~minigpt_lib.lora.LoRALinear` (no bias).
    """
    x, weight = seeded_randn(2, 3, 6, seed=31), seeded_randn(5, 6, seed=32)
    lora_a, lora_b, alpha = seeded_randn(2, 6, seed=33), seeded_randn(5, 2, seed=34), 4.0
    got = call_learner(lora_fn, (x.clone(), weight.clone(), lora_a.clone(), lora_b.clone(), alpha),
                       "lora_fn(x, weight, lora_A, lora_B, alpha=4.0)")
    update = x @ lora_a.T @ lora_b.T
    base = x @ weight.T
    assert_close(
        got,
        base + (alpha / 2) * update,
        "LoRA output",
        variants={
            "the update is not scaled: multiply B A x by alpha / r": base + update,
            "scaled by alpha instead of alpha / r": base + alpha * update,
            "scaled by r / alpha instead of alpha / r": base + (2 / alpha) * update,
            "the frozen base output W x is missing": (alpha / 2) * update,
        },
    )
    success("LoRA forward pass")


def check_last_token_states(select_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``select_fn(hidden, lengths) -> (batch, emb_dim)``: each row's state at its last real token.

    ``hidden`` is ``(batch=3, tokens=5, emb_dim=4)`` from a right-padded batch; ``lengths`` ``(3,)`` holds each
    row's number of real tokens (5, 2 and 3).
    """
    hidden, lengths = seeded_randn(3, 5, 4, seed=41), torch.tensor([5, 2, 3])
    got = call_learner(select_fn, (hidden.clone(), lengths.clone()), "select_fn(hidden, lengths=[5, 2, 3])")
    rows = torch.arange(3)
    assert_close(
        got,
        hidden[rows, lengths - 1],
        "last-token states",
        variants={
            "this is position -1 of every row, which is padding in the shorter rows: use lengths - 1": hidden[:, -1],
            "off by one: the last real token of a row of length n sits at index n - 1": hidden[rows, lengths % 5],
            "this is the first token; under causal attention only the last one has seen the whole text": hidden[:, 0],
        },
    )
    success("last-token states")
