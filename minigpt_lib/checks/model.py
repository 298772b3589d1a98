"""Checks for chapters 5 and 7: the transformer block with its shortcuts, and counting a model's parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ..model import GPTModel, TransformerBlock, count_parameters
from ._common import (
    CHECK_CONFIG,
    CheckError,
    as_int,
    assert_close,
    build_learner,
    call_learner,
    copy_parameters,
    reference_module,
    seeded_randn,
    success,
)


def check_shortcut_block(block_cls: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Check a TransformerBlock re-implementation (constructor ``(cfg)``; ``att, ff, norm1, norm2, drop_shortcut``).

    Compared in eval mode (dropout off) with the reference's weights copied in by name.
    """
    cfg = dict(CHECK_CONFIG)
    reference = reference_module(TransformerBlock, (cfg,), seed=6)
    learner = build_learner(block_cls, (cfg,), "block_cls")
    missing = [n for n in ("att", "ff", "norm1", "norm2", "drop_shortcut") if not hasattr(learner, n)]
    if missing:
        raise CheckError(
            f"block_cls: missing attribute(s) {missing}; the block needs att, ff, norm1, norm2 and drop_shortcut"
        )
    copy_parameters(learner, reference, "block_cls")
    x = seeded_randn(2, 5, cfg["emb_dim"], seed=7)
    with torch.no_grad():
        got = call_learner(learner, (x.clone(),), "block(x)")
        expected = reference(x)
        att, ff, n1, n2 = reference.att, reference.ff, reference.norm1, reference.norm2
        h = x + att(n1(x))
        variants = {
            "no shortcut connections: add each branch's output to its input (x = x + att(norm1(x)))": ff(
                n2(att(n1(x)))
            ),
            "post-norm: GPT-2 normalizes the input of each branch, not the sum (x + att(norm1(x)))": n2(
                n1(x + att(x)) + ff(n1(x + att(x)))
            ),
            "norm1 is used before the feed-forward too; that branch needs norm2": h + ff(n1(h)),
            "only the attention branch has a shortcut": ff(n2(h)),
            "only the feed-forward branch has a shortcut": att(n1(x)) + ff(n2(att(n1(x)))),
        }
    assert_close(got, expected, "TransformerBlock output", variants=variants)
    success("TransformerBlock")


def check_count_parameters(count_fn: Callable[[nn.Module], int]) -> None:
    """Check ``count_fn(model) -> int`` on small GPT models, with and without a tied output head.

    Shared (tied) tensors count once; the output head is included.
    """
    cfg = {**CHECK_CONFIG, "vocab_size": 100, "context_length": 16, "emb_dim": 16}
    for tied in (False, True):
        with torch.random.fork_rng(devices=[]):
            model = GPTModel({**cfg, "tie_weights": tied})
        what = f"count_fn(GPTModel with tie_weights={tied})"
        got = as_int(call_learner(count_fn, (model,), what), what)
        expected = count_parameters(model)
        if got == expected:
            continue
        head = model.out_head.weight.numel()
        hints = {
            expected - head: "the output head is left out; count every parameter of the model",
            expected + head: "the tied output head is counted twice: it shares the embedding matrix, count it once",
            len(list(model.parameters())): "that is the number of parameter tensors: sum p.numel() over them",
        }
        hint = f"\n  hint: {hints[got]}" if got in hints else ""
        raise CheckError(f"{what}: expected {expected:,} parameters, got {got:,}" + hint)
    success("parameter count")
