"""Small helpers every part of the package shares: argument checks, the device, cache folders, eval mode, safe writes.

Each job has exactly one helper here, so a device is picked, a folder found or a file written the same way
everywhere (training, generation, the command line, the loaders).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive int, else raise naming the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return value


def check_number(
    name: str, value: object, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False
) -> float:
    """Return ``value`` if it is a finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``).

    NaN and infinities are refused here, so they never reach a loss or a sampler as a silent NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        left = "(" if low_open else "["
        raise ValueError(f"{name}: expected a number in {left}{low:g}, {high:g}], got {value!r}")
    return float(value)


def get_device(name: str = "auto") -> torch.device:
    """``"auto"``: the fastest device present (CUDA, then Apple's MPS, then the CPU); else that device, if present."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        return torch.device(next(kind for kind in ("cuda", "mps", "cpu") if available[kind]))
    if name not in available:
        raise ValueError(f"device: expected one of auto, {', '.join(available)}, got {name!r}")
    if not available[name]:
        raise ValueError(f"device: {name} was requested, but this PyTorch build sees no {name} device")
    return torch.device(name)


def cache_dir(env_var: str, *subfolders: str) -> Path:
    """``$env_var`` when set, else ``~/.cache/minigpt/<subfolders>`` (``$XDG_CACHE_HOME`` replaces ``~/.cache``)."""
    folder = os.environ.get(env_var)
    if folder:
        return Path(folder).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home, "minigpt", *subfolders)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Switch ``model`` to eval mode (dropout off) inside the block, then back to the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (Windows cannot open folders this way, nor needs to)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


TEMP_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write ``path`` all or nothing: the block writes the temporary file it is given, which is then fsynced
    and renamed onto ``path``.

    Readers see the old file or the complete new one, never half of one; on an error the temporary file is
    removed. A process killed mid-write leaves ``.<name>.*.partial``, which :func:`remove_stale_temporaries`
    clears on the next run in that folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    _fsync_folder(path.parent)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``folder``; return them."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
