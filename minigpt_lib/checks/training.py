"""Checks for chapter 8: the cross-entropy loss and the learning-rate schedule."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..train import lr_at_step
from ._common import CheckError, assert_close, call_learner, seeded_randn, success


def check_cross_entropy(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``loss_fn(logits, targets) -> scalar``: the mean next-token cross-entropy.

    ``logits`` is ``(batch=2, tokens=4, vocab=10)`` and ``targets`` ``(2, 4)``, as in the training loop.
    """
    logits = 3.0 * seeded_randn(2, 4, 10, seed=14)
    targets = torch.randint(0, 10, (2, 4), generator=torch.Generator().manual_seed(15))
    got = call_learner(loss_fn, (logits.clone(), targets.clone()), "loss_fn(logits, targets)")
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    if isinstance(got, torch.Tensor) and got.shape != () and got.numel() == 1:
        raise CheckError(f"loss: expected a scalar (shape ()), got shape {tuple(got.shape)}; use .mean() or .squeeze()")
    picked = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert_close(
        got,
        expected,
        "cross-entropy loss",
        variants={
            "looks like the sum over tokens; the loss is the mean": -picked.sum(),
            "the sign is flipped: cross-entropy is the negative mean log-probability": -expected,
            "this is exp(loss), the perplexity": expected.exp(),
            "log_softmax runs over the wrong dimension: normalize over the vocabulary (dim=-1)": -logits.log_softmax(1)
            .gather(-1, targets.unsqueeze(-1))
            .mean(),
            "probabilities instead of log-probabilities: take the log of the softmax": -picked.exp().mean(),
            "the log-softmax is missing: raw logits were averaged": -logits.gather(-1, targets.unsqueeze(-1)).mean(),
        },
    )
    success("cross-entropy")


def _schedule_variants(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float) -> dict:
    """Learning rates that common schedule mistakes give at ``step``, keyed by the hint that explains them."""
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    decay = step >= warmup_steps
    return {
        "warm-up is off by one: step 0 should already use peak_lr / warmup_steps, i.e. peak_lr * (step + 1) / "
        "warmup_steps": min_lr + (peak_lr - min_lr) * cosine if decay else peak_lr * step / warmup_steps,
        "the decay is linear; the schedule uses a cosine from peak_lr down to min_lr": (
            min_lr + (peak_lr - min_lr) * (1.0 - min(progress, 1.0)) if decay else peak_lr * (step + 1) / warmup_steps
        ),
        "the cosine decays to 0 instead of to min_lr": (
            peak_lr * cosine if decay else peak_lr * (step + 1) / warmup_steps
        ),
        "the cosine runs over all total_steps; it should start after the warm-up (progress = (step - warmup_steps)"
        " / (total_steps - warmup_steps))": (
            min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0)))
            if decay
            else peak_lr * (step + 1) / warmup_steps
        ),
    }


def check_lr_schedule(lr_fn: Callable[..., float]) -> None:
    """Check ``lr_fn(step, total_steps, peak_lr, warmup_steps, min_lr)`` like :func:`minigpt_lib.train.lr_at_step`.

    Linear warm-up then cosine decay, compared at every step of two short runs (with and without warm-up).
    """
    runs = (
        {"total_steps": 40, "peak_lr": 1e-3, "warmup_steps": 8, "min_lr": 1e-4},
        {"total_steps": 20, "peak_lr": 0.1, "warmup_steps": 0, "min_lr": 0.0},
    )
    for kwargs in runs:
        settings = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        got_curve, exp_curve = [], []
        for step in range(kwargs["total_steps"] + 1):
            what = f"lr_fn({step}, {settings})"
            got = call_learner(lr_fn, (step,), what, kwargs)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, numbers.Real):
                raise CheckError(f"{what}: expected a float learning rate, got {type(got).__name__} {got!r}")
            got_curve.append(float(got))
            exp_curve.append(lr_at_step(step, **kwargs))
        bad = [
            s for s, (g, e) in enumerate(zip(got_curve, exp_curve, strict=True)) if not math.isclose(g, e, rel_tol=1e-6)
        ]
        if bad:
            step = bad[0]
            hint = ""
            for text in _schedule_variants(0, **kwargs):
                curve = [_schedule_variants(s, **kwargs)[text] for s in range(len(got_curve))]
                if all(math.isclose(g, c, rel_tol=1e-6, abs_tol=1e-15) for g, c in zip(got_curve, curve, strict=True)):
                    hint = f"\n  hint: {text}"
                    break
            raise CheckError(
                f"lr_fn({step}, {settings}): expected learning rate {exp_curve[step]:.6g}, got {got_curve[step]:.6g} "
                f"({len(bad)} of {len(got_curve)} steps differ)" + hint
            )
    success("learning-rate schedule")
