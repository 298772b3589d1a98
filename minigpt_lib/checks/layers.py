"""Checks for chapters 3 and 4: layer norm, GELU and the feed-forward network."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import GELU, FeedForward, LayerNorm
from ._common import (
    CHECK_CONFIG,
    CheckError,
    assert_close,
    build_learner,
    call_learner,
    copy_parameters,
    reference_module,
    seeded_randn,
    success,
)


def check_layer_norm(layer_norm_cls: Callable[[int], nn.Module]) -> None:
    """Check a LayerNorm class (constructor ``(emb_dim)``, parameters ``scale`` and ``shift``).

    Runs on ordinary tokens and on tokens with a tiny spread (variance ~1e-6), where ``eps`` matters.
    """
    emb_dim = 8
    reference = reference_module(LayerNorm, (emb_dim,), seed=1)
    learner = build_learner(layer_norm_cls, (emb_dim,), "layer_norm_cls")
    copy_parameters(learner, reference, "layer_norm_cls")
    ordinary = 2.0 * seeded_randn(2, 3, emb_dim, seed=2) + 0.5
    tiny = 1e-3 * seeded_randn(1, 2, emb_dim, seed=3) + 3.0
    scale, shift, eps = reference.scale.detach(), reference.shift.detach(), 1e-5
    # Expected values come from a float64 copy of the reference. On the small-spread input float32 itself
    # is only good to about ulp(3.0) / std = 2.4e-7 / 1e-3 = 2.4e-4 (F.layer_norm there is 5e-5 off), so
    # that case gets atol=5e-4, still far below what a misplaced or missing eps changes (a factor ~3).
    reference64 = copy.deepcopy(reference).double()
    cases = (("ordinary input", ordinary, 1e-5), ("input with variance ~1e-6", tiny, 5e-4))
    for label, x, atol in cases:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        with torch.no_grad():
            got = call_learner(learner, (x.clone(),), f"layer_norm({label})")
            expected = reference64(x.double()).float()
        assert_close(
            got,
            expected,
            f"LayerNorm output on {label}",
            atol=atol,
            variants={
                "looks like you used the unbiased variance (divide by emb_dim - 1); "
                "layer norm uses unbiased=False": scale * (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps)
                + shift,
                "eps is added outside the square root; GPT-2 computes sqrt(var + eps)": scale
                * (x - mean)
                / (torch.sqrt(var) + eps)
                + shift,
                "eps is missing: divide by sqrt(var + eps)": scale * (x - mean) / torch.sqrt(var) + shift,
                "scale and shift are not applied": (x - mean) / torch.sqrt(var + eps),
                "the mean is not subtracted": scale * x / torch.sqrt(var + eps) + shift,
                "looks like the standard deviation was used where the variance belongs: "
                "divide by sqrt(var + eps)": scale * (x - mean) / torch.sqrt(torch.sqrt(var) + eps) + shift,
            },
        )
    success("LayerNorm")


def _as_activation(gelu: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """A GELU given as a function, a module, or a module class."""
    if isinstance(gelu, type):
        return build_learner(gelu, (), "gelu")
    if callable(gelu):
        return gelu
    raise CheckError(f"gelu: expected a function, an nn.Module or an nn.Module class, got {type(gelu).__name__}")


def check_gelu(gelu: Any) -> None:
    """Check a GELU (function, module or module class) against the tanh approximation GPT-2 uses.

    Evaluates it at 161 points from -8 to 8.
    """
    fn = _as_activation(gelu)
    x = torch.linspace(-8, 8, 161)
    expected = GELU()(x)
    got = call_learner(fn, (x.clone(),), "gelu(x)")
    c = math.sqrt(2 / math.pi)
    assert_close(
        got,
        expected,
        "GELU output",
        variants={
            "this is the exact (erf) GELU; GPT-2 uses the tanh approximation": F.gelu(x),
            "this is ReLU: GELU lets small negative values through": torch.relu(x),
            "twice the expected values: the factor 0.5 is missing": 2 * expected,
            "x² instead of x³ inside the tanh": 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * x**2))),
            "the factor sqrt(2/π) inside the tanh is missing": 0.5 * x * (1 + torch.tanh(x + 0.044715 * x**3)),
            "this is the sigmoid approximation x·σ(1.702x); use the tanh formula": x * torch.sigmoid(1.702 * x),
        },
    )
    success("GELU")


def check_feed_forward(ff_cls: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Check a FeedForward class (constructor ``(cfg)``, submodule ``layers`` = Linear, GELU, Linear).

    The reference weights are copied in by name (``layers.0.*``, ``layers.2.*``) before comparing.
    """
    cfg = dict(CHECK_CONFIG)
    reference = reference_module(FeedForward, (cfg,), seed=4)
    learner = build_learner(ff_cls, (cfg,), "ff_cls")
    copy_parameters(learner, reference, "ff_cls")
    x = seeded_randn(2, 3, cfg["emb_dim"], seed=5)
    with torch.no_grad():
        got = call_learner(learner, (x.clone(),), "feed_forward(x)")
        expected = reference(x)
        first, second = reference.layers[0], reference.layers[2]
        variants = {
            "looks like ReLU between the two linear layers; GPT-2 uses GELU": second(torch.relu(first(x))),
            "looks like the exact (erf) GELU; GPT-2 uses the tanh approximation": second(F.gelu(first(x))),
            "no activation between the two linear layers": second(first(x)),
        }
    assert_close(got, expected, "FeedForward output", variants=variants)
    success("FeedForward")
