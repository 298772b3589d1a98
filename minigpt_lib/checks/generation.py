"""Checks for chapter 9: temperature, top-k and top-p filtering of next-token logits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..generate import filter_logits
from ._common import CheckError, assert_close, call_learner, hint_for, seeded_randn, success


def check_temperature(scale_fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``scale_fn(logits, temperature) -> probs``: softmax of the logits divided by the temperature.

    ``logits`` is ``(batch=2, vocab=7)``; temperatures 0.5, 1 and 2.
    """
    logits = 2.0 * seeded_randn(2, 7, seed=16)
    for temperature in (0.5, 1.0, 2.0):
        what = f"scale_fn(logits, temperature={temperature})"
        got = call_learner(scale_fn, (logits.clone(), temperature), what)
        expected = torch.softmax(logits / temperature, dim=-1)
        variants = {
            "temperature applied as multiplication: divide the logits by the temperature": torch.softmax(
                logits * temperature, dim=-1
            ),
            "these are the scaled logits, not probabilities: apply softmax": logits / temperature,
            "softmax over the wrong dimension: normalize each row (dim=-1)": torch.softmax(logits / temperature, 0),
        }
        if temperature != 1.0:
            variants["the temperature has no effect: divide the logits by it before softmax"] = torch.softmax(
                logits, dim=-1
            )
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not got.dtype == torch.bool:
            sums = got.detach().double().sum(dim=-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
                raise CheckError(
                    f"{what}: probabilities don't sum to 1 (row sums {[round(s, 4) for s in sums.tolist()]})"
                    + (hint_for(got, variants, 1e-5, 1e-4) or "\n  hint: apply softmax to the scaled logits")
                )
        assert_close(got, expected, f"{what} probabilities", variants=variants)
    success("temperature scaling")


def _check_filtered(got: Any, expected: torch.Tensor, logits: torch.Tensor, what: str, kept_hints: dict) -> None:
    """Compare filtered logits: same shape, -inf at the same places, kept logits unchanged."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        assert_close(got, expected, what)
    n_exp = torch.isfinite(expected).sum(dim=-1)
    n_got = torch.isfinite(got).sum(dim=-1)
    if (n_got != n_exp).any():
        row = int((n_got != n_exp).nonzero()[0])
        diff = int(n_got[row] - n_exp[row])
        hint = kept_hints.get(diff, "")
        if n_got[row] == got.shape[-1] and torch.isfinite(expected[row]).sum() < got.shape[-1]:
            hint = "nothing was set to -inf: removed tokens must get -inf so that softmax gives them probability 0"
        raise CheckError(
            f"{what}: row {row} keeps {int(n_got[row])} tokens, expected {int(n_exp[row])}"
            + (f"\n  hint: {hint}" if hint else "")
        )
    kept_exp, kept_got = torch.isfinite(expected), torch.isfinite(got)
    if (kept_exp != kept_got).any():
        row, col = (kept_exp != kept_got).nonzero()[0].tolist()
        sorted_ok = torch.equal(kept_got, torch.isfinite(torch.sort(expected, dim=-1, descending=True).values))
        hint = (
            "\n  hint: the logits come back sorted; keep each logit at its position in the vocabulary"
            if sorted_ok
            else ""
        )
        state = "kept" if kept_got[row, col] else "removed"
        raise CheckError(
            f"{what}: row {row}, token {col} (logit {logits[row, col].item():.4g}) is {state}, expected the opposite"
            + hint
        )
    if not (got[~kept_got] == float("-inf")).all():
        raise CheckError(f"{what}: removed tokens must be -inf, got {got[~kept_got].unique().tolist()}")
    try:
        assert_close(got, expected, what)
    except CheckError as exc:
        raise CheckError(
            f"{exc}\n  hint: the kept logits changed: leave them as they are, only set the others to -inf"
        ) from None


def _distinct_logits(seed: int) -> torch.Tensor:
    """(2, 10) logits without ties: a shuffled ladder of values, so top-k has one right answer."""
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(10, generator=gen).float() * 0.7 - 3.0 for _ in range(2)]
    return torch.stack(rows)


def check_top_k(filter_fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``filter_fn(logits, k) -> logits``: keep the ``k`` largest logits per row, set the rest to -inf.

    ``logits`` is ``(batch=2, vocab=10)`` without ties; k = 1, 3 and 10.
    """
    logits = _distinct_logits(seed=17)
    for k in (1, 3, 10):
        what = f"filter_fn(logits, k={k})"
        got = call_learner(filter_fn, (logits.clone(), k), what)
        kept_hints = {
            1: "keeps k+1 tokens: compare with the k-th largest value (topk(...).values[:, -1]) and drop "
            "logits strictly below it",
            -1: "keeps k-1 tokens: the k-th largest logit itself must stay (use <, not <=)",
        }
        _check_filtered(got, filter_logits(logits, top_k=k), logits, what, kept_hints)
    success("top-k filtering")


def check_top_p(filter_fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``filter_fn(logits, p) -> logits``: keep the fewest most likely tokens whose probabilities reach p.

    The token that crosses ``p`` is kept (the most likely token always is); removed tokens get -inf.
    """
    probs = torch.tensor([[0.05, 0.5, 0.1, 0.2, 0.15], [0.3, 0.02, 0.08, 0.25, 0.35]])
    logits = probs.log()
    for p in (0.3, 0.6, 0.9, 1.0):
        what = f"filter_fn(logits, p={p})"
        got = call_learner(filter_fn, (logits.clone(), p), what)
        kept_hints = {
            -1: "one token too few: keep tokens while the probability mass *before* them is below p, so the "
            "token that crosses p stays",
            1: "one token too many: stop once the kept probability mass reaches p",
        }
        _check_filtered(got, filter_logits(logits, top_p=p), logits, what, kept_hints)
    success("top-p filtering")
