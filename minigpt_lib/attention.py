"""Causal multi-head self-attention, computed the explicit way the book teaches or with PyTorch's fused kernel.

Also holds the key/value cache that lets generation process only the newest token at each step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerKVCache:
    """Keys and values of the tokens one attention layer has already seen, in a buffer that grows in place.

    Shapes ``(batch, heads, max_len, head_dim)``, allocated on first use; ``length`` tokens are filled.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def update(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens' keys and values; return views of all keys and values so far."""
        batch, heads, new, head_dim = keys.shape
        held = None if self.keys is None else (self.keys.shape[0], self.keys.shape[1], self.keys.shape[3])
        if self.length and held != (batch, heads, head_dim):
            raise ValueError(
                f"kv_cache: holds {self.length} tokens of (batch, heads, head_dim)={held}, got new keys of "
                f"{(batch, heads, head_dim)}; reset() it or make a new cache for another batch or model"
            )
        if self.length and (self.keys.dtype, self.keys.device) != (keys.dtype, keys.device):
            raise ValueError(
                f"kv_cache: holds {self.length} tokens as {self.keys.dtype} on {self.keys.device}, got new keys as "
                f"{keys.dtype} on {keys.device}; reset() it or make a new cache for another dtype or device"
            )
        end = self.length + new
        if end > self.max_len:
            raise ValueError(
                f"kv_cache: holds at most {self.max_len} tokens, but {self.length} cached + {new} new = {end}"
            )
        if held != (batch, heads, head_dim) or self.keys.dtype != keys.dtype or self.keys.device != keys.device:
            self.keys = keys.new_empty(batch, heads, self.max_len, head_dim)
            self.values = values.new_empty(batch, heads, self.max_len, head_dim)
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """One :class:`LayerKVCache` per transformer block, for a whole :class:`~minigpt_lib.model.GPTModel`."""

    def __init__(self, n_layers: int, max_len: int) -> None:
        self.layers = [LayerKVCache(max_len) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Number of tokens already processed, i.e. the position of the next token."""
        return self.layers[0].length

    def reset(self) -> None:
        """Forget every cached token (the buffers are kept for reuse)."""
        for layer in self.layers:
            layer.length = 0


def explicit_causal_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores, mask, scaled softmax, dropout, weighted sum: attention spelled out step by step.

    ``queries`` is ``(batch, heads, q_tokens, head_dim)``, ``keys``/``values`` ``(batch, heads, k_tokens,
    head_dim)``, ``mask`` a bool ``(q_tokens, k_tokens)`` with True where a query must not look. Returns the
    context vectors and the attention weights ``(batch, heads, q_tokens, k_tokens)``.
    """
    scores = queries @ keys.transpose(-2, -1)
    scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores / math.sqrt(keys.shape[-1]), dim=-1)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ values, weights


class MultiHeadAttention(nn.Module):
    """Causal self-attention with ``num_heads`` heads of width ``d_out // num_heads``.

    Maps ``(batch, tokens, d_in)`` to ``(batch, tokens, d_out)``; token i only attends to tokens 0..i.
    ``use_fast=True`` computes it with ``F.scaled_dot_product_attention``; ``False`` uses the explicit steps.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        use_fast: bool = True,
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out: expected a multiple of num_heads={num_heads}, got {d_out}")
        self.d_in = d_in
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.use_fast = use_fast
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal: position i may not look at positions j > i.
        causal = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", causal, persistent=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, d_out) -> (batch, heads, tokens, head_dim)."""
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: LayerKVCache | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"x: expected shape (batch, tokens, {self.d_in}), got {tuple(x.shape)}")
        batch, tokens, _ = x.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + tokens > self.context_length:
            raise ValueError(
                f"x: at most context_length={self.context_length} tokens fit, got {start} cached + {tokens} new"
            )
        queries = self._split_heads(self.W_query(x))
        keys = self._split_heads(self.W_key(x))
        values = self._split_heads(self.W_value(x))
        if kv_cache is not None:
            keys, values = kv_cache.update(keys, values)
        mask = self.mask[start : start + tokens, : start + tokens]

        weights = None
        if return_weights or not self.use_fast:
            context, weights = explicit_causal_attention(queries, keys, values, mask, self.dropout)
        else:
            # The fused kernel wants True where attention is allowed; a plain causal square needs no mask.
            context = F.scaled_dot_product_attention(
                queries,
                keys,
                values,
                attn_mask=None if start == 0 or tokens == 1 else ~mask,
                dropout_p=self.dropout.p if self.training else 0.0,
                is_causal=start == 0 and tokens > 1,
            )
        out = self.out_proj(context.transpose(1, 2).reshape(batch, tokens, self.d_out))
        return (out, weights) if return_weights else out
