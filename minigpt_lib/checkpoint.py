"""Saving and loading training state: weights, config, optimizer, random-number state and tokenizer.

File format: one safetensors file. Its tensors are the model weights (``model.*``), the optimizer's
per-parameter tensors (``optimizer.*``), random-number-generator states (``rng.*``) and any extra
tensors (``extra.*``); everything else (config, tokenizer, step, optimizer settings, Python's
``random`` state, caller data) is JSON in the file's metadata. Loading parses only safetensors and
JSON: no pickle, so a checkpoint cannot run code.

Atomic writes: the new checkpoint is written in full to a temporary file in the target's folder,
flushed to disk with fsync, and only then renamed onto the target with ``os.replace`` (atomic on
POSIX and Windows); the folder is fsynced so the rename itself survives a power cut. At every moment
the target path names either the complete old checkpoint or the complete new one. A crash mid-write
can leave a stray ``.NAME.*.tmp`` file beside the target, which is never read and can be deleted.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .model import GPTModel
from .tokenizer import CharTokenizer, Tokenizer, get_tokenizer

FORMAT = "minigpt-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read: the model, its weights loaded, and the saved state."""

    path: Path
    model: nn.Module
    config: dict[str, Any] | None
    step: int
    extra: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    tokenizer_info: dict[str, Any] | None = None

    def tokenizer(self) -> Tokenizer | None:
        """Rebuild the tokenizer the model was trained with (``None`` if none was saved)."""
        return tokenizer_from_info(self.tokenizer_info) if self.tokenizer_info else None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a ``torch.compile``, DataParallel or DistributedDataParallel wrapper.

    Checkpoints store the plain model's names (``tok_emb.weight``, not ``module.tok_emb.weight``).
    """
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return unwrap_model(model.module)
    compiled = getattr(model, "_orig_mod", None)  # where torch.compile keeps the original model
    return unwrap_model(compiled) if isinstance(compiled, nn.Module) else model


def tokenizer_info(tokenizer: Tokenizer) -> dict[str, Any]:
    """A JSON description from which :func:`tokenizer_from_info` rebuilds ``tokenizer``."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.to_dict()
    if isinstance(tokenizer, tiktoken.Encoding):
        return {"type": "tiktoken", "name": tokenizer.name}
    raise TypeError(
        "tokenizer: expected a tiktoken Encoding or a CharTokenizer, "
        f"got {type(tokenizer).__name__}"
    )


def tokenizer_from_info(info: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from :func:`tokenizer_info`'s description."""
    if info.get("type") == "char":
        return CharTokenizer.from_dict(info)
    if info.get("type") == "tiktoken":
        return get_tokenizer(info["name"])
    raise ValueError(
        f"tokenizer_info: unknown tokenizer type {info.get('type')!r}; "
        "expected 'char' or 'tiktoken'"
    )


# --------------------------------------------------------------------------------------------------
# Saving


def _model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state as ``model.<name>`` tensors, storing tied (shared) tensors once.

    Returns the tensors and ``aliases``: each left-out name mapped to the name stored in its place.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in unwrap_model(model).state_dict().items():
        key = (
            tensor.device,
            tensor.data_ptr(),
            tensor.dtype,
            tuple(tensor.shape),
            tuple(tensor.stride()),
        )
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[f"model.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, aliases


def _optimizer_parts(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (``optimizer.<param>.<key>``) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _rng_tensors() -> dict[str, torch.Tensor]:
    """Current states of torch's CPU generator and of every CUDA device's generator."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    return tensors


def _write_atomically(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write a safetensors file to a temporary name beside ``path``, fsync, rename to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata=metadata)
        with open(tmp_name, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    # Make the rename itself durable (Windows cannot open folders this way, nor needs to).
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Atomically write weights, config, optimizer state, RNG states and tokenizer to ``path``.

    ``extra`` is any JSON-able data (e.g. the training history), ``tensors`` any extra named
    tensors; both come back in the :class:`Checkpoint` that :func:`load_checkpoint` returns.
    """
    path = Path(path)
    all_tensors, aliases = _model_tensors(model)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": getattr(unwrap_model(model), "cfg", None),
        "aliases": aliases,
        "tokenizer": tokenizer_info(tokenizer) if tokenizer is not None else None,
        "step": step,
        "extra": extra or {},
        "python_random": random.getstate(),
        "optimizer": None,
    }
    if optimizer is not None:
        optimizer_tensors, header["optimizer"] = _optimizer_parts(optimizer)
        all_tensors.update(optimizer_tensors)
    all_tensors.update(_rng_tensors())
    for name, tensor in (tensors or {}).items():
        all_tensors[f"extra.{name}"] = tensor.detach().cpu().contiguous()
    _write_atomically(path, all_tensors, {"minigpt": json.dumps(header)})
    return path


# --------------------------------------------------------------------------------------------------
# Loading


def _read_file(
    path: Path, prefixes: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON header and the tensors whose names start with ``prefixes``, read onto the CPU.

    Reading only what is needed keeps, for instance, text generation from loading optimizer state.
    """
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            names = [name for name in f.keys() if name.startswith(prefixes)]
            tensors = {name: f.get_tensor(name) for name in names}
    except Exception as exc:  # safetensors has its own error type for files not in its format
        raise ValueError(f"path: {path} is not a minigpt checkpoint ({exc})") from None
    try:
        header = json.loads(metadata["minigpt"])
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"path: {path} is a safetensors file without a minigpt header") from None
    if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"path: {path} has format {header.get('format')!r} version {header.get('version')!r}; "
            f"this minigpt_lib reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return header, tensors


def _load_weights(
    model: nn.Module, tensors: dict[str, torch.Tensor], aliases: dict[str, str]
) -> None:
    """Copy the ``model.*`` tensors into ``model``, naming the first missing or misshapen tensor."""
    stored = {name[len("model.") :]: t for name, t in tensors.items() if name.startswith("model.")}
    state = {}
    for name, expected in model.state_dict().items():
        found = stored.get(aliases.get(name, name))
        if found is None:
            raise ValueError(
                f"checkpoint: has no tensor {name!r} (shape {tuple(expected.shape)}), "
                "which the model needs"
            )
        if found.shape != expected.shape:
            raise ValueError(
                f"checkpoint: tensor {name!r} has shape {tuple(found.shape)}, but the model "
                f"expects {tuple(expected.shape)} (the checkpoint has another config)"
            )
        state[name] = found
    unused = sorted(set(stored) - set(state) - set(aliases.values()))
    if unused:
        raise ValueError(f"checkpoint: tensor {unused[0]!r} has no counterpart in the model")
    model.load_state_dict(state)


def _load_optimizer(
    optimizer: torch.optim.Optimizer,
    optimizer_header: dict[str, Any] | None,
    tensors: dict[str, torch.Tensor],
) -> None:
    """Rebuild the optimizer's state dict from JSON and ``optimizer.*`` tensors and load it."""
    if optimizer_header is None:
        raise ValueError("optimizer: the checkpoint was saved without optimizer state")
    state: dict[int, dict[str, Any]] = {}
    for param_id, values in optimizer_header["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = tensor
    # JSON turned tuples (AdamW's betas) into lists: give settings the type the optimizer uses now.
    groups = [
        {
            key: tuple(value) if isinstance(current.get(key), tuple) else value
            for key, value in saved.items()
        }
        for saved, current in zip(
            optimizer_header["param_groups"], optimizer.param_groups, strict=False
        )
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _restore_rng(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Put torch's CPU and CUDA generators and Python's ``random`` back in their saved states."""
    torch.set_rng_state(tensors["rng.torch"])
    for i in range(torch.cuda.device_count()):
        if f"rng.cuda.{i}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"], i)
    version, internal, gauss_next = header["python_random"]
    random.setstate((version, tuple(internal), gauss_next))


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = False,
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, loading weights into ``model``.

    Without ``model`` a GPTModel is built from the saved config on ``map_location``. With
    ``optimizer`` its state is restored too; ``restore_rng=True`` also resets the random generators,
    which resuming training needs to continue exactly. Extra tensors come back on the CPU. Only
    safetensors and JSON are parsed.
    """
    path = Path(path)
    prefixes = ["model.", "extra."]
    if optimizer is not None:
        prefixes.append("optimizer.")
    if restore_rng:
        prefixes.append("rng.")
    header, tensors = _read_file(path, tuple(prefixes))
    if model is None:
        if header["config"] is None:
            raise ValueError(f"model: {path} stores no model config; pass the model to load into")
        model = GPTModel(header["config"]).to(map_location)
    _load_weights(unwrap_model(model), tensors, header["aliases"])
    if optimizer is not None:
        _load_optimizer(optimizer, header["optimizer"], tensors)
    if restore_rng:
        _restore_rng(header, tensors)
    return Checkpoint(
        path=path,
        model=model,
        config=header["config"],
        step=header["step"],
        extra=header["extra"],
        tensors={
            name[len("extra.") :]: t for name, t in tensors.items() if name.startswith("extra.")
        },
        tokenizer_info=header["tokenizer"],
    )
