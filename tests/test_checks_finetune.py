"""Checks of chapter 11: the targets of one instruction example and the LoRA forward pass."""

import pytest
import torch
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError
from minigpt_lib.instruct import IGNORE_INDEX
from minigpt_lib.lora import LoRALinear


def reference_targets(prompt_ids, response_ids, length):
    seq = prompt_ids + response_ids
    targets = (seq[1:] + [IGNORE_INDEX] * length)[:length]
    return [IGNORE_INDEX] * (len(prompt_ids) - 1) + targets[len(prompt_ids) - 1:]


def test_check_example_targets(capsys):
    passes(checks.check_example_targets, reference_targets, capsys, "instruction targets")
    with pytest.raises(CheckError, match="a target that is still a prompt token must be -100"):
        checks.check_example_targets(lambda p, r, n: ((p + r)[1:] + [IGNORE_INDEX] * n)[:n])
    with pytest.raises(CheckError, match="the last prompt position predicts the first response token"):
        checks.check_example_targets(
            lambda p, r, n: [IGNORE_INDEX] * len(p) + reference_targets(p, r, n)[len(p):])


def test_check_lora_forward(capsys):
    def with_layer(x, weight, lora_a, lora_b, alpha):
        layer = LoRALinear(torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False), lora_a.shape[0], alpha)
        with torch.no_grad():
            layer.base.weight.copy_(weight), layer.lora_A.copy_(lora_a), layer.lora_B.copy_(lora_b)
        return layer(x).detach()

    with torch.random.fork_rng(devices=[]):
        passes(checks.check_lora_forward, with_layer, capsys, "LoRA forward pass")
    with pytest.raises(CheckError, match="scaled by alpha instead of alpha / r"):
        checks.check_lora_forward(lambda x, w, a, b, alpha: x @ w.T + alpha * (x @ a.T @ b.T))


def test_check_last_token_states(capsys):
    passes(checks.check_last_token_states, lambda h, n: h[torch.arange(len(n)), n - 1], capsys, "last-token states")
    with pytest.raises(CheckError, match="position -1 of every row, which is padding"):
        checks.check_last_token_states(lambda h, n: h[:, -1])
