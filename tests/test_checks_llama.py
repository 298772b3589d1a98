"""Checks of chapter 10: RoPE, the SwiGLU block and the KV-cache size, each passing and failing with its hint."""

import pytest
import torch
import torch.nn.functional as F
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError
from minigpt_lib.llama import SwiGLUFeedForward, apply_rope, rope_angles


def package_rope(x, positions, base):
    cos, sin = rope_angles(x.shape[-1], int(positions.max()) + 1, base)
    return apply_rope(x, cos[positions], sin[positions])


def test_check_rope(capsys):
    passes(checks.check_rope, package_rope, capsys, "RoPE")
    with pytest.raises(CheckError, match="the rotation goes the wrong way"):
        checks.check_rope(lambda x, p, b: 2 * x * rope_angles(8, 31, b)[0][p] - package_rope(x, p, b))
    with pytest.raises(CheckError, match="the positions are ignored"):
        checks.check_rope(lambda x, p, b: package_rope(x, torch.zeros_like(p), b))
    with pytest.raises(CheckError, match=r"the base was not used"):
        checks.check_rope(lambda x, p, b: package_rope(x, p, 10000.0))
    with pytest.raises(CheckError, match=r"expected shape \(2, 3, 5, 8\), got \(2, 3, 5, 4\)"):
        checks.check_rope(lambda x, p, b: package_rope(x, p, b)[..., :4])


class GeluGated(SwiGLUFeedForward):
    def forward(self, x):
        return self.down(F.gelu(self.gate(x)) * self.up(x))


class Swapped(SwiGLUFeedForward):
    def forward(self, x):
        return self.down(F.silu(self.up(x)) * self.gate(x))


def test_check_swiglu(capsys):
    passes(checks.check_swiglu, SwiGLUFeedForward, capsys, "SwiGLU feed-forward block")
    with pytest.raises(CheckError, match="GELU is used"):
        checks.check_swiglu(GeluGated)
    with pytest.raises(CheckError, match="gate and up are swapped"):
        checks.check_swiglu(Swapped)
    with pytest.raises(CheckError, match="parameter names differ"):
        checks.check_swiglu(lambda d, h: torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Linear(h, d)))


def test_check_kv_cache_bytes(capsys):
    def right(cfg, tokens, size):
        head_dim = cfg["emb_dim"] // cfg["n_heads"]
        return 2 * cfg["n_layers"] * cfg.get("n_kv_heads", cfg["n_heads"]) * head_dim * tokens * size

    passes(checks.check_kv_cache_bytes, right, capsys, "KV-cache size")
    with pytest.raises(CheckError, match="46,080,000 bytes, got 23,040,000 .*count both the keys and the values"):
        checks.check_kv_cache_bytes(lambda c, t, s: right(c, t, s) // 2)
    with pytest.raises(CheckError, match="only the n_kv_heads key/value heads are cached"):
        checks.check_kv_cache_bytes(lambda c, t, s: right({**c, "n_kv_heads": c["n_heads"]}, t, s))
    with pytest.raises(CheckError, match="expected an int, got str"):
        checks.check_kv_cache_bytes(lambda c, t, s: "many")
