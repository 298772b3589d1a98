"""What every exercise check shares: the error type, seeded inputs, tensor comparison with hints, and
running the learner's code so that a crash or an unfinished stub is reported clearly.

Every check builds its inputs from fixed seeds with a local ``torch.Generator`` (the global random state
is left as it was), prints ``✓ <what> matches the reference`` on success and raises :class:`CheckError`
naming the shape, dtype or first differing element, with a hint when the mistake is a familiar one.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

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


def seeded_randn(*shape: int, seed: int) -> torch.Tensor:
    """Standard normal numbers from a private generator, so the global random state is untouched."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def format_index(index: Sequence[int]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def matches(got: torch.Tensor, candidate: torch.Tensor, atol: float, rtol: float) -> bool:
    """True when ``got`` equals ``candidate`` in shape and (within tolerance) in every value."""
    if got.shape != candidate.shape:
        return False
    got, candidate = got.detach().double(), candidate.detach().double()
    return bool(torch.allclose(got, candidate, atol=atol, rtol=rtol, equal_nan=True))


def hint_for(got: torch.Tensor, variants: dict[str, torch.Tensor] | None, atol: float, rtol: float) -> str:
    """The hint of the first known wrong variant that ``got`` reproduces, or ''."""
    for hint, candidate in (variants or {}).items():
        if matches(got, candidate, atol, rtol):
            return f"\n  hint: {hint}"
    return ""


def assert_close(
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
            + hint_for(got, variants, atol, rtol)
        )
    if got.dtype != expected.dtype:
        raise CheckError(f"{name}: expected dtype {expected.dtype}, got {got.dtype}")
    got_d, exp_d = got.detach().double().cpu(), expected.detach().double().cpu()
    hint = hint_for(got, variants, atol, rtol)
    nan = torch.isnan(got_d) & ~torch.isnan(exp_d)
    if nan.any():
        index = format_index(nan.nonzero()[0].tolist())
        raise CheckError(
            f"{name}: {int(nan.sum())} NaN value(s), first at index {index} "
            f"(expected {exp_d[tuple(nan.nonzero()[0])].item():.6g})" + hint
        )
    close = torch.isclose(got_d, exp_d, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        first = tuple(close.logical_not().nonzero()[0].tolist())
        finite = torch.isfinite(got_d) & torch.isfinite(exp_d)
        diff = (got_d - exp_d).abs().where(finite, torch.zeros_like(got_d))
        expected_value, got_value = exp_d[first].item(), got_d[first].item()
        digits = 6 if f"{expected_value:.6g}" != f"{got_value:.6g}" else 10  # show where two close values differ
        raise CheckError(
            f"{name}: {int((~close).sum())} of {close.numel()} values differ; first at index "
            f"{format_index(first)}: expected {expected_value:.{digits}g}, got {got_value:.{digits}g} "
            f"(largest finite difference {diff.max().item():.3g}; tolerance atol={atol:g}, rtol={rtol:g})" + hint
        )


def call_learner(fn: Callable[..., Any], args: tuple, what: str, kwargs: dict[str, Any] | None = None) -> Any:
    """Call the learner's code; turn a crash into a :class:`CheckError` that says on which input."""
    try:
        return fn(*args, **(kwargs or {}))
    except (CheckError, NotImplementedError):
        raise  # a check's own verdict, or a stub not written yet (see exercise())
    except Exception as exc:
        raise CheckError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def build_learner(
    cls: Callable[..., nn.Module], args: tuple, what: str, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """Instantiate a learner's module with the global random state saved and restored around it."""
    shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = call_learner(cls, args, f"{what}({shown})", kwargs)
    if not isinstance(module, nn.Module):
        raise CheckError(f"{what}: expected an nn.Module subclass, got {type(module).__name__}")
    return module


def reference_module(cls: Callable[..., nn.Module], args: tuple, seed: int, kwargs: dict | None = None) -> nn.Module:
    """Build a reference module and fill every parameter with seeded random values (scales near 1)."""
    with torch.random.fork_rng(devices=[]):
        module = cls(*args, **(kwargs or {}))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if name.endswith("scale") else 0.4 * noise)
    return module.eval()


def copy_parameters(learner: nn.Module, reference: nn.Module, what: str) -> None:
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


def success(what: str) -> None:
    print(f"✓ {what} matches the reference")


def as_int(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CheckError(f"{what}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


def check_close(
    got: torch.Tensor, expected: torch.Tensor, name: str = "output", atol: float = 1e-5, rtol: float = 1e-4
) -> None:
    """Compare two tensors: shape, dtype, then values element by element within ``atol + rtol·|expected|``.

    The building block of every other check; use it directly to compare any result of your own.
    """
    if not isinstance(expected, torch.Tensor):
        raise TypeError(f"expected: expected a torch.Tensor, got {type(expected).__name__}")
    assert_close(got, expected, name, atol, rtol)
    success(name)


@contextmanager
def exercise() -> Iterator[None]:
    """Run an exercise's check; while the learner's stub still raises ``NotImplementedError``, say so and go on.

    Lets a notebook run top to bottom before the reader has filled in the stubs (its cells print
    ``not done yet: ...``), while a finished but wrong answer still stops with the check's message.
    """
    try:
        yield
    except NotImplementedError as exc:
        print(f"not done yet: {exc}")
