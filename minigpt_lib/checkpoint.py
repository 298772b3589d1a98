"""Saving and loading training state: weights, config, optimizer, random-number state and tokenizer.

File format: one safetensors file. Its tensors are the model weights (``model.*``), the optimizer's
per-parameter tensors (``optimizer.*``), random-number-generator states (``rng.*``) and any extra
tensors (``extra.*``); everything else (config, tokenizer, step, optimizer settings, Python's
``random`` state, caller data) is JSON in the file's metadata. Loading parses only safetensors and
JSON: no pickle, so a checkpoint cannot run code.

Untrusted files: every field of the JSON header and every tensor's name, shape and values are
checked before they are used, and each problem is reported as one line naming the file and the
field. The tensors' names and shapes are compared with the config *before* the model is built, so
a small file whose config claims thousands of layers or a huge vocabulary fails at once instead of
allocating memory for it. Weights that are NaN or infinite are refused when saving and loading.

Atomic writes (:func:`~minigpt_lib.utils.atomic_write`): the new checkpoint is written in full to a
temporary file in the target's folder, flushed to disk and only then renamed onto the target, so
the target path always names either the complete old checkpoint or the complete new one. A process
killed mid-write leaves a ``.NAME.*.partial`` file, which is never read and which the next training
run in that folder deletes (:func:`~minigpt_lib.utils.remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .config import validate_config
from .model import GPTModel
from .tokenizer import CharTokenizer, Tokenizer, get_tokenizer
from .utils import atomic_write

FORMAT = "minigpt-checkpoint"
FORMAT_VERSION = 1
#: Bytes a loaded model may allocate for buffers its file does not hold, beyond four times the file's size.
UNSAVED_BUFFER_BUDGET = 256 * 2**20
PREFIXES = ("model.", "optimizer.", "rng.", "extra.")


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
    raise TypeError(f"tokenizer: expected a tiktoken Encoding or a CharTokenizer, got {type(tokenizer).__name__}")


def _check_tokenizer_info(info: object) -> CharTokenizer | None:
    """Raise if ``info`` is not a description :func:`tokenizer_info` writes; return the char tokenizer it
    describes (``None`` for tiktoken, whose files are only loaded when needed)."""
    if not isinstance(info, dict) or info.get("type") not in ("char", "tiktoken"):
        raise ValueError(
            "tokenizer: expected {'type': 'char', 'chars': ...} or {'type': 'tiktoken', 'name': ...}, "
            f"got {_json(info)}"
        )
    if info["type"] == "char":
        return CharTokenizer.from_dict(info)
    names = tiktoken.list_encoding_names()
    if info.get("name") not in names:
        raise ValueError(f"tokenizer['name']: expected one of {', '.join(names)}, got {_json(info.get('name'))}")
    return None


def tokenizer_from_info(info: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from :func:`tokenizer_info`'s description."""
    char_tokenizer = _check_tokenizer_info(info)
    return char_tokenizer if char_tokenizer is not None else get_tokenizer(info["name"])


def _json(value: object, limit: int = 80) -> str:
    """``value`` as it reads in a JSON file, cut to ``limit`` characters: how an error message shows it."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, else ``None``."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


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
    tensors; both come back in the :class:`Checkpoint` that :func:`load_checkpoint` returns. A model
    or optimizer holding NaN or infinite values is refused (a file at ``path`` stays as it was): a
    diverged run must not replace its last good checkpoint.
    """
    path = Path(path)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected a non-negative integer, got {step!r}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra: expected a dict of JSON-able data, got {type(extra).__name__}")
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
    bad = _non_finite(all_tensors)
    if bad is not None:
        argument, _, name = bad.partition(".")
        raise ValueError(
            f"{argument}: {name!r} holds NaN or infinite values (training diverged); nothing was written to {path}"
        )
    all_tensors.update(_rng_tensors())
    for name, tensor in (tensors or {}).items():
        all_tensors[f"extra.{name}"] = tensor.detach().cpu().contiguous()
    try:
        metadata = {"minigpt": json.dumps(header)}
    except (TypeError, ValueError) as exc:
        raise TypeError(f"extra: expected JSON-able data (dicts, lists, str, numbers, bool, None): {exc}") from None
    with atomic_write(path) as tmp:
        save_file(all_tensors, tmp, metadata=metadata)
    return path


# --------------------------------------------------------------------------------------------------
# Loading: the header, field by field


class _Reader:
    """Checks one checkpoint file; every error it raises is one line naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str) -> ValueError:
        """The error to raise: ``checkpoint FILE: field 'where': message`` (or ``tensor 'where'``)."""
        return ValueError(f"checkpoint {self.path}: {where}: {message}")

    def expect(self, ok: bool, name: str, expected: str, value: object) -> None:
        """Raise ``field 'name': expected ..., got VALUE`` unless ``ok``."""
        if not ok:
            raise self.error(f"field {name!r}", f"expected {expected}, got {_json(value)}")

    def header(self, metadata: dict[str, str] | None) -> dict[str, Any]:
        """The minigpt header from the file's metadata, each field checked for its type."""
        try:
            header = json.loads((metadata or {})["minigpt"])
        except KeyError:
            raise ValueError(f"path: {self.path} is a safetensors file without a minigpt header") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise self.error("its minigpt header", f"is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise self.error("its minigpt header", f"expected a JSON object, got {_json(header)}")
        if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"path: {self.path} has format {header.get('format')!r} version {header.get('version')!r}; "
                f"this minigpt_lib reads {FORMAT!r} version {FORMAT_VERSION}"
            )
        missing = [key for key in _HEADER_FIELDS if key not in header]
        if missing:
            raise self.error(f"field {missing[0]!r}", "missing from the header")
        for key, check in _HEADER_FIELDS.items():
            check(self, header[key])
        if isinstance(header["tokenizer"], dict) and header["tokenizer"]["type"] == "char":
            n_chars, vocab_size = len(header["tokenizer"]["chars"]), (header["config"] or {}).get("vocab_size")
            if isinstance(vocab_size, int) and n_chars > vocab_size:
                raise self.error(
                    "field 'tokenizer'",
                    f"its {n_chars} characters need vocab_size >= {n_chars}, but the config has {vocab_size}",
                )
        return header

    def config(self, value: object) -> None:
        self.expect(value is None or isinstance(value, dict), "config", "an object or null", value)

    def aliases(self, value: object) -> None:
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        self.expect(ok, "aliases", "an object mapping tensor names to tensor names", value)

    def tokenizer(self, value: object) -> None:
        if value is not None:
            try:
                _check_tokenizer_info(value)
            except ValueError as exc:
                raise self.error("field 'tokenizer'", str(exc)) from None

    def step(self, value: object) -> None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        self.expect(ok, "step", "a non-negative integer", value)

    def extra(self, value: object) -> None:
        self.expect(isinstance(value, dict), "extra", "an object", value)

    def python_random(self, value: object) -> None:
        ok = (
            isinstance(value, list)
            and len(value) == 3
            and isinstance(value[0], int)
            and isinstance(value[1], list)
            and len(value[1]) == 625
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in value[1])
            and (value[2] is None or isinstance(value[2], float))
        )
        self.expect(ok, "python_random", "[version, a list of 625 integers, null or a number]", value)

    def optimizer(self, value: object) -> None:
        if value is None:
            return
        self.expect(isinstance(value, dict), "optimizer", "an object or null", value)
        groups, scalars = value.get("param_groups"), value.get("scalars")
        self.expect(isinstance(groups, list), "optimizer.param_groups", "a list of objects", groups)
        for i, group in enumerate(groups):
            name = f"optimizer.param_groups[{i}]"
            self.expect(isinstance(group, dict), name, "an object", group)
            params = group.get("params")
            ok = isinstance(params, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in params)
            self.expect(ok, f"{name}.params", "a list of integer parameter ids", params)
        ids = [p for group in groups for p in group["params"]]
        self.expect(len(ids) == len(set(ids)), "optimizer.param_groups", "each parameter id once", ids)
        ok = isinstance(scalars, dict) and all(
            key.isdigit() and int(key) in ids and isinstance(v, dict) for key, v in scalars.items()
        )
        self.expect(ok, "optimizer.scalars", "an object mapping parameter ids to objects", scalars)


_HEADER_FIELDS = {
    "config": _Reader.config,
    "aliases": _Reader.aliases,
    "tokenizer": _Reader.tokenizer,
    "step": _Reader.step,
    "extra": _Reader.extra,
    "python_random": _Reader.python_random,
    "optimizer": _Reader.optimizer,
}


# --------------------------------------------------------------------------------------------------
# Loading: tensors against the model


def _gpt_shapes(reader: _Reader, cfg: dict[str, Any], n_stored: int) -> tuple[dict[str, tuple[int, ...]], int]:
    """Name and shape of every tensor in ``GPTModel(cfg)``'s state, found without allocating weights, and the
    bytes its buffers that are not saved (each block's causal mask) will take.

    A one-block model on PyTorch's ``meta`` device (shapes only, no memory) gives the names; the other
    blocks repeat them. Their count is compared with the ``n_stored`` names the file holds first, so a
    small file claiming 20,000 layers fails before anything is built for them.
    """
    try:
        with torch.device("meta"):
            model = GPTModel({**cfg, "n_layers": 1})
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise reader.error("field 'config'", f"describes no buildable model ({exc})") from None
    one_block = model.state_dict()
    prefix = "trf_blocks.0."
    block = {name[len(prefix) :]: tuple(t.shape) for name, t in one_block.items() if name.startswith(prefix)}
    shapes = {name: tuple(t.shape) for name, t in one_block.items() if not name.startswith("trf_blocks.")}
    needed = len(shapes) + cfg["n_layers"] * len(block)
    if needed != n_stored:
        raise reader.error(
            "field 'config'",
            f"describes a model of {needed:,} tensors (n_layers={cfg['n_layers']}), but the file holds {n_stored:,}",
        )
    for i in range(cfg["n_layers"]):
        shapes.update({f"trf_blocks.{i}.{name}": shape for name, shape in block.items()})
    unsaved = [(name, t.numel() * t.element_size()) for name, t in model.named_buffers() if name not in one_block]
    unsaved_bytes = sum(size * (cfg["n_layers"] if name.startswith("trf_blocks.") else 1) for name, size in unsaved)
    return shapes, unsaved_bytes


def _check_unsaved_buffers(reader: _Reader, cfg: dict[str, Any], unsaved_bytes: int) -> None:
    """The weights' sizes are paid for by the file itself; the buffers it does not hold are not, so they may
    take at most :data:`UNSAVED_BUFFER_BUDGET` bytes or four times the file's size."""
    file_bytes = reader.path.stat().st_size
    if unsaved_bytes > max(UNSAVED_BUFFER_BUDGET, 4 * file_bytes):
        raise reader.error(
            "field 'config'",
            f"context_length={cfg['context_length']} and n_layers={cfg['n_layers']} need {unsaved_bytes / 2**20:,.0f} "
            f"MiB of attention masks, more than a file of {file_bytes:,} bytes can justify (if you trust the file, "
            "build the model and pass it as model=)",
        )


def _check_model_tensors(
    reader: _Reader, expected: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]], aliases: dict[str, str]
) -> None:
    """Every tensor the model needs is in the file (itself or through an alias) with its shape, and no other."""
    for name in aliases:
        if name not in expected:
            raise reader.error("field 'aliases'", f"names {name!r}, but the model has no tensor {name!r}")
    for name, shape in expected.items():
        found = stored.get(aliases.get(name, name))
        if found is None:
            raise reader.error(f"tensor 'model.{name}'", f"missing; the model needs it with shape {shape}")
        if found != shape:
            raise reader.error(
                f"tensor 'model.{name}'",
                f"has shape {found}, but the model expects {shape} (the checkpoint has another config)",
            )
    unused = sorted(set(stored) - set(expected))
    if unused:
        raise reader.error(f"tensor 'model.{unused[0]}'", "has no counterpart in the model")


def _load_optimizer(
    reader: _Reader,
    optimizer: torch.optim.Optimizer,
    saved: dict[str, Any] | None,
    tensors: dict[str, torch.Tensor],
) -> None:
    """Rebuild the optimizer's state dict from JSON and ``optimizer.*`` tensors, check it, load it."""
    if saved is None:
        raise ValueError("optimizer: the checkpoint was saved without optimizer state")
    sizes = [len(group["params"]) for group in saved["param_groups"]]
    wanted = [len(group["params"]) for group in optimizer.param_groups]
    if sizes != wanted:
        raise reader.error(
            "field 'optimizer.param_groups'",
            f"the saved optimizer has parameter groups of sizes {sizes}, this one {wanted}",
        )
    # The optimizer matches saved parameter ids to its own parameters by position.
    params = {
        saved_id: param
        for saved_group, group in zip(saved["param_groups"], optimizer.param_groups, strict=True)
        for saved_id, param in zip(saved_group["params"], group["params"], strict=True)
    }
    state: dict[int, dict[str, Any]] = {}
    for param_id, values in saved["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    for name, tensor in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, param_id, key = (name.split(".", 2) + ["", ""])[:3]
        if not param_id.isdigit() or int(param_id) not in params or not key:
            raise reader.error(f"tensor {name!r}", "names no parameter of the saved optimizer")
        param = params[int(param_id)]
        if tensor.dim() and tensor.shape != param.shape:
            raise reader.error(
                f"tensor {name!r}", f"has shape {tuple(tensor.shape)}, but its parameter {tuple(param.shape)}"
            )
        state.setdefault(int(param_id), {})[key] = tensor
    groups = [
        {**{k: v for k, v in current.items() if k != "params"}, **_group_settings(reader, i, group, current)}
        for i, (group, current) in enumerate(zip(saved["param_groups"], optimizer.param_groups, strict=True))
    ]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise reader.error("field 'optimizer'", f"does not fit this optimizer ({exc})") from None


def _group_settings(reader: _Reader, index: int, saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A saved parameter group's settings, each of the kind the optimizer uses now (JSON made tuples lists)."""
    settings = {}
    for key, value in saved.items():
        now = current.get(key)
        name = f"optimizer.param_groups[{index}].{key}"
        if isinstance(value, float):
            reader.expect(math.isfinite(value), name, "a finite number", value)
        if key == "params" or key not in current:
            settings[key] = value
        elif isinstance(now, bool) or now is None:
            reader.expect(value is None or isinstance(value, bool), name, "true, false or null", value)
            settings[key] = value
        elif isinstance(now, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            reader.expect(ok, name, "a finite number", value)
            settings[key] = value
        elif isinstance(now, tuple):
            ok = isinstance(value, list) and len(value) == len(now)
            ok = ok and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            reader.expect(ok, name, f"a list of {len(now)} finite numbers", value)
            settings[key] = tuple(value)
        else:
            settings[key] = value
    return settings


def _restore_rng(reader: _Reader, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Put torch's CPU and CUDA generators and Python's ``random`` back in their saved states."""
    states = {"rng.torch": torch.get_rng_state()}
    for i in range(torch.cuda.device_count()):
        states[f"rng.cuda.{i}"] = torch.cuda.get_rng_state(i)
    for name, now in states.items():
        saved = tensors.get(name)
        if saved is None and name == "rng.torch":
            raise reader.error("tensor 'rng.torch'", "missing; restore_rng needs it")
        if saved is not None and (saved.dtype != torch.uint8 or saved.shape != now.shape):
            raise reader.error(
                f"tensor {name!r}",
                f"expected a generator state of {now.numel()} bytes (uint8), got {saved.dtype} "
                f"of shape {tuple(saved.shape)}",
            )
    version, internal, gauss_next = header["python_random"]
    try:
        random.setstate((version, tuple(internal), gauss_next))
    except (TypeError, ValueError, OverflowError) as exc:
        raise reader.error("field 'python_random'", f"is not a state of Python's random ({exc})") from None
    torch.set_rng_state(tensors["rng.torch"])
    for i in range(torch.cuda.device_count()):
        if f"rng.cuda.{i}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"], i)


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = False,
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, loading weights into ``model``.

    Without ``model`` a GPTModel is built from the saved config on ``map_location``, after the file's
    tensors were found to match that config. With ``optimizer`` its state is restored too;
    ``restore_rng=True`` also resets the random generators, which resuming training needs to
    continue exactly. Extra tensors come back on the CPU. Only safetensors and JSON are parsed; a
    file that is damaged, tampered with or from another model raises a one-line ``ValueError``
    naming the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {path}")
    reader = _Reader(path)
    try:
        file = safe_open(path, framework="pt", device="cpu")
    except Exception as exc:  # safetensors has its own error type for files not in its format
        raise ValueError(f"path: {path} is not a minigpt checkpoint ({exc})") from None
    with file:
        header = reader.header(file.metadata())
        names = list(file.keys())
        for name in names:
            if not name.startswith(PREFIXES):
                raise reader.error(
                    f"tensor {name!r}", f"has no place in a checkpoint (expected {', '.join(PREFIXES)}*)"
                )
        stored = {
            name[len("model.") :]: tuple(file.get_slice(name).get_shape())
            for name in names
            if name.startswith("model.")
        }
        for name, target in header["aliases"].items():
            if name in stored or target not in stored:
                raise reader.error(
                    "field 'aliases'",
                    f"maps {name!r} to {target!r}, but the file holds {name!r} itself or no {target!r}",
                )
        if model is None and header["config"] is None:
            raise ValueError(f"model: {path} stores no model config; pass the model to load into")
        if model is None or (isinstance(unwrap_model(model), GPTModel) and header["config"] is not None):
            try:
                cfg = validate_config(header["config"])
            except (TypeError, ValueError) as exc:
                hint = " (to load another kind of model, pass it as model=)" if model is None else ""
                raise reader.error("field 'config'", f"{exc}{hint}") from None
        if model is None:
            expected, unsaved_bytes = _gpt_shapes(reader, cfg, len(stored) + len(header["aliases"]))
        else:
            expected = {name: tuple(t.shape) for name, t in unwrap_model(model).state_dict().items()}
        _check_model_tensors(reader, expected, stored, header["aliases"])
        if model is None:
            _check_unsaved_buffers(reader, cfg, unsaved_bytes)

        prefixes = ["model.", "extra."] + ["optimizer."] * (optimizer is not None) + ["rng."] * restore_rng
        tensors = {name: file.get_tensor(name) for name in names if name.startswith(tuple(prefixes))}
    bad = _non_finite({name: t for name, t in tensors.items() if name.startswith(("model.", "optimizer."))})
    if bad is not None:
        raise reader.error(
            f"tensor {bad!r}",
            "holds NaN or infinite values (the run that wrote it diverged); use an earlier checkpoint",
        )
    if model is None:
        model = GPTModel(cfg).to(map_location)
    plain = unwrap_model(model)
    state = {name: tensors["model." + header["aliases"].get(name, name)] for name in expected}
    for name, tensor in plain.state_dict().items():
        if tensor.is_floating_point() and not state[name].is_floating_point():
            raise reader.error(f"tensor 'model.{name}'", f"expected floating-point numbers, got {state[name].dtype}")
    plain.load_state_dict(state)
    if optimizer is not None:
        _load_optimizer(reader, optimizer, header["optimizer"], tensors)
    if restore_rng:
        _restore_rng(reader, header, tensors)
    return Checkpoint(
        path=path,
        model=model,
        config=header["config"],
        step=header["step"],
        extra=header["extra"],
        tensors={name[len("extra.") :]: t for name, t in tensors.items() if name.startswith("extra.")},
        tokenizer_info=header["tokenizer"],
    )
