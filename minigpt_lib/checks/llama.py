"""Checks for chapter 10: rotary position embeddings, the SwiGLU feed-forward block, the KV-cache size with GQA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..llama import SMOLLM2_135M_CONFIG, SwiGLUFeedForward, apply_rope, rope_angles
from ._common import (
    CheckError,
    as_int,
    assert_close,
    build_learner,
    call_learner,
    copy_parameters,
    seeded_randn,
    success,
)


def _rope_reference(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    cos, sin = rope_angles(x.shape[-1], int(positions.max()) + 1, base)
    return apply_rope(x, cos[positions], sin[positions])


def check_rope(rope_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``rope_fn(x, positions, base) -> rotated x``, with ``x`` ``(batch, heads, tokens, head_dim)``.

    Dimension i is paired with i + head_dim/2 and the pair at position p turns by p * base**(-2i/head_dim).
    """
    x = seeded_randn(2, 3, 5, 8, seed=41)
    positions = torch.tensor([0, 1, 2, 7, 30])
    got = call_learner(rope_fn, (x.clone(), positions.clone(), 100.0), "rope_fn(x, positions, base=100.0)")
    adjacent = x.unflatten(-1, (4, 2)).flip(-1) * torch.tensor([-1.0, 1.0])
    cos, sin = rope_angles(8, 31, 100.0)
    cos_adj = cos[positions][:, :4].repeat_interleave(2, dim=-1)
    sin_adj = sin[positions][:, :4].repeat_interleave(2, dim=-1)
    assert_close(
        got,
        _rope_reference(x, positions, 100.0),
        "rotated x",
        variants={
            "the rotation goes the wrong way: the rotated copy is (-second half, first half)": _rope_reference(
                x, positions, 100.0
            ).neg().add(2 * x * cos[positions]),
            "neighbouring dimensions (0, 1), (2, 3) are paired; pair i with i + head_dim/2 instead": (
                x * cos_adj + adjacent.flatten(-2) * sin_adj
            ),
            "the positions are ignored: use each token's own position": _rope_reference(
                x, torch.zeros_like(positions), 100.0
            ),
            "the base was not used (base 10000 instead of the argument)": _rope_reference(x, positions, 10000.0),
        },
    )
    success("RoPE")


def check_swiglu(ff_cls: Callable[[int, int], nn.Module]) -> None:
    """Check a SwiGLU block ``ff_cls(emb_dim, hidden_dim)`` with linear layers ``gate``, ``up``, ``down`` (no bias)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the global random state stays untouched
        reference = SwiGLUFeedForward(6, 10)
        gen = torch.Generator().manual_seed(42)
        for p in reference.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    learner = build_learner(ff_cls, (6, 10), "ff_cls")
    copy_parameters(learner, reference, "ff_cls(6, 10)")
    x = seeded_randn(2, 3, 6, seed=43)
    got = call_learner(learner, (x.clone(),), "ff(x)")
    g, u, down = x @ reference.gate.weight.T, x @ reference.up.weight.T, reference.down.weight.T
    with torch.no_grad():
        assert_close(
            got,
            reference(x),
            "SwiGLU output",
            variants={
                "gate and up are swapped: the activation belongs on gate(x)": (F.silu(u) * g) @ down,
                "GELU is used; SwiGLU uses SiLU (x * sigmoid(x))": (F.gelu(g) * u) @ down,
                "the up projection is missing: multiply silu(gate(x)) by up(x)": F.silu(g) @ down,
            },
        )
    success("SwiGLU feed-forward block")


def _reference_kv_bytes(cfg: dict[str, Any], tokens: int, bytes_per_number: int) -> int:
    head_dim = cfg["emb_dim"] // cfg["n_heads"]
    return 2 * cfg["n_layers"] * cfg.get("n_kv_heads", cfg["n_heads"]) * head_dim * tokens * bytes_per_number


def check_kv_cache_bytes(bytes_fn: Callable[[dict[str, Any], int, int], int]) -> None:
    """Check ``bytes_fn(cfg, tokens, bytes_per_number) -> int``: the size of one sequence's KV cache.

    A config without ``n_kv_heads`` (GPT-2) has one key/value head per query head.
    """
    gpt2 = {"emb_dim": 768, "n_heads": 12, "n_layers": 12}
    for cfg, tokens, size in [(SMOLLM2_135M_CONFIG, 1000, 4), (gpt2, 1024, 2), ({**gpt2, "n_kv_heads": 4}, 7, 4)]:
        what = f"bytes_fn({'SmolLM2' if 'hidden_dim' in cfg else cfg}, tokens={tokens}, bytes_per_number={size})"
        got = as_int(call_learner(bytes_fn, (dict(cfg), tokens, size), what), what)
        expected = _reference_kv_bytes(cfg, tokens, size)
        if got != expected:
            hints = {
                expected // 2: "count both the keys and the values (a factor 2)",
                expected * cfg["n_heads"] // cfg.get("n_kv_heads", cfg["n_heads"]): (
                    "only the n_kv_heads key/value heads are cached, not n_heads"
                ),
                expected // cfg["n_layers"]: "every layer has its own cache: multiply by n_layers",
            }
            hint = hints.get(got)
            raise CheckError(f"{what}: expected {expected:,} bytes, got {got:,}" + (f" (hint: {hint})" if hint else ""))
    success("KV-cache size")
