"""Tests for minigpt_lib.plotting: the loss and learning-rate figures carry data and labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from minigpt_lib.plotting import plot_losses, plot_lr_schedule  # noqa: E402
from minigpt_lib.train import TrainingHistory, lr_at_step  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def make_history():
    return TrainingHistory(
        train_losses=[10.0, 7.5, 6.0],
        val_losses=[10.1, 8.0, 7.2],
        eval_steps=[1, 6, 11],
        tokens_seen=[512, 3072, 5632],
        lrs=[4e-4] * 11,
        steps=11,
    )


def test_plot_losses_draws_both_curves_with_labels():
    fig = plot_losses(make_history())
    ax = fig.axes[0]
    assert ax.get_title() == "Training and validation loss"
    assert ax.get_xlabel() == "Optimizer steps" and ax.get_ylabel() == "Loss (cross-entropy)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "Training loss",
        "Validation loss",
    ]
    train_line, val_line = ax.get_lines()
    assert list(train_line.get_xdata()) == [1, 6, 11]
    assert list(train_line.get_ydata()) == [10.0, 7.5, 6.0]
    assert list(val_line.get_ydata()) == [10.1, 8.0, 7.2]


def test_top_axis_shows_tokens_seen():
    fig = plot_losses(make_history())
    fig.canvas.draw()
    ax = fig.axes[0]
    top = ax.child_axes[0]
    assert top.get_xlabel() == "Tokens seen"
    steps_left, steps_right = ax.get_xlim()
    assert top.get_xlim() == pytest.approx(
        (512 * steps_left, 512 * steps_right)
    )  # 512 tokens a step


def test_plot_losses_accepts_a_dict_and_rejects_empty_histories():
    fig = plot_losses(
        {"train_losses": [3.0], "val_losses": [3.5], "eval_steps": [1], "tokens_seen": [64]}
    )
    assert len(fig.axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="no evaluation"):
        plot_losses(TrainingHistory())
    with pytest.raises(ValueError, match="missing"):
        plot_losses({"train_losses": [1.0]})


def test_plot_lr_schedule():
    lrs = [lr_at_step(s, 40, 1e-3, warmup_steps=5, min_lr=1e-5) for s in range(40)]
    fig = plot_lr_schedule(lrs)
    ax = fig.axes[0]
    assert ax.get_title() == "Learning-rate schedule"
    assert ax.get_xlabel() == "Optimizer step" and ax.get_ylabel() == "Learning rate"
    assert list(ax.get_lines()[0].get_ydata()) == lrs
    with pytest.raises(ValueError, match="lrs"):
        plot_lr_schedule([])
