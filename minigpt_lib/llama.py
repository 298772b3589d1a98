"""A Llama-architecture model (SmolLM2, Llama 2/3): GPT-2 with five pieces swapped for their modern successors.

Read it beside :mod:`minigpt_lib.model`. What changes, one class or function each:

- :class:`RMSNorm` replaces :class:`~minigpt_lib.layers.LayerNorm`: divide by the root mean square, no mean
  subtracted, no shift (Zhang & Sennrich, 2019).
- :func:`rope_angles` and :func:`apply_rope` replace the learned position table: queries and keys are rotated
  by an angle proportional to their position, so attention scores depend on relative positions (Su et al., 2021).
- :class:`SwiGLUFeedForward` replaces the GELU feed-forward block: a gated unit with three matrices
  (Shazeer, 2020).
- :class:`GroupedQueryAttention` replaces multi-head attention: several query heads share one key/value head,
  which shrinks the KV cache (Ainslie et al., 2023).
- No biases anywhere, and the output head reuses the token embedding matrix (tied embeddings).

:class:`LlamaModel` has the interface :func:`minigpt_lib.generate.generate` needs (``cfg["context_length"]``,
``new_kv_cache``, ``forward(in_idx, kv_cache)``), so GPT-2 and this model generate through the same code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import KVCache, LayerKVCache, explicit_causal_attention

#: SmolLM2-135M (Allal et al., 2025): 30 blocks of width 576, 9 query heads sharing 3 key/value heads.
SMOLLM2_135M_CONFIG: dict[str, Any] = {
    "vocab_size": 49152,  # byte-level BPE vocabulary
    "context_length": 8192,  # longest input it was trained on; RoPE itself has no table to run out of
    "emb_dim": 576,  # width of every token vector
    "n_heads": 9,  # query heads per block (head width 576 / 9 = 64)
    "n_kv_heads": 3,  # key/value heads, each shared by n_heads / n_kv_heads = 3 query heads
    "n_layers": 30,  # transformer blocks
    "hidden_dim": 1536,  # width inside the SwiGLU feed-forward block
    "rope_base": 100000.0,  # RoPE's base: the slowest pair of dimensions turns once per ~ 2π·base tokens
    "norm_eps": 1e-5,  # RMSNorm's epsilon
    "tie_weights": True,  # output head = token embedding matrix
}

_INT_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_heads", "n_layers", "hidden_dim")


def validate_llama_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a Llama config: exactly the keys of :data:`SMOLLM2_135M_CONFIG`, each of a sensible type; return a copy.

    A misspelt key (``tie_weigths``) or one this model does not use (``drop_rate``) fails here instead of
    being silently ignored.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg: expected a dict of model settings, got {type(cfg).__name__}")
    missing = [key for key in SMOLLM2_135M_CONFIG if key not in cfg]
    unknown = [key for key in cfg if key not in SMOLLM2_135M_CONFIG]
    if missing or unknown:
        raise ValueError(
            f"cfg: missing key(s) {missing}, unknown key(s) {unknown}; a Llama config has {list(SMOLLM2_135M_CONFIG)}"
        )
    for key in _INT_KEYS:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise ValueError(f"cfg[{key!r}]: expected a positive integer, got {cfg[key]!r}")
    for key in ("rope_base", "norm_eps"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)) or not 0 < cfg[key] < float("inf"):
            raise ValueError(f"cfg[{key!r}]: expected a positive finite number, got {cfg[key]!r}")
    if not isinstance(cfg["tie_weights"], bool):
        raise ValueError(f"cfg['tie_weights']: expected True or False, got {cfg['tie_weights']!r}")
    if cfg["emb_dim"] % cfg["n_heads"] or (cfg["emb_dim"] // cfg["n_heads"]) % 2:
        raise ValueError(
            f"cfg['emb_dim']: expected a multiple of n_heads={cfg['n_heads']} with an even head width "
            f"(RoPE rotates pairs of dimensions), got {cfg['emb_dim']}"
        )
    if cfg["n_heads"] % cfg["n_kv_heads"]:
        raise ValueError(
            f"cfg['n_kv_heads']: expected a divisor of n_heads={cfg['n_heads']} (each key/value head serves "
            f"the same number of query heads), got {cfg['n_kv_heads']}"
        )
    return dict(cfg)


class RMSNorm(nn.Module):
    """Divide each token vector by its root mean square, then apply a learned scale (no mean, no shift).

    ``x / sqrt(mean(x²) + eps) * scale`` over the last dimension; shape ``(..., emb_dim)`` in and out.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel computing x * rsqrt(mean(x**2) + eps) * scale.
        return F.rms_norm(x, self.scale.shape, self.scale, self.eps)


def rope_angles(head_dim: int, context_length: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of RoPE's angles for every position: two tensors ``(context_length, head_dim)``.

    Dimension pair i turns by ``position * base**(-2i / head_dim)``: the first pairs spin fast, the last
    ones slowly. Each angle appears twice, once for each half of the head (see :func:`apply_rope`).
    """
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(context_length, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of dimensions (i, i + head_dim/2) of ``x`` by its position's angle.

    ``x`` is ``(batch, heads, tokens, head_dim)``, ``cos``/``sin`` ``(tokens, head_dim)`` for those tokens'
    positions. Pairing dimension i with i + head_dim/2 (not with i + 1) is the Hugging Face layout.
    """
    first, second = x.chunk(2, dim=-1)
    rotated_90 = torch.cat([-second, first], dim=-1)
    return x * cos + rotated_90 * sin


class GroupedQueryAttention(nn.Module):
    """Causal self-attention where ``n_heads`` query heads share ``n_kv_heads`` key/value heads, with RoPE.

    Maps ``(batch, tokens, emb_dim)`` to the same shape. Keys and values are computed (and cached) for the
    ``n_kv_heads`` heads only; each is repeated for its group of ``n_heads // n_kv_heads`` query heads.
    ``use_fast=True`` uses ``F.scaled_dot_product_attention``; ``False`` the explicit steps of chapter 6.
    """

    def __init__(self, emb_dim: int, n_heads: int, n_kv_heads: int, use_fast: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = emb_dim // n_heads
        self.use_fast = use_fast
        self.W_query = nn.Linear(emb_dim, n_heads * self.head_dim, bias=False)
        self.W_key = nn.Linear(emb_dim, n_kv_heads * self.head_dim, bias=False)
        self.W_value = nn.Linear(emb_dim, n_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(n_heads * self.head_dim, emb_dim, bias=False)

    def _split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """(batch, tokens, heads * head_dim) -> (batch, heads, tokens, head_dim)."""
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: LayerKVCache | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``cos``/``sin`` ``(tokens, head_dim)`` hold the angles of the new tokens' positions."""
        batch, tokens, _ = x.shape
        start = kv_cache.length if kv_cache is not None else 0
        queries = apply_rope(self._split_heads(self.W_query(x), self.n_heads), cos, sin)
        keys = apply_rope(self._split_heads(self.W_key(x), self.n_kv_heads), cos, sin)
        values = self._split_heads(self.W_value(x), self.n_kv_heads)
        if kv_cache is not None:
            keys, values = kv_cache.update(keys, values)  # the cache holds n_kv_heads heads, not n_heads
        group = self.n_heads // self.n_kv_heads
        if return_weights or not self.use_fast:
            keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
            mask = torch.ones(tokens, start + tokens, dtype=torch.bool, device=x.device).triu(start + 1)
            context, weights = explicit_causal_attention(queries, keys, values, mask)
        else:  # the fused kernel shares each key/value head with its group itself (enable_gqa)
            weights, mask = None, None
            if start and tokens > 1:  # new tokens after a cached prefix: True where attention is allowed
                mask = torch.ones(tokens, start + tokens, dtype=torch.bool, device=x.device).tril(start)
            context = F.scaled_dot_product_attention(
                queries, keys, values, attn_mask=mask, is_causal=start == 0 and tokens > 1, enable_gqa=True
            )
        out = self.out_proj(context.transpose(1, 2).reshape(batch, tokens, self.n_heads * self.head_dim))
        return (out, weights) if return_weights else out


class SwiGLUFeedForward(nn.Module):
    """``down(silu(gate(x)) * up(x))``: a feed-forward block whose hidden units are gated by a second projection.

    Shape ``(batch, tokens, emb_dim)`` in and out, ``hidden_dim`` inside; three matrices instead of GPT-2's two.
    """

    def __init__(self, emb_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(emb_dim, hidden_dim, bias=False)
        self.up = nn.Linear(emb_dim, hidden_dim, bias=False)
        self.down = nn.Linear(hidden_dim, emb_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class LlamaBlock(nn.Module):
    """Pre-norm block as in GPT-2 (x + attention(norm(x)), then x + feed_forward(norm(x))), with the new parts."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg["emb_dim"], cfg["norm_eps"])
        self.att = GroupedQueryAttention(cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_heads"])
        self.norm2 = RMSNorm(cfg["emb_dim"], cfg["norm_eps"])
        self.ff = SwiGLUFeedForward(cfg["emb_dim"], cfg["hidden_dim"])

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: LayerKVCache | None = None
    ) -> torch.Tensor:
        x = x + self.att(self.norm1(x), cos, sin, kv_cache)
        return x + self.ff(self.norm2(x))


class LlamaModel(nn.Module):
    """Token embeddings, ``n_layers`` :class:`LlamaBlock` s, a final RMSNorm and the (tied) output head.

    Maps token ids ``(batch, tokens)`` to next-token logits ``(batch, tokens, vocab_size)``. There is no position
    embedding: positions enter through the rotation of queries and keys inside every attention layer.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg = validate_llama_config(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.trf_blocks = nn.ModuleList([LlamaBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = RMSNorm(cfg["emb_dim"], cfg["norm_eps"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if cfg["tie_weights"]:
            self.out_head.weight = self.tok_emb.weight
        cos, sin = rope_angles(cfg["emb_dim"] // cfg["n_heads"], cfg["context_length"], cfg["rope_base"])
        self.register_buffer("rope_cos", cos, persistent=False)  # constants, not weights: not in state_dict
        self.register_buffer("rope_sin", sin, persistent=False)

    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        """An empty key/value cache for up to ``max_len`` tokens (default: the whole context), for generation."""
        limit = self.cfg["context_length"]
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or not 0 < max_len):
            raise ValueError(f"max_len: expected None or a positive integer, got {max_len!r}")
        return KVCache(self.cfg["n_layers"], min(max_len or limit, limit))

    def _check_input(self, in_idx: torch.Tensor, kv_cache: KVCache | None) -> int:
        """Reject input the embedding or the cache would fail on deep inside PyTorch; return the first position."""
        if not isinstance(in_idx, torch.Tensor) or in_idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"in_idx: expected an integer tensor of token ids, got {in_idx!r:.80}")
        if in_idx.dim() != 2 or 0 in in_idx.shape:
            raise ValueError(f"in_idx: expected shape (batch, tokens) with both >= 1, got {tuple(in_idx.shape)}")
        start = 0
        if kv_cache is not None:
            if not isinstance(kv_cache, KVCache) or len(kv_cache.layers) != self.cfg["n_layers"]:
                raise ValueError(f"kv_cache: expected a cache from this model's new_kv_cache(), got {kv_cache!r}")
            start = kv_cache.length
        limit = self.cfg["context_length"]
        if start + in_idx.shape[1] > limit:
            raise ValueError(
                f"in_idx: at most context_length={limit} tokens fit, got {start} cached + {in_idx.shape[1]} new; "
                "crop the input to its last tokens"
            )
        low, high = torch.aminmax(in_idx)
        if low < 0 or high >= self.cfg["vocab_size"]:
            raise ValueError(
                f"in_idx: token ids must lie in [0, {self.cfg['vocab_size'] - 1}], got {int(low)} to {int(high)}"
            )
        return start

    def hidden_states(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Final-normed token vectors ``(batch, tokens, emb_dim)``, the input of the output head."""
        start = self._check_input(in_idx, kv_cache)
        positions = slice(start, start + in_idx.shape[1])
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        x = self.tok_emb(in_idx)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, kv_cache.layers[i] if kv_cache is not None else None)
        return self.final_norm(x)

    def forward(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Next-token logits ``(batch, tokens, vocab_size)``; with ``kv_cache``, new tokens follow the cached ones."""
        return self.out_head(self.hidden_states(in_idx, kv_cache))

    @torch.no_grad()
    def attention_weights(self, in_idx: torch.Tensor) -> torch.Tensor:
        """Every head's attention weights, ``(n_layers, batch, n_heads, tokens, tokens)``, for looking inside."""
        self._check_input(in_idx, None)
        cos, sin = self.rope_cos[: in_idx.shape[1]], self.rope_sin[: in_idx.shape[1]]
        x, maps = self.tok_emb(in_idx), []
        for block in self.trf_blocks:
            attended, weights = block.att(block.norm1(x), cos, sin, return_weights=True)
            x = x + attended
            x = x + block.ff(block.norm2(x))
            maps.append(weights)
        return torch.stack(maps)
