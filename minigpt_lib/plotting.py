"""Figures of training runs: loss against steps and tokens seen, and learning-rate schedules.

Presentation only: matplotlib is imported here and nowhere in the core modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .train import TrainingHistory


def _as_dict(history: TrainingHistory | Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a :class:`~minigpt_lib.train.TrainingHistory` or a dict with the same keys."""
    data = asdict(history) if is_dataclass(history) else history
    missing = {"train_losses", "val_losses", "eval_steps", "tokens_seen"} - set(data)
    if missing:
        raise ValueError(f"history: missing {sorted(missing)}; pass what train_model returned")
    if not data["eval_steps"]:
        raise ValueError("history: holds no evaluation yet, so there is nothing to plot")
    return data


def plot_losses(
    history: TrainingHistory | Mapping[str, Any], title: str = "Training and validation loss"
) -> Figure:
    """Plot training and validation loss against optimizer steps, with tokens seen on a top axis.

    The top axis converts steps to tokens at the run's mean tokens per step (exact for equal batches).
    """
    data = _as_dict(history)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(data["eval_steps"], data["train_losses"], label="Training loss")
    ax.plot(data["eval_steps"], data["val_losses"], linestyle="--", label="Validation loss")
    ax.set_xlabel("Optimizer steps")
    ax.set_ylabel("Loss (cross-entropy)")
    ax.set_title(title)
    ax.legend()
    tokens_per_step = data["tokens_seen"][-1] / data["eval_steps"][-1]
    top = ax.secondary_xaxis(
        "top", functions=(lambda s: s * tokens_per_step, lambda t: t / tokens_per_step)
    )
    top.set_xlabel("Tokens seen")
    fig.tight_layout()
    return fig


def plot_lr_schedule(lrs: Sequence[float], title: str = "Learning-rate schedule") -> Figure:
    """Plot one learning rate per optimizer step, e.g. ``history.lrs`` or ``lr_at_step`` values."""
    if len(lrs) == 0:
        raise ValueError("lrs: expected at least one learning rate, got an empty sequence")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(len(lrs)), lrs)
    ax.set_xlabel("Optimizer step")
    ax.set_ylabel("Learning rate")
    ax.set_title(title)
    fig.tight_layout()
    return fig
