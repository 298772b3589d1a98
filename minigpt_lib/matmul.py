"""Linear layers whose float32 products run on oneDNN on x86 CPUs: equal results to rounding, about twice the speed.

PyTorch sends float32 CPU matrix products to MKL, which on AMD processors runs its AVX2 code even where the
chip has AVX-512; oneDNN (also inside PyTorch) picks its kernels from the instruction set alone. On the
AVX-512 machines this book was built on, oneDNN multiplies about 2x faster in training and streams weights
about 1.5x faster in token-by-token generation. Results agree with ``F.linear`` to float32 rounding (the
sums are added in a different order). Everything else (GPUs, bf16, autocast, other CPUs) uses ``F.linear``.
"""

from __future__ import annotations

import platform

import torch
import torch.nn as nn
import torch.nn.functional as F


def _onednn_works() -> bool:
    """True on an x86 build of PyTorch whose oneDNN linear kernel runs and agrees with ``F.linear``."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        a, b = torch.arange(12.0).view(3, 4) / 7, torch.arange(20.0).view(5, 4) / 3  # no draw from torch's RNG
        return bool(torch.allclose(torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""), a @ b.T))
    except (AttributeError, RuntimeError):
        return False


_available = _onednn_works()
_enabled = _available


def use_onednn(enabled: bool) -> bool:
    """Turn the oneDNN path on or off for every :class:`Linear` (e.g. to compare speeds); returns the old setting.

    Turning it on where oneDNN is unavailable leaves it off.
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled: expected True or False, got {enabled!r}")
    previous, _enabled = _enabled, enabled and _available
    return previous


def onednn_enabled() -> bool:
    """Whether float32 CPU products currently go through oneDNN."""
    return _enabled


def mm_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` on oneDNN for 2-D ``a`` ``(m, k)`` and ``b`` ``(n, k)``; see :func:`uses_onednn` first."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def uses_onednn(*tensors: torch.Tensor | None) -> bool:
    """oneDNN takes a product when it is on and every operand is a float32 CPU tensor outside autocast."""
    return (
        _enabled
        and not torch.is_autocast_enabled("cpu")
        and all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors)
    )


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` with its three gradients, every product on oneDNN."""

    @staticmethod
    def forward(ctx, x2d, weight, bias):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x2d, weight)
        ctx.has_bias = bias is not None
        return mm_t(x2d, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x2d, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = mm_t(grad_out, weight.T)  # (m, n) @ (n, k)
        if ctx.needs_input_grad[1]:
            grad_w = mm_t(grad_out.T, x2d.T)  # (n, m) @ (m, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, computed on oneDNN for float32 CPU tensors when that is on."""
    shapes_fit = x.dim() >= 1 and weight.dim() == 2 and x.shape[-1] == weight.shape[1]
    if not (shapes_fit and uses_onednn(x, weight, bias)) or (bias is not None and bias.shape != weight.shape[:1]):
        return F.linear(x, weight, bias)  # also where shapes do not fit: PyTorch's error names them
    x2d = x.reshape(-1, x.shape[-1])
    wants_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and wants_grad:
        out = _OneDNNLinear.apply(x2d, weight, bias)
    else:
        out = mm_t(x2d, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` that multiplies with :func:`linear`: same parameters and state_dict keys, values equal to
    float32 rounding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
