"""The building blocks of GPT: layer normalization, GELU, the feed-forward network and the output-head loss."""

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


class _LinearCrossEntropy(torch.autograd.Function):
    """Output head + cross-entropy, a few rows at a time, with the gradients computed on the way forward.

    The plain path keeps ``(rows, vocab)`` logits, their log-softmax and two gradients of that size in
    memory; here each chunk's logits are turned into the loss and into their gradient
    ``softmax - one_hot`` at once, while they are still in cache, and then dropped. The gradients are
    computed once, outside autograd, so a second derivative through this loss is refused (see ``backward``).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size, ignore_index):  # noqa: ANN001, ANN205
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        device = hidden.device.type
        # Under autocast the matmuls run in the low-precision dtype; softmax and sums stay in float32.
        mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        acc_dtype = torch.promote_types(hidden.dtype, torch.float32)
        valid = targets != ignore_index
        n_valid = valid.sum().clamp(min=1)
        safe_targets = targets.masked_fill(~valid, 0).unsqueeze(1)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = None
        total = hidden.new_zeros((), dtype=acc_dtype)
        with torch.autocast(device, enabled=False):
            w = weight.to(mm_dtype)
            for start in range(0, hidden.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                h = hidden[rows].to(mm_dtype)
                logits = (h @ w.T).to(acc_dtype)
                target_logits = logits.gather(1, safe_targets[rows]).squeeze(1)
                # One pass of exp, in place of the logits: e = exp(logits - max), logsumexp = max + log(sum(e)).
                row_max = logits.amax(dim=1, keepdim=True)
                exps = logits.sub_(row_max).exp_()
                row_sum = exps.sum(dim=1, keepdim=True)
                weight_per_row = valid[rows].to(acc_dtype).unsqueeze(1) / n_valid  # 1/n, or 0 for ignored rows
                total += ((row_max + row_sum.log()).squeeze(1) - target_logits) @ weight_per_row.squeeze(1)
                if not (need_hidden or need_weight):
                    continue
                # d loss / d logits = (softmax - one_hot(target)) / n, row by row.
                grad = exps.mul_(weight_per_row / row_sum)
                grad = grad.scatter_add_(1, safe_targets[rows], -weight_per_row).to(mm_dtype)
                if need_hidden:
                    grad_hidden[rows] = grad @ w
                if need_weight:
                    if grad_weight is None:
                        grad_weight = (grad.T @ h).to(weight.dtype)
                    elif grad_weight.dtype == mm_dtype:
                        grad_weight.addmm_(grad.T, h)  # in place: no temporary of the weight's size
                    else:
                        grad_weight += grad.T @ h
        if need_weight and grad_weight is None:  # no rows at all
            grad_weight = torch.zeros_like(weight)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205
        if torch.is_grad_enabled():  # backward(create_graph=True): the stored gradients carry no graph
            raise RuntimeError(
                "linear_cross_entropy: higher-order gradients are not supported (its gradients are computed "
                "without a graph); compute F.cross_entropy on the model's logits instead"
            )
        # loss.backward() passes 1: on a CPU, hand the stored gradients over instead of copying them (on a GPU
        # the copy is cheap and reading the value would make the CPU wait for the GPU).
        scale = None if grad_output.device.type == "cpu" and bool(grad_output == 1) else grad_output
        grads = [g if g is None or scale is None else g * scale for g in ctx.saved_tensors]
        return grads[0], grads[1], None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 512,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, without materializing all the logits.

    Same value and gradients as ``F.cross_entropy(hidden @ weight.T, targets)`` for ``hidden`` ``(rows,
    emb_dim)``, ``weight`` ``(vocab, emb_dim)`` and ``targets`` ``(rows,)``; it only ever holds
    ``(chunk_size, vocab)`` logits, which saves memory and time when the vocabulary is large.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden, weight: expected (rows, d) and (vocab, d), got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets: expected shape ({hidden.shape[0]},), got {tuple(targets.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_size, ignore_index)
