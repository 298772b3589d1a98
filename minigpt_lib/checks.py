"""Exercise checks: run a learner's implementation next to the package's reference and say what differs.

Every check builds its inputs from fixed seeds with a local ``torch.Generator`` (the global random state
is left as it was), prints ``✓ <what> matches the reference`` on success and raises :class:`CheckError`
naming the shape, dtype or first differing element, with a hint when the mistake is a familiar one.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention
from .generate import filter_logits
from .layers import GELU, FeedForward, LayerNorm
from .model import GPTModel, TransformerBlock, count_parameters
from .tokenizer import get_tokenizer

#: A transformer configuration small enough for instant checks (dropout is switched off by eval mode).
CHECK_CONFIG: dict[str, Any] = {
    "vocab_size": 50,
    "context_length": 8,
    "emb_dim": 8,
    "n_heads": 2,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}


class CheckError(AssertionError):
    """A learner's implementation disagrees with the reference; the message says where and how."""


# ---------------------------------------------------------------------------------------------------------
# Comparison machinery
# ---------------------------------------------------------------------------------------------------------


def _randn(*shape: int, seed: int) -> torch.Tensor:
    """Standard normal numbers from a private generator, so the global random state is untouched."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _fmt_index(index: Sequence[int]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _matches(got: torch.Tensor, candidate: torch.Tensor, atol: float, rtol: float) -> bool:
    """True when ``got`` equals ``candidate`` in shape and (within tolerance) in every value."""
    if got.shape != candidate.shape:
        return False
    got, candidate = got.detach().double(), candidate.detach().double()
    return bool(torch.allclose(got, candidate, atol=atol, rtol=rtol, equal_nan=True))


def _hint_for(got: torch.Tensor, variants: dict[str, torch.Tensor] | None, atol: float, rtol: float) -> str:
    """The hint of the first known wrong variant that ``got`` reproduces, or ''."""
    for hint, candidate in (variants or {}).items():
        if _matches(got, candidate, atol, rtol):
            return f"\n  hint: {hint}"
    return ""


def _assert_close(
    got: Any,
    expected: torch.Tensor,
    name: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    variants: dict[str, torch.Tensor] | None = None,
) -> None:
    """Raise :class:`CheckError` unless ``got`` has ``expected``'s type, shape, dtype and values.

    ``variants`` maps a hint to the output a known mistake would produce; a matching one is added to the
    message. Infinities must sit at the same places (and have the same sign) in both tensors.
    """
    if not isinstance(got, torch.Tensor):
        raise CheckError(f"{name}: expected a torch.Tensor, got {type(got).__name__}")
    if got.shape != expected.shape:
        raise CheckError(
            f"{name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
            + _hint_for(got, variants, atol, rtol)
        )
    if got.dtype != expected.dtype:
        raise CheckError(f"{name}: expected dtype {expected.dtype}, got {got.dtype}")
    got_d, exp_d = got.detach().double().cpu(), expected.detach().double().cpu()
    hint = _hint_for(got, variants, atol, rtol)
    nan = torch.isnan(got_d) & ~torch.isnan(exp_d)
    if nan.any():
        index = _fmt_index(nan.nonzero()[0].tolist())
        raise CheckError(
            f"{name}: {int(nan.sum())} NaN value(s), first at index {index} "
            f"(expected {exp_d[tuple(nan.nonzero()[0])].item():.6g})" + hint
        )
    close = torch.isclose(got_d, exp_d, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        first = tuple(close.logical_not().nonzero()[0].tolist())
        finite = torch.isfinite(got_d) & torch.isfinite(exp_d)
        diff = (got_d - exp_d).abs().where(finite, torch.zeros_like(got_d))
        raise CheckError(
            f"{name}: {int((~close).sum())} of {close.numel()} values differ; first at index "
            f"{_fmt_index(first)}: expected {exp_d[first].item():.6g}, got {got_d[first].item():.6g} "
            f"(largest finite difference {diff.max().item():.3g}; tolerance atol={atol:g}, rtol={rtol:g})" + hint
        )


def _call(fn: Callable[..., Any], args: tuple, what: str, kwargs: dict[str, Any] | None = None) -> Any:
    """Call the learner's code; turn a crash into a :class:`CheckError` that says on which input."""
    try:
        return fn(*args, **(kwargs or {}))
    except CheckError:
        raise
    except Exception as exc:
        raise CheckError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _build(cls: Callable[..., nn.Module], args: tuple, what: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate a learner's module with the global random state saved and restored around it."""
    shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = _call(cls, args, f"{what}({shown})", kwargs)
    if not isinstance(module, nn.Module):
        raise CheckError(f"{what}: expected an nn.Module subclass, got {type(module).__name__}")
    return module


def _reference(cls: Callable[..., nn.Module], args: tuple, seed: int, kwargs: dict | None = None) -> nn.Module:
    """Build a reference module and fill every parameter with seeded random values (scales near 1)."""
    with torch.random.fork_rng(devices=[]):
        module = cls(*args, **(kwargs or {}))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if name.endswith("scale") else 0.4 * noise)
    return module.eval()


def _copy_parameters(learner: nn.Module, reference: nn.Module, what: str) -> None:
    """Copy the reference's parameters into the learner's module by name; explain missing or odd names."""
    ref_params = dict(reference.named_parameters())
    got_params = dict(learner.named_parameters())
    missing = [n for n in ref_params if n not in got_params]
    extra = [n for n in got_params if n not in ref_params]
    if missing or extra:
        expected = ", ".join(f"{n} {tuple(p.shape)}" for n, p in ref_params.items())
        found = ", ".join(f"{n} {tuple(p.shape)}" for n, p in got_params.items()) or "none"
        raise CheckError(
            f"{what}: parameter names differ from the reference, so its weights cannot be copied in.\n"
            f"  missing: {missing or 'none'}\n  unexpected: {extra or 'none'}\n"
            f"  expected parameters: {expected}\n  found: {found}"
        )
    for n, p in ref_params.items():
        if got_params[n].shape != p.shape:
            raise CheckError(f"{what}: parameter {n} has shape {tuple(got_params[n].shape)}, expected {tuple(p.shape)}")
    with torch.no_grad():
        for n, p in ref_params.items():
            got_params[n].copy_(p)
    learner.eval()


def _success(what: str) -> None:
    print(f"✓ {what} matches the reference")


def check_close(
    got: torch.Tensor, expected: torch.Tensor, name: str = "output", atol: float = 1e-5, rtol: float = 1e-4
) -> None:
    """Compare two tensors: shape, dtype, then values element by element within ``atol + rtol·|expected|``.

    The building block of every other check; use it directly to compare any result of your own.
    """
    if not isinstance(expected, torch.Tensor):
        raise TypeError(f"expected: expected a torch.Tensor, got {type(expected).__name__}")
    _assert_close(got, expected, name, atol, rtol)
    _success(name)


# ---------------------------------------------------------------------------------------------------------
# Chapter 1: tokens and windows
# ---------------------------------------------------------------------------------------------------------

_TOKEN_TEXTS = (
    "Every effort moves you",
    "Hello, do you like tea? In the sunlit terraces of someunknownPlace.",
    "  Two spaces, 1234 digits, a tab\tand a newline\nend.",
)


def _as_id_list(ids: Any, what: str) -> list[int]:
    """Accept a list/tuple of ints or an integer tensor of shape (n,) or (1, n)."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1 or ids.dtype.is_floating_point:
            raise CheckError(
                f"{what}: expected integer ids of shape (n,) or (1, n), got {ids.dtype} {tuple(ids.shape)}"
            )
        return ids.tolist()
    if isinstance(ids, (list, tuple)) and all(isinstance(i, numbers.Integral) for i in ids):
        return [int(i) for i in ids]
    raise CheckError(f"{what}: expected a list of int token ids or a tensor, got {type(ids).__name__}")


def check_token_ids(encode_fn: Callable[[str], Any]) -> None:
    """Check a GPT-2 BPE encoder ``encode_fn(text) -> ids`` against tiktoken's ``gpt2`` encoding.

    Compares the ids of a few sentences (spaces, punctuation, digits, an unknown word) token by token.
    """
    tokenizer = get_tokenizer("gpt2")
    for text in _TOKEN_TEXTS:
        what = f"encode_fn({text!r})"
        got = _as_id_list(_call(encode_fn, (text,), what), what)
        expected = tokenizer.encode(text)
        if got == expected:
            continue
        hint = ""
        if len(got) == len(text):
            hint = "\n  hint: one id per character: that is a character-level tokenizer, not GPT-2's BPE"
        elif len(got) == len(text.split()):
            hint = "\n  hint: one id per whitespace-separated word: BPE splits words into subword pieces"
        pos = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected))
        )
        exp_piece = repr(tokenizer.decode([expected[pos]])) if pos < len(expected) else "end of text"
        got_id = got[pos] if pos < len(got) else None
        if got_id is None:
            got_piece = "end of ids"
        elif 0 <= got_id < tokenizer.n_vocab:
            got_piece = f"{got_id} = {tokenizer.decode([got_id])!r}"
        else:
            got_piece = f"{got_id} (outside the GPT-2 vocabulary 0..{tokenizer.n_vocab - 1})"
        raise CheckError(
            f"{what}: expected {len(expected)} ids {expected}, got {len(got)} ids {got}; first difference at "
            f"position {pos}: expected {expected[pos] if pos < len(expected) else None} = {exp_piece}, "
            f"got {got_piece}" + hint
        )
    _success("GPT-2 tokenizer")


def _reference_windows(ids: list[int], max_length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows as :class:`~minigpt_lib.data.GPTDataset` makes them: start i·stride, targets shifted by one."""
    starts = range(0, len(ids) - max_length, stride)
    inputs = torch.tensor([ids[s : s + max_length] for s in starts])
    targets = torch.tensor([ids[s + 1 : s + max_length + 1] for s in starts])
    return inputs, targets


def _as_long_matrix(x: Any, what: str) -> torch.Tensor:
    """A window batch as a (windows, max_length) long tensor; lists of rows or of tensors are stacked."""
    if isinstance(x, (list, tuple)):
        try:
            x = torch.stack([torch.as_tensor(row) for row in x]) if x else torch.empty(0, 0, dtype=torch.long)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CheckError(f"{what}: could not stack the windows into one tensor ({exc})") from exc
    if not isinstance(x, torch.Tensor):
        raise CheckError(f"{what}: expected a tensor of shape (windows, max_length), got {type(x).__name__}")
    if x.dtype.is_floating_point:
        raise CheckError(f"{what}: expected integer token ids, got dtype {x.dtype}")
    return x.long()


def check_sliding_windows(make_windows: Callable[[list[int], int, int], tuple[Any, Any]]) -> None:
    """Check ``make_windows(ids, max_length, stride) -> (inputs, targets)`` on a list of token ids.

    Window ``i`` must start at ``i * stride``; targets are the inputs shifted one token to the right.
    """
    ids = list(range(100, 121))  # 21 distinct ids: the value shows the position (id - 100)
    for max_length, stride in ((4, 4), (4, 1), (5, 3), (8, 2)):
        what = f"make_windows(ids of length {len(ids)}, max_length={max_length}, stride={stride})"
        result = _call(make_windows, (list(ids), max_length, stride), what)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise CheckError(f"{what}: expected a pair (inputs, targets), got {type(result).__name__}")
        inputs = _as_long_matrix(result[0], f"{what} inputs")
        targets = _as_long_matrix(result[1], f"{what} targets")
        exp_in, exp_tg = _reference_windows(ids, max_length, stride)
        n_exp = exp_in.shape[0]
        if inputs.shape[0] != n_exp:
            hint = ""
            if inputs.shape[0] == n_exp - 1:
                hint = (
                    "one window short: the last start is len(ids) - max_length - 1 "
                    "(range(0, len(ids) - max_length, stride))"
                )
            elif inputs.shape[0] == n_exp + 1:
                hint = "one window too many: its target would run past the end of ids"
            raise CheckError(
                f"{what}: expected {n_exp} windows (starts {list(range(0, len(ids) - max_length, stride))}), "
                f"got {inputs.shape[0]}" + (f"\n  hint: {hint}" if hint else "")
            )
        _assert_close(
            inputs,
            exp_in,
            f"{what} inputs",
            atol=0,
            rtol=0,
            variants={
                "windows start one token apart: advance the start by stride, not by 1": torch.stack(
                    [torch.tensor(ids[i : i + max_length]) for i in range(n_exp)]
                ),
            },
        )
        _assert_close(
            targets,
            exp_tg,
            f"{what} targets",
            atol=0,
            rtol=0,
            variants={
                "targets equal the inputs: shift them one token to the right (ids[i+1 : i+max_length+1])": exp_in,
                "targets are shifted by two tokens instead of one": exp_tg + 1,
            },
        )
    _success("sliding-window function")


# ---------------------------------------------------------------------------------------------------------
# Chapters 3-5: layer norm, GELU, feed-forward, transformer block
# ---------------------------------------------------------------------------------------------------------


def check_layer_norm(layer_norm_cls: Callable[[int], nn.Module]) -> None:
    """Check a LayerNorm class (constructor ``(emb_dim)``, parameters ``scale`` and ``shift``).

    Runs on ordinary tokens and on tokens with a tiny spread (variance ~1e-6), where ``eps`` matters.
    """
    emb_dim = 8
    reference = _reference(LayerNorm, (emb_dim,), seed=1)
    learner = _build(layer_norm_cls, (emb_dim,), "layer_norm_cls")
    _copy_parameters(learner, reference, "layer_norm_cls")
    ordinary = 2.0 * _randn(2, 3, emb_dim, seed=2) + 0.5
    tiny = 1e-3 * _randn(1, 2, emb_dim, seed=3) + 3.0
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
            got = _call(learner, (x.clone(),), f"layer_norm({label})")
            expected = reference64(x.double()).float()
        _assert_close(
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
    _success("LayerNorm")


def _as_activation(gelu: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """A GELU given as a function, a module, or a module class."""
    if isinstance(gelu, type):
        return _build(gelu, (), "gelu")
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
    got = _call(fn, (x.clone(),), "gelu(x)")
    c = math.sqrt(2 / math.pi)
    _assert_close(
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
    _success("GELU")


def check_feed_forward(ff_cls: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Check a FeedForward class (constructor ``(cfg)``, submodule ``layers`` = Linear, GELU, Linear).

    The reference weights are copied in by name (``layers.0.*``, ``layers.2.*``) before comparing.
    """
    cfg = dict(CHECK_CONFIG)
    reference = _reference(FeedForward, (cfg,), seed=4)
    learner = _build(ff_cls, (cfg,), "ff_cls")
    _copy_parameters(learner, reference, "ff_cls")
    x = _randn(2, 3, cfg["emb_dim"], seed=5)
    with torch.no_grad():
        got = _call(learner, (x.clone(),), "feed_forward(x)")
        expected = reference(x)
        first, second = reference.layers[0], reference.layers[2]
        variants = {
            "looks like ReLU between the two linear layers; GPT-2 uses GELU": second(torch.relu(first(x))),
            "looks like the exact (erf) GELU; GPT-2 uses the tanh approximation": second(F.gelu(first(x))),
            "no activation between the two linear layers": second(first(x)),
        }
    _assert_close(got, expected, "FeedForward output", variants=variants)
    _success("FeedForward")


def check_shortcut_block(block_cls: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Check a TransformerBlock re-implementation (constructor ``(cfg)``; ``att, ff, norm1, norm2, drop_shortcut``).

    Compared in eval mode (dropout off) with the reference's weights copied in by name.
    """
    cfg = dict(CHECK_CONFIG)
    reference = _reference(TransformerBlock, (cfg,), seed=6)
    learner = _build(block_cls, (cfg,), "block_cls")
    missing = [n for n in ("att", "ff", "norm1", "norm2", "drop_shortcut") if not hasattr(learner, n)]
    if missing:
        raise CheckError(
            f"block_cls: missing attribute(s) {missing}; the block needs att, ff, norm1, norm2 and drop_shortcut"
        )
    _copy_parameters(learner, reference, "block_cls")
    x = _randn(2, 5, cfg["emb_dim"], seed=7)
    with torch.no_grad():
        got = _call(learner, (x.clone(),), "block(x)")
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
    _assert_close(got, expected, "TransformerBlock output", variants=variants)
    _success("TransformerBlock")


# ---------------------------------------------------------------------------------------------------------
# Chapter 6: attention
# ---------------------------------------------------------------------------------------------------------


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
    queries, keys = _randn(2, 6, 6, seed=8), _randn(2, 6, 6, seed=9)
    candidates = _attention_weights(queries, keys)
    expected_w = candidates.pop("reference")
    eye = torch.eye(6).expand(2, 6, 6).clone()
    what = "attention_fn(queries, keys, values=identity)"
    weights = _call(attention_fn, (queries.clone(), keys.clone(), eye), what)
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
                + _hint_for(weights, candidates, 1e-5, 1e-4)
            )
        sums = w.sum(dim=-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            b, i = (sums - 1).abs().gt(1e-4).nonzero()[0].tolist()
            raise CheckError(
                f"{what}: the weights of token {i} (batch {b}) sum to {sums[b, i].item():.4g}; probabilities "
                "don't sum to 1"
                + (
                    _hint_for(weights, candidates, 1e-5, 1e-4)
                    or "\n  hint: apply softmax over the last dimension after masking"
                )
            )
    _assert_close(weights, expected_w, f"{what} (= attention weights)", variants=candidates)
    values = _randn(2, 6, 6, seed=10)
    got = _call(attention_fn, (queries.clone(), keys.clone(), values.clone()), "attention_fn(queries, keys, values)")
    _assert_close(got, expected_w @ values, "context vectors")
    _success("causal attention")


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
    x = _randn(2, 5, d_in, seed=11)
    for seed, qkv_bias in ((12, False), (13, True)):
        args = (d_in, d_out, context_length, 0.0, heads)
        reference = _reference(MultiHeadAttention, args, seed=seed, kwargs={"qkv_bias": qkv_bias})
        learner = _build(mha_cls, args, "mha_cls", {"qkv_bias": True} if qkv_bias else None)
        _copy_parameters(learner, reference, f"mha_cls(..., qkv_bias={qkv_bias})")
        with torch.no_grad():
            got = _call(learner, (x.clone(),), "mha(x)")
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
        _assert_close(got, expected, f"MultiHeadAttention output (qkv_bias={qkv_bias})", variants=variants)
    _success("MultiHeadAttention")


# ---------------------------------------------------------------------------------------------------------
# Chapters 7-9: parameters, loss, learning-rate schedule, sampling
# ---------------------------------------------------------------------------------------------------------


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CheckError(f"{what}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


def check_count_parameters(count_fn: Callable[[nn.Module], int]) -> None:
    """Check ``count_fn(model) -> int`` on small GPT models, with and without a tied output head.

    Shared (tied) tensors count once; the output head is included.
    """
    cfg = {**CHECK_CONFIG, "vocab_size": 100, "context_length": 16, "emb_dim": 16}
    for tied in (False, True):
        with torch.random.fork_rng(devices=[]):
            model = GPTModel({**cfg, "tie_weights": tied})
        what = f"count_fn(GPTModel with tie_weights={tied})"
        got = _as_int(_call(count_fn, (model,), what), what)
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
    _success("parameter count")


def check_cross_entropy(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``loss_fn(logits, targets) -> scalar``: the mean next-token cross-entropy.

    ``logits`` is ``(batch=2, tokens=4, vocab=10)`` and ``targets`` ``(2, 4)``, as in the training loop.
    """
    logits = 3.0 * _randn(2, 4, 10, seed=14)
    targets = torch.randint(0, 10, (2, 4), generator=torch.Generator().manual_seed(15))
    got = _call(loss_fn, (logits.clone(), targets.clone()), "loss_fn(logits, targets)")
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    if isinstance(got, torch.Tensor) and got.shape != () and got.numel() == 1:
        raise CheckError(f"loss: expected a scalar (shape ()), got shape {tuple(got.shape)}; use .mean() or .squeeze()")
    picked = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    _assert_close(
        got,
        expected,
        "cross-entropy loss",
        variants={
            "looks like the sum over tokens; the loss is the mean": -picked.sum(),
            "the sign is flipped: cross-entropy is the negative mean log-probability": -expected,
            "this is exp(loss), the perplexity": expected.exp(),
            "log_softmax runs over the wrong dimension: normalize over the vocabulary (dim=-1)": -logits.log_softmax(1)
            .gather(-1, targets.unsqueeze(-1))
            .mean(),
            "probabilities instead of log-probabilities: take the log of the softmax": -picked.exp().mean(),
            "the log-softmax is missing: raw logits were averaged": -logits.gather(-1, targets.unsqueeze(-1)).mean(),
        },
    )
    _success("cross-entropy")


def _schedule_variants(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float) -> dict:
    """Learning rates that common schedule mistakes give at ``step``, keyed by the hint that explains them."""
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    decay = step >= warmup_steps
    return {
        "warm-up is off by one: step 0 should already use peak_lr / warmup_steps, i.e. peak_lr * (step + 1) / "
        "warmup_steps": min_lr + (peak_lr - min_lr) * cosine if decay else peak_lr * step / warmup_steps,
        "the decay is linear; the schedule uses a cosine from peak_lr down to min_lr": (
            min_lr + (peak_lr - min_lr) * (1.0 - min(progress, 1.0)) if decay else peak_lr * (step + 1) / warmup_steps
        ),
        "the cosine decays to 0 instead of to min_lr": (
            peak_lr * cosine if decay else peak_lr * (step + 1) / warmup_steps
        ),
        "the cosine runs over all total_steps; it should start after the warm-up (progress = (step - warmup_steps)"
        " / (total_steps - warmup_steps))": (
            min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0)))
            if decay
            else peak_lr * (step + 1) / warmup_steps
        ),
    }


def check_lr_schedule(lr_fn: Callable[..., float]) -> None:
    """Check ``lr_fn(step, total_steps, peak_lr, warmup_steps, min_lr)`` like :func:`minigpt_lib.train.lr_at_step`.

    Linear warm-up then cosine decay, compared at every step of two short runs (with and without warm-up).
    """
    from .train import lr_at_step  # imported here: training code is not needed by the other checks

    runs = (
        {"total_steps": 40, "peak_lr": 1e-3, "warmup_steps": 8, "min_lr": 1e-4},
        {"total_steps": 20, "peak_lr": 0.1, "warmup_steps": 0, "min_lr": 0.0},
    )
    for kwargs in runs:
        settings = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        got_curve, exp_curve = [], []
        for step in range(kwargs["total_steps"] + 1):
            what = f"lr_fn({step}, {settings})"
            got = _call(lr_fn, (step,), what, kwargs)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, numbers.Real):
                raise CheckError(f"{what}: expected a float learning rate, got {type(got).__name__} {got!r}")
            got_curve.append(float(got))
            exp_curve.append(lr_at_step(step, **kwargs))
        bad = [
            s for s, (g, e) in enumerate(zip(got_curve, exp_curve, strict=True)) if not math.isclose(g, e, rel_tol=1e-6)
        ]
        if bad:
            step = bad[0]
            hint = ""
            for text in _schedule_variants(0, **kwargs):
                curve = [_schedule_variants(s, **kwargs)[text] for s in range(len(got_curve))]
                if all(math.isclose(g, c, rel_tol=1e-6, abs_tol=1e-15) for g, c in zip(got_curve, curve, strict=True)):
                    hint = f"\n  hint: {text}"
                    break
            raise CheckError(
                f"lr_fn({step}, {settings}): expected learning rate {exp_curve[step]:.6g}, got {got_curve[step]:.6g} "
                f"({len(bad)} of {len(got_curve)} steps differ)" + hint
            )
    _success("learning-rate schedule")


def check_temperature(scale_fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``scale_fn(logits, temperature) -> probs``: softmax of the logits divided by the temperature.

    ``logits`` is ``(batch=2, vocab=7)``; temperatures 0.5, 1 and 2.
    """
    logits = 2.0 * _randn(2, 7, seed=16)
    for temperature in (0.5, 1.0, 2.0):
        what = f"scale_fn(logits, temperature={temperature})"
        got = _call(scale_fn, (logits.clone(), temperature), what)
        expected = torch.softmax(logits / temperature, dim=-1)
        variants = {
            "temperature applied as multiplication: divide the logits by the temperature": torch.softmax(
                logits * temperature, dim=-1
            ),
            "these are the scaled logits, not probabilities: apply softmax": logits / temperature,
            "softmax over the wrong dimension: normalize each row (dim=-1)": torch.softmax(logits / temperature, 0),
        }
        if temperature != 1.0:
            variants["the temperature has no effect: divide the logits by it before softmax"] = torch.softmax(
                logits, dim=-1
            )
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not got.dtype == torch.bool:
            sums = got.detach().double().sum(dim=-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
                raise CheckError(
                    f"{what}: probabilities don't sum to 1 (row sums {[round(s, 4) for s in sums.tolist()]})"
                    + (_hint_for(got, variants, 1e-5, 1e-4) or "\n  hint: apply softmax to the scaled logits")
                )
        _assert_close(got, expected, f"{what} probabilities", variants=variants)
    _success("temperature scaling")


def _check_filtered(got: Any, expected: torch.Tensor, logits: torch.Tensor, what: str, kept_hints: dict) -> None:
    """Compare filtered logits: same shape, -inf at the same places, kept logits unchanged."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        _assert_close(got, expected, what)
    n_exp = torch.isfinite(expected).sum(dim=-1)
    n_got = torch.isfinite(got).sum(dim=-1)
    if (n_got != n_exp).any():
        row = int((n_got != n_exp).nonzero()[0])
        diff = int(n_got[row] - n_exp[row])
        hint = kept_hints.get(diff, "")
        if n_got[row] == got.shape[-1] and torch.isfinite(expected[row]).sum() < got.shape[-1]:
            hint = "nothing was set to -inf: removed tokens must get -inf so that softmax gives them probability 0"
        raise CheckError(
            f"{what}: row {row} keeps {int(n_got[row])} tokens, expected {int(n_exp[row])}"
            + (f"\n  hint: {hint}" if hint else "")
        )
    kept_exp, kept_got = torch.isfinite(expected), torch.isfinite(got)
    if (kept_exp != kept_got).any():
        row, col = (kept_exp != kept_got).nonzero()[0].tolist()
        sorted_ok = torch.equal(kept_got, torch.isfinite(torch.sort(expected, dim=-1, descending=True).values))
        hint = (
            "\n  hint: the logits come back sorted; keep each logit at its position in the vocabulary"
            if sorted_ok
            else ""
        )
        state = "kept" if kept_got[row, col] else "removed"
        raise CheckError(
            f"{what}: row {row}, token {col} (logit {logits[row, col].item():.4g}) is {state}, expected the opposite"
            + hint
        )
    if not (got[~kept_got] == float("-inf")).all():
        raise CheckError(f"{what}: removed tokens must be -inf, got {got[~kept_got].unique().tolist()}")
    try:
        _assert_close(got, expected, what)
    except CheckError as exc:
        raise CheckError(
            f"{exc}\n  hint: the kept logits changed: leave them as they are, only set the others to -inf"
        ) from None


def _distinct_logits(seed: int) -> torch.Tensor:
    """(2, 10) logits without ties: a shuffled ladder of values, so top-k has one right answer."""
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(10, generator=gen).float() * 0.7 - 3.0 for _ in range(2)]
    return torch.stack(rows)


def check_top_k(filter_fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``filter_fn(logits, k) -> logits``: keep the ``k`` largest logits per row, set the rest to -inf.

    ``logits`` is ``(batch=2, vocab=10)`` without ties; k = 1, 3 and 10.
    """
    logits = _distinct_logits(seed=17)
    for k in (1, 3, 10):
        what = f"filter_fn(logits, k={k})"
        got = _call(filter_fn, (logits.clone(), k), what)
        kept_hints = {
            1: "keeps k+1 tokens: compare with the k-th largest value (topk(...).values[:, -1]) and drop "
            "logits strictly below it",
            -1: "keeps k-1 tokens: the k-th largest logit itself must stay (use <, not <=)",
        }
        _check_filtered(got, filter_logits(logits, top_k=k), logits, what, kept_hints)
    _success("top-k filtering")


def check_top_p(filter_fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``filter_fn(logits, p) -> logits``: keep the fewest most likely tokens whose probabilities reach p.

    The token that crosses ``p`` is kept (the most likely token always is); removed tokens get -inf.
    """
    probs = torch.tensor([[0.05, 0.5, 0.1, 0.2, 0.15], [0.3, 0.02, 0.08, 0.25, 0.35]])
    logits = probs.log()
    for p in (0.3, 0.6, 0.9, 1.0):
        what = f"filter_fn(logits, p={p})"
        got = _call(filter_fn, (logits.clone(), p), what)
        kept_hints = {
            -1: "one token too few: keep tokens while the probability mass *before* them is below p, so the "
            "token that crosses p stays",
            1: "one token too many: stop once the kept probability mass reaches p",
        }
        _check_filtered(got, filter_logits(logits, top_p=p), logits, what, kept_hints)
    _success("top-p filtering")
