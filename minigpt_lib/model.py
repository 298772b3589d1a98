"""The GPT model: the placeholder skeleton of chapter 2, the transformer block and the full GPT-2 architecture.

Submodules are created in the order the book creates them, so ``torch.manual_seed`` gives the book's numbers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .attention import KVCache, LayerKVCache, MultiHeadAttention
from .config import validate_config
from .layers import FeedForward, LayerNorm


class DummyTransformerBlock(nn.Module):
    """Stands in for a transformer block: returns its input unchanged."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DummyLayerNorm(nn.Module):
    """Stands in for layer normalization: same constructor as :class:`LayerNorm`, returns its input."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DummyGPTModel(nn.Module):
    """The GPT skeleton with placeholder blocks and norm: embeddings in, vocabulary logits out.

    Maps token ids ``(batch, tokens)`` to logits ``(batch, tokens, vocab_size)``.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        cfg = validate_config(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[DummyTransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = DummyLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        _, seq_len = in_idx.shape
        positions = torch.arange(seq_len, device=in_idx.device)
        x = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))
        x = self.final_norm(self.trf_blocks(x))
        return self.out_head(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + feed_forward(norm(x)).

    Shape ``(batch, tokens, emb_dim)`` in and out; dropout is applied to each branch before the shortcut add.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            dropout=cfg["drop_rate"],
            num_heads=cfg["n_heads"],
            qkv_bias=cfg["qkv_bias"],
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x: torch.Tensor, kv_cache: LayerKVCache | None = None) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache=kv_cache))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """GPT-2: token + position embeddings, ``n_layers`` transformer blocks, final norm, output head.

    Maps token ids ``(batch, tokens)`` to next-token logits ``(batch, tokens, vocab_size)``. With
    ``cfg["tie_weights"]`` the output head shares the token embedding matrix.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = validate_config(cfg)
        cfg = self.cfg
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if cfg["tie_weights"]:
            self.out_head.weight = self.tok_emb.weight

    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        """An empty key/value cache for token-by-token generation, holding up to ``max_len`` tokens
        (default: the context length)."""
        limit = self.cfg["context_length"]
        if max_len is not None and not (isinstance(max_len, int) and 1 <= max_len <= limit):
            raise ValueError(f"max_len: expected an integer in [1, {limit}], got {max_len!r}")
        return KVCache(self.cfg["n_layers"], max_len or limit)

    def _check_input(self, in_idx: torch.Tensor, kv_cache: KVCache | None) -> None:
        """Reject input the embeddings would fail on deep inside PyTorch, with a message saying why.

        Token values are checked on the CPU, and elsewhere only when the cache is empty: reading them on a GPU
        makes the CPU wait, and the tokens of later steps come from the sampler, not from the user.
        """
        if not isinstance(in_idx, torch.Tensor):
            raise TypeError(f"in_idx: expected a tensor of token ids, got {type(in_idx).__name__}")
        if in_idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"in_idx: expected an integer tensor (torch.long), got dtype {in_idx.dtype}")
        if in_idx.dim() != 2 or 0 in in_idx.shape:
            raise ValueError(
                f"in_idx: expected shape (batch, tokens) with batch >= 1 and tokens >= 1, got {tuple(in_idx.shape)}"
            )
        start = 0
        if kv_cache is not None:
            if not isinstance(kv_cache, KVCache) or len(kv_cache.layers) != self.cfg["n_layers"]:
                got = f"{len(kv_cache.layers)} layers" if isinstance(kv_cache, KVCache) else type(kv_cache).__name__
                raise ValueError(
                    f"kv_cache: expected a KVCache of {self.cfg['n_layers']} layers from new_kv_cache(), got {got}"
                )
            start = kv_cache.length
        limit = self.cfg["context_length"]
        if start + in_idx.shape[1] > limit:
            raise ValueError(
                f"in_idx: at most context_length={limit} tokens fit, got {in_idx.shape[1]}"
                + (f" after {start} cached" if start else "")
                + "; crop the input to its last tokens"
            )
        if in_idx.device.type == "cpu" or start == 0:
            low, high = torch.aminmax(in_idx)
            if low < 0 or high >= self.cfg["vocab_size"]:
                raise ValueError(
                    f"in_idx: token ids must lie in [0, {self.cfg['vocab_size'] - 1}], "
                    f"got values from {int(low)} to {int(high)}"
                )

    def hidden_states(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Everything but the output head: token ids ``(batch, tokens)`` to normalized vectors
        ``(batch, tokens, emb_dim)``.

        With ``kv_cache``, ``in_idx`` holds only the new tokens; their positions follow the cached ones.
        """
        self._check_input(in_idx, kv_cache)
        start = kv_cache.length if kv_cache is not None else 0
        positions = torch.arange(start, start + in_idx.shape[1], device=in_idx.device)
        x = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))
        for i, block in enumerate(self.trf_blocks):
            x = block(x, kv_cache.layers[i] if kv_cache is not None else None)
        return self.final_norm(x)

    def forward(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Next-token logits ``(batch, tokens, vocab_size)`` for token ids ``(batch, tokens)``."""
        return self.out_head(self.hidden_states(in_idx, kv_cache))


def count_parameters(model: nn.Module, include_out_head: bool = True) -> int:
    """Number of distinct trainable numbers in ``model``; shared (tied) tensors count once.

    ``include_out_head=False`` leaves out the output head, which is what GPT-2's 124M figure counts.
    """
    params = {id(p): p for p in model.parameters()}
    if not include_out_head:
        shared = {id(p) for name, p in model.named_parameters() if not name.startswith("out_head.")}
        for p in model.out_head.parameters():
            if id(p) not in shared:
                params.pop(id(p), None)
    return sum(p.numel() for p in params.values())


def model_memory_bytes(model: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes the parameters occupy, in their own dtype or as if stored in ``dtype``.

    Training needs about four times this (weights, gradients and AdamW's two moment estimates).
    """
    params = {id(p): p for p in model.parameters()}.values()
    return sum(
        p.numel() * (torch.empty((), dtype=dtype).element_size() if dtype else p.element_size()) for p in params
    )
