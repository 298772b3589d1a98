"""Checks of chapter 8: cross-entropy and the learning-rate schedule pass our code and name a mistake."""

import pytest
import torch.nn.functional as F
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError
from minigpt_lib.train import lr_at_step


def test_check_cross_entropy(capsys):
    reference = lambda logits, targets: F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # noqa: E731
    passes(checks.check_cross_entropy, reference, capsys, "cross-entropy")
    with pytest.raises(CheckError, match="the sum over tokens"):
        checks.check_cross_entropy(lambda lg, t: F.cross_entropy(lg.flatten(0, 1), t.flatten(), reduction="sum"))
    with pytest.raises(CheckError, match="perplexity"):
        checks.check_cross_entropy(lambda lg, t: reference(lg, t).exp())
    with pytest.raises(CheckError, match=r"expected a scalar \(shape \(\)\), got shape \(1,\)"):
        checks.check_cross_entropy(lambda lg, t: reference(lg, t).reshape(1))


def test_check_lr_schedule(capsys):
    passes(checks.check_lr_schedule, lr_at_step, capsys, "learning-rate schedule")

    def off_by_one(step, total_steps, peak_lr, warmup_steps=0, min_lr=0.0):
        return (
            peak_lr * step / warmup_steps if step < warmup_steps else lr_at_step(step, total_steps, peak_lr, 0, min_lr)
        )

    def linear(step, total_steps, peak_lr, warmup_steps=0, min_lr=0.0):
        if step < warmup_steps:
            return peak_lr * (step + 1) / warmup_steps
        return min_lr + (peak_lr - min_lr) * max(0.0, 1 - (step - warmup_steps) / (total_steps - warmup_steps))

    with pytest.raises(CheckError, match=r"lr_fn\(0, total_steps=40.*expected learning rate 0.000125, got 0 "):
        checks.check_lr_schedule(off_by_one)
    with pytest.raises(CheckError, match="hint: the decay is linear"):
        checks.check_lr_schedule(linear)
