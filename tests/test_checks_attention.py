"""Checks of chapter 6: causal and multi-head attention pass the package's code and name a wrong one's mistake."""

import math

import pytest
import torch
import torch.nn as nn
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.attention import MultiHeadAttention, explicit_causal_attention
from minigpt_lib.checks import CheckError


def causal_attention(queries, keys, values, diagonal=1, mask=True, scale=True, mask_after_softmax=False):
    tokens = queries.shape[-2]
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=diagonal)
    scores = queries @ keys.transpose(-2, -1) / (math.sqrt(keys.shape[-1]) if scale else 1.0)
    if mask and not mask_after_softmax:
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask_after_softmax:
        weights = weights.masked_fill(future, 0.0)
    return weights @ values


def test_check_causal_attention(capsys):
    reference = lambda q, k, v: explicit_causal_attention(q, k, v, torch.triu(torch.ones(6, 6).bool(), 1))[0]  # noqa: E731
    passes(checks.check_causal_attention, reference, capsys, "causal attention")
    passes(checks.check_causal_attention, causal_attention, capsys, "causal attention")
    with pytest.raises(CheckError, match="weights are not zero above the diagonal: is the causal mask applied"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, mask=False))
    with pytest.raises(CheckError, match="don't sum to 1\n  hint: the mask was applied after softmax"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, mask_after_softmax=True))
    with pytest.raises(CheckError, match=r"hint: the scores are not divided by sqrt\(head_dim\)"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, scale=False))
    with pytest.raises(CheckError, match="NaN in the output.*diagonal=1"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, diagonal=0))


class UnmaskedAttention(MultiHeadAttention):
    def forward(self, x):
        self.mask.zero_()
        return super().forward(x, return_weights=True)[0]


class ReshapedHeadsAttention(MultiHeadAttention):
    def _split_heads(self, x):
        return x.reshape(x.shape[0], self.num_heads, x.shape[1], self.head_dim)


class FusedQKVAttention(MultiHeadAttention):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        del self.W_query, self.W_key, self.W_value
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)


def test_check_multi_head_attention(capsys):
    passes(checks.check_multi_head_attention, MultiHeadAttention, capsys, "MultiHeadAttention")
    with pytest.raises(CheckError, match=r"\(qkv_bias=False\).*\n  hint: no causal mask"):
        checks.check_multi_head_attention(UnmaskedAttention)
    with pytest.raises(CheckError, match="hint: heads are split with a plain reshape"):
        checks.check_multi_head_attention(ReshapedHeadsAttention)
    with pytest.raises(CheckError, match=r"missing: \['W_query.weight', 'W_key.weight', 'W_value.weight'\]"):
        checks.check_multi_head_attention(FusedQKVAttention)
