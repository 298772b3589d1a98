"""LoRA (low-rank adaptation, Hu et al. 2021): fine-tune a model by learning a small update to chosen linear layers.

A frozen linear layer computes ``W x``. LoRA adds a trainable update of rank ``r``::

    y = W x + (alpha / r) * B (A x)        A: (r, in_features), B: (out_features, r)

``A`` starts random and ``B`` at zero, so before training the layer computes exactly what it did before. Only
``A`` and ``B`` are trained: ``r * (in + out)`` numbers instead of ``in * out``. ``alpha / r`` (the
``scaling``) keeps the size of the update comparable when ``r`` changes. The names ``lora_A``, ``lora_B`` and
``scaling`` follow the ``peft`` library, whose layer our tests compare with.

After training, ``B A`` can be added into ``W`` (:meth:`LoRALinear.merge`): the same outputs, with no extra work
per token. Adapters (only ``A`` and ``B`` plus their settings) are saved as safetensors: a few megabytes instead of
the whole model, and loading them runs no code.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from .utils import atomic_write, check_number, check_positive_int

FORMAT = "minigpt-lora"
FORMAT_VERSION = "1"


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / rank) * lora_B @ lora_A``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base: expected an nn.Linear, got {type(base).__name__}")
        check_positive_int("rank", rank)
        check_number("alpha", alpha, 0.0, low_open=True)
        check_number("dropout", dropout, 0.0, 1.0)
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and peft) initialise a weight
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update LoRA adds to the base weight: ``scaling * B A``, shape ``(out_features, in_features)``."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            if torch.is_grad_enabled() and self.lora_A.requires_grad:
                raise RuntimeError("LoRALinear: the update is merged into the base weight, so lora_A and lora_B "
                                   "would get no gradient; call unmerge() before training")
            return self.base(x)
        return self.base(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the base weight (outputs unchanged, one matrix product per call)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update again, so training can continue."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


# --------------------------------------------------------------------------------------------------
# Whole models


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by their module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _find_targets(model: nn.Module, target_modules: tuple[str, ...] | list[str]) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers whose last name part is in ``target_modules``; raise if a target matches none."""
    if isinstance(target_modules, str) or not target_modules:
        raise ValueError(f"target_modules: expected a non-empty list of layer names, got {target_modules!r}")
    if lora_layers(model):
        raise ValueError("model: already has LoRA layers; apply_lora once per model")
    linear = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    chosen = {name: m for name, m in linear.items() if name.rpartition(".")[2] in target_modules}
    missing = set(target_modules) - {name.rpartition(".")[2] for name in chosen}
    if missing:
        known = sorted({name.rpartition(".")[2] for name in linear})
        raise ValueError(f"target_modules: no nn.Linear named {sorted(missing)} in the model; "
                         f"its linear layers are named {known}")
    return chosen


def apply_lora(
    model: nn.Module, target_modules: tuple[str, ...] | list[str], rank: int = 8, alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Freeze every parameter of ``model`` and wrap each ``nn.Linear`` whose last name part is in
    ``target_modules`` (``"W_query"``, ``"q_proj"``...) in a :class:`LoRALinear`; return the wrapped names.

    Only the LoRA matrices are trainable afterwards. A target that names no linear layer raises, so a typo does not
    silently train nothing.
    """
    chosen = _find_targets(model, target_modules)
    model.requires_grad_(False)
    for name, linear in chosen.items():
        _set_module(model, name, LoRALinear(linear, rank, alpha, dropout))
    return list(chosen)


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; a tied weight counts once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merge_lora(model: nn.Module) -> None:
    """Merge every LoRA layer's update into its base weight."""
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora`."""
    for layer in lora_layers(model).values():
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every update into its base weight and put the plain ``nn.Linear`` back: a model without LoRA."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        _set_module(model, name, layer.base)
    return model


# --------------------------------------------------------------------------------------------------
# Adapter files


@dataclass(frozen=True)
class AdapterConfig:
    """The settings an adapter file records, so loading can rebuild the same LoRA layers."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    base_model: str


def save_adapter(model: nn.Module, path: str | os.PathLike[str], base_model: str) -> Path:
    """Write the LoRA matrices of ``model`` and their settings to a safetensors file, all or nothing.

    ``base_model`` names the model the adapter belongs to; :func:`load_adapter` refuses it for another.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model: has no LoRA layers to save (call apply_lora first)")
    first = next(iter(layers.values()))
    if any((m.rank, m.alpha) != (first.rank, first.alpha) for m in layers.values()):
        raise ValueError("model: its LoRA layers differ in rank or alpha; an adapter file holds one setting")
    dropout = first.dropout.p if isinstance(first.dropout, nn.Dropout) else 0.0
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{name}.lora_A"] = layer.lora_A.detach().cpu().contiguous()
        tensors[f"{name}.lora_B"] = layer.lora_B.detach().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rank": str(first.rank),
        "alpha": repr(first.alpha),
        "dropout": repr(dropout),
        "target_modules": json.dumps(sorted({name.rpartition(".")[2] for name in layers})),
        "base_model": base_model,
    }
    path = Path(path)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _field(metadata: dict[str, str], key: str, path: Path) -> str:
    if key not in metadata:
        raise ValueError(f"{path}: adapter metadata lacks the field {key!r}")
    return metadata[key]


def read_adapter(path: str | os.PathLike[str]) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    """Read an adapter file: its settings, each checked field by field, and its tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such adapter file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for a file not in its format
        raise ValueError(f"{path}: not a safetensors adapter file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: metadata field 'format': expected {FORMAT!r}, got {metadata.get('format')!r}")
    version = _field(metadata, "format_version", path)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: metadata field 'format_version': expected {FORMAT_VERSION!r}, got {version!r}")
    raw = {key: _field(metadata, key, path) for key in ("rank", "alpha", "dropout", "target_modules", "base_model")}
    try:
        rank = int(raw["rank"])
        check_positive_int("rank", rank)
    except ValueError:
        raise ValueError(f"{path}: metadata field 'rank': expected a positive integer, got {raw['rank']!r}") from None
    try:
        alpha = check_number("alpha", float(raw["alpha"]), 0.0, low_open=True)
    except ValueError:
        raise ValueError(f"{path}: metadata field 'alpha': expected a positive number, got {raw['alpha']!r}") from None
    try:
        dropout = check_number("dropout", float(raw["dropout"]), 0.0, 1.0)
    except ValueError:
        raise ValueError(f"{path}: metadata field 'dropout': expected a number in [0, 1], "
                         f"got {raw['dropout']!r}") from None
    try:
        targets = json.loads(raw["target_modules"])
    except json.JSONDecodeError:
        targets = None
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{path}: metadata field 'target_modules': expected a JSON list of layer names, "
                         f"got {raw['target_modules']!r}")
    config = AdapterConfig(rank, alpha, dropout, tuple(targets), raw["base_model"])
    for key, tensor in tensors.items():
        if not key.endswith((".lora_A", ".lora_B")):
            raise ValueError(f"{path}: tensor {key!r} is not a LoRA matrix (names end in .lora_A or .lora_B)")
        if not tensor.is_floating_point() or tensor.dim() != 2:
            raise ValueError(f"{path}: tensor {key!r}: expected a 2-D float matrix, got {tensor.dtype} "
                             f"of shape {tuple(tensor.shape)}")
    return config, tensors


def load_adapter(model: nn.Module, path: str | os.PathLike[str], base_model: str | None = None) -> AdapterConfig:
    """Add the LoRA layers an adapter file describes to ``model`` and load their matrices.

    The file must be for ``base_model`` (when given) and hold exactly one ``lora_A`` and ``lora_B`` of the right
    shapes for every wrapped layer; anything else raises, naming the file and what does not fit.
    """
    path = Path(path)
    config, tensors = read_adapter(path)
    if base_model is not None and config.base_model != base_model:
        raise ValueError(f"{path}: metadata field 'base_model': the adapter is for {config.base_model!r}, "
                         f"not {base_model!r}")
    targets = _find_targets(model, config.target_modules)
    shapes = {}
    for name, linear in targets.items():
        shapes[f"{name}.lora_A"] = (config.rank, linear.in_features)
        shapes[f"{name}.lora_B"] = (linear.out_features, config.rank)
    if set(tensors) != set(shapes):
        missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
        raise ValueError(f"{path}: tensors do not match the model's layers (missing {missing[:3]}, "
                         f"unexpected {extra[:3]})")
    for key, shape in shapes.items():
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"{path}: tensor {key!r}: expected shape {shape}, got {tuple(tensors[key].shape)}")
    apply_lora(model, config.target_modules, config.rank, config.alpha, config.dropout)
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            layer.lora_A.copy_(tensors[f"{name}.lora_A"])
            layer.lora_B.copy_(tensors[f"{name}.lora_B"])
    return config
