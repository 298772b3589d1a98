"""Checks for chapter 6: causal scaled dot-product attention and multi-head attention."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from ..attention import MultiHeadAttention
from ._common import (
    CheckError,
    assert_close,
    build_learner,
    call_learner,
    copy_parameters,
    hint_for,
    reference_module,
    seeded_randn,
    success,
)


def _attention_weights(queries: torch.Tensor, keys: torch.Tensor) -> dict[str, torch.Tensor]:
    """Correct causal weights (key ``"reference"``) and the weights that common mistakes produce."""
    tokens, d = queries.shape[-2], keys.shape[-1]
    scores = queries @ keys.transpose(-2, -1)
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)
    masked = scores.masked_fill(future, float("-inf"))
    return {
        "reference": torch.softmax(masked / math.sqrt(d), dim=-1),
        "the scores are not divided by sqrt(head_dim)": torch.softmax(masked, dim=-1),
        "the scores are divided by head_dim; divide by its square root": torch.softmax(masked / d, dim=-1),
        "softmax runs over the wrong dimension: normalize each row (dim=-1)": torch.softmax(
            masked / math.sqrt(d), dim=-2
        ),
        "weights are not zero above the diagonal: is the causal mask applied before softmax?": torch.softmax(
            scores / math.sqrt(d), dim=-1
        ),
        "masked scores were set to 0, not -inf: exp(0) still gives future tokens weight": torch.softmax(
            scores.masked_fill(future, 0.0) / math.sqrt(d), dim=-1
        ),
        "the mask was applied after softmax without renormalizing: mask the scores before softmax": torch.softmax(
            scores / math.sqrt(d), dim=-1
        ).masked_fill(future, 0.0),
    }


def check_causal_attention(attention_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``attention_fn(queries, keys, values) -> context``: causal, scaled dot-product, no dropout.

    Inputs are ``(batch=2, tokens=6, head_dim=6)``. A first call with identity values makes the context equal
    to the attention weights, so the mask and the softmax are checked on the weights themselves.
    """
    queries, keys = seeded_randn(2, 6, 6, seed=8), seeded_randn(2, 6, 6, seed=9)
    candidates = _attention_weights(queries, keys)
    expected_w = candidates.pop("reference")
    eye = torch.eye(6).expand(2, 6, 6).clone()
    what = "attention_fn(queries, keys, values=identity)"
    weights = call_learner(attention_fn, (queries.clone(), keys.clone(), eye), what)
    if isinstance(weights, torch.Tensor) and weights.shape == expected_w.shape:
        w = weights.detach().double()
        if torch.isnan(w).any():
            raise CheckError(
                f"{what}: NaN in the output; a row whose scores are all -inf gives NaN. Does the mask also "
                "hide the diagonal? torch.triu(..., diagonal=1) keeps each token's view of itself"
            )
        above = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1).expand_as(w)
        if (w[above].abs() > 1e-6).any():
            b, i, j = (w.abs() > 1e-6).logical_and(above).nonzero()[0].tolist()
            raise CheckError(
                f"{what}: token {i} gives weight {w[b, i, j].item():.4g} to the later token {j} (batch {b}); "
                "weights are not zero above the diagonal: is the causal mask applied before softmax?"
                + hint_for(weights, candidates, 1e-5, 1e-4)
            )
        sums = w.sum(dim=-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            b, i = (sums - 1).abs().gt(1e-4).nonzero()[0].tolist()
            raise CheckError(
                f"{what}: the weights of token {i} (batch {b}) sum to {sums[b, i].item():.4g}; probabilities "
                "don't sum to 1"
                + (
                    hint_for(weights, candidates, 1e-5, 1e-4)
                    or "\n  hint: apply softmax over the last dimension after masking"
                )
            )
    assert_close(weights, expected_w, f"{what} (= attention weights)", variants=candidates)
    values = seeded_randn(2, 6, 6, seed=10)
    got = call_learner(
        attention_fn, (queries.clone(), keys.clone(), values.clone()), "attention_fn(queries, keys, values)"
    )
    assert_close(got, expected_w @ values, "context vectors")
    success("causal attention")


def _mha_variant(ref: MultiHeadAttention, x: torch.Tensor, mistake: str) -> torch.Tensor:
    """Multi-head attention computed by hand with one deliberate mistake, to recognise a learner's output."""
    batch, tokens, _ = x.shape
    heads, head_dim = ref.num_heads, ref.head_dim

    def split(t: torch.Tensor) -> torch.Tensor:
        if mistake == "split":
            return t.reshape(batch, heads, tokens, head_dim)
        return t.view(batch, tokens, heads, head_dim).transpose(1, 2)

    q, k, v = split(ref.W_query(x)), split(ref.W_key(x)), split(ref.W_value(x))
    scores = q @ k.transpose(-2, -1)
    if mistake != "no mask":
        scores = scores.masked_fill(ref.mask[:tokens, :tokens], float("-inf"))
    scale = math.sqrt(ref.d_out if mistake == "scale" else head_dim)
    context = (torch.softmax(scores / scale, dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, ref.d_out)
    return context if mistake == "no out_proj" else ref.out_proj(context)


def check_multi_head_attention(mha_cls: Callable[..., nn.Module]) -> None:
    """Check a MultiHeadAttention class: constructor ``(d_in, d_out, context_length, dropout, num_heads,
    qkv_bias=False)`` and parameters ``W_query, W_key, W_value, out_proj`` named as in the reference.

    Runs with and without query/key/value biases, on fewer tokens than the context length.
    """
    d_in, d_out, context_length, heads = 6, 8, 8, 2
    x = seeded_randn(2, 5, d_in, seed=11)
    for seed, qkv_bias in ((12, False), (13, True)):
        args = (d_in, d_out, context_length, 0.0, heads)
        reference = reference_module(MultiHeadAttention, args, seed=seed, kwargs={"qkv_bias": qkv_bias})
        learner = build_learner(mha_cls, args, "mha_cls", {"qkv_bias": True} if qkv_bias else None)
        copy_parameters(learner, reference, f"mha_cls(..., qkv_bias={qkv_bias})")
        with torch.no_grad():
            got = call_learner(learner, (x.clone(),), "mha(x)")
            if isinstance(got, tuple):
                got = got[0]
            expected = reference(x)
            variants = {
                "no causal mask: each token also attends to later tokens": _mha_variant(reference, x, "no mask"),
                "heads are split with a plain reshape to (batch, heads, tokens, head_dim); view as (batch, "
                "tokens, heads, head_dim) and then transpose(1, 2)": _mha_variant(reference, x, "split"),
                "scores are divided by sqrt(d_out); divide by sqrt(head_dim)": _mha_variant(reference, x, "scale"),
                "out_proj is not applied to the combined heads": _mha_variant(reference, x, "no out_proj"),
            }
        assert_close(got, expected, f"MultiHeadAttention output (qkv_bias={qkv_bias})", variants=variants)
    success("MultiHeadAttention")
