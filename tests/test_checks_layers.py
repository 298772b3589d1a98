"""Checks of chapters 3 and 4: layer norm, GELU, feed-forward pass the package's layers and name a mistake."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError
from minigpt_lib.layers import GELU, FeedForward, LayerNorm


class UnbiasedLayerNorm(LayerNorm):
    def forward(self, x):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)  # unbiased by default
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class EpsOutsideLayerNorm(LayerNorm):
    def forward(self, x):
        mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / (std + self.eps) + self.shift


class TorchNamesLayerNorm(nn.LayerNorm):  # parameters called weight/bias
    pass


def test_check_layer_norm(capsys):
    passes(checks.check_layer_norm, LayerNorm, capsys, "LayerNorm")
    with pytest.raises(CheckError, match="looks like you used the unbiased variance"):
        checks.check_layer_norm(UnbiasedLayerNorm)
    with pytest.raises(CheckError, match="variance ~1e-6.*\n  hint: eps is added outside the square root"):
        checks.check_layer_norm(EpsOutsideLayerNorm)
    with pytest.raises(CheckError, match=r"missing: \['scale', 'shift'\]\n  unexpected: \['weight', 'bias'\]"):
        checks.check_layer_norm(TorchNamesLayerNorm)


def test_check_gelu(capsys):
    passes(checks.check_gelu, GELU, capsys, "GELU")
    passes(checks.check_gelu, GELU(), capsys, "GELU")
    passes(checks.check_gelu, lambda x: F.gelu(x, approximate="tanh"), capsys, "GELU")
    with pytest.raises(CheckError, match=r"exact \(erf\) GELU"):
        checks.check_gelu(F.gelu)
    with pytest.raises(CheckError, match="this is ReLU"):
        checks.check_gelu(nn.ReLU)
    with pytest.raises(CheckError, match="factor 0.5 is missing"):
        checks.check_gelu(lambda x: x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))))


class ReluFeedForward(FeedForward):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.layers[1] = nn.ReLU()


class NarrowFeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["emb_dim"]
        self.layers = nn.Sequential(nn.Linear(d, 2 * d), GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        return self.layers(x)


def test_check_feed_forward(capsys):
    passes(checks.check_feed_forward, FeedForward, capsys, "FeedForward")
    with pytest.raises(CheckError, match="looks like ReLU"):
        checks.check_feed_forward(ReluFeedForward)
    with pytest.raises(CheckError, match=r"parameter layers.0.weight has shape \(16, 8\), expected \(32, 8\)"):
        checks.check_feed_forward(NarrowFeedForward)
