"""The building blocks inside a transformer block: layer normalization, GELU and the feed-forward network."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """Normalize each token vector to mean 0 and variance 1, then apply a learned scale and shift.

    Uses the biased variance (divide by ``emb_dim``) and ``eps`` inside the square root, as GPT-2 does.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel computing scale * (x - mean) / sqrt(var + eps) + shift over the last dimension.
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU activation in the tanh approximation GPT-2 was trained with.

    Computes 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in one fused kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Expand each token vector to 4 × emb_dim, apply GELU, and project back to emb_dim.

    Works token by token: shape ``(batch, tokens, emb_dim)`` in and out.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
