"""Tests for minigpt_lib.train: losses, the learning-rate schedule, the loop, exact resumption."""

import math

import pytest
import torch
import torch.nn as nn

from minigpt_lib import train
from minigpt_lib.corpora import load_text
from minigpt_lib.data import create_dataloader, train_val_split
from minigpt_lib.model import GPTModel
from minigpt_lib.tokenizer import CharTokenizer
from minigpt_lib.train import (
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    get_device,
    lr_at_step,
    make_adamw,
    perplexity,
    train_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def verdict():
    """The first 4,000 characters of the sample corpus, split 90/10, with a character tokenizer."""
    text = load_text("the-verdict")
    tokenizer = CharTokenizer.from_text(text)
    return (*train_val_split(text[:4000], 0.9), tokenizer)


def setup(verdict, seed=123):
    """A seeded tiny GPT (emb 32, 2 layers, context 32) and loaders with batches of 4 windows."""
    train_text, val_text, tokenizer = verdict
    torch.manual_seed(seed)
    cfg = {
        "vocab_size": tokenizer.n_vocab,
        "context_length": 32,
        "emb_dim": 32,
        "n_heads": 2,
        "n_layers": 2,
        "drop_rate": 0.1,
        "qkv_bias": False,
    }
    model = GPTModel(cfg)
    kwargs = {"batch_size": 4, "max_length": 32, "stride": 32, "tokenizer": tokenizer}
    train_loader = create_dataloader(train_text, **kwargs)
    val_loader = create_dataloader(val_text, shuffle=False, drop_last=False, **kwargs)
    return model, train_loader, val_loader


class Uniform(nn.Module):
    """Predicts every token with equal probability: its loss is exactly log(vocab)."""

    def forward(self, idx):
        return torch.zeros(*idx.shape, 10)


def test_calc_loss_batch_is_the_token_level_cross_entropy():
    inputs = torch.randint(0, 10, (3, 5))
    assert calc_loss_batch(inputs, inputs, Uniform(), "cpu").item() == pytest.approx(math.log(10))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 10))
    targets = torch.randint(0, 10, (3, 5))
    expected = -torch.log_softmax(model(inputs), dim=-1).gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(calc_loss_batch(inputs, targets, model, "cpu"), expected)


def test_calc_loss_loader_averages_the_first_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 10))
    batches = [(torch.randint(0, 10, (2, 4)), torch.randint(0, 10, (2, 4))) for _ in range(3)]
    losses = [calc_loss_batch(x, y, model, "cpu").item() for x, y in batches]
    assert calc_loss_loader(batches, model, "cpu") == pytest.approx(sum(losses) / 3)
    assert calc_loss_loader(batches, model, "cpu", num_batches=2) == pytest.approx(
        sum(losses[:2]) / 2
    )
    assert calc_loss_loader(batches, model, "cpu", num_batches=9) == pytest.approx(sum(losses) / 3)
    with pytest.raises(ValueError, match="yields no batches"):
        calc_loss_loader([], model, "cpu")
    with pytest.raises(ValueError, match="num_batches"):
        calc_loss_loader(batches, model, "cpu", num_batches=0)


def test_evaluate_model_turns_dropout_off_and_restores_the_mode(verdict):
    model, train_loader, val_loader = setup(verdict)
    first = evaluate_model(model, train_loader, val_loader, "cpu", eval_iter=None)
    assert model.training
    val_again = calc_loss_loader(val_loader, model.eval(), "cpu")
    assert first[1] == val_again  # no dropout noise in evaluation
    assert first[1] == pytest.approx(
        math.log(verdict[2].n_vocab), abs=0.5
    )  # untrained: near uniform


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50257)) == pytest.approx(50257)
    assert perplexity(1e6) == math.inf
    torch.testing.assert_close(perplexity(torch.tensor(2.0)), torch.exp(torch.tensor(2.0)))


def test_lr_schedule_values():
    peak, low = 1e-3, 1e-5
    assert lr_at_step(0, 100, peak, warmup_steps=10, min_lr=low) == pytest.approx(1e-4)
    assert lr_at_step(4, 100, peak, warmup_steps=10, min_lr=low) == pytest.approx(5e-4)
    assert lr_at_step(9, 100, peak, warmup_steps=10, min_lr=low) == pytest.approx(peak)
    assert lr_at_step(10, 100, peak, warmup_steps=10, min_lr=low) == pytest.approx(peak)
    assert lr_at_step(55, 100, peak, warmup_steps=10, min_lr=low) == pytest.approx((peak + low) / 2)
    assert (
        low < lr_at_step(99, 100, peak, warmup_steps=10, min_lr=low) < 1.05 * low
    )  # last step: almost
    assert lr_at_step(100, 100, peak, warmup_steps=10, min_lr=low) == low
    assert lr_at_step(0, 8, peak) == peak  # no warm-up: cosine from the first step
    rates = [lr_at_step(s, 50, peak, 5, low) for s in range(50)]
    assert rates.index(max(rates)) in (4, 5) and all(
        a >= b for a, b in zip(rates[5:], rates[6:], strict=False)
    )


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1, 10, 1e-3), "step"),
        ((0, 0, 1e-3), "total_steps"),
        ((0, 10, 0.0), "peak_lr"),
        ((0, 10, 1e-3, 11), "warmup_steps"),
        ((0, 10, 1e-3, 0, 2e-3), "min_lr"),
    ],
)
def test_lr_schedule_rejects_bad_arguments(args, name):
    with pytest.raises((ValueError, TypeError), match=name):
        lr_at_step(*args)


def test_get_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")


def test_training_lowers_the_loss_and_records_history(verdict, capsys):
    model, train_loader, val_loader = setup(verdict)
    n = len(train_loader)
    history = train_model(
        model,
        train_loader,
        val_loader,
        device="cpu",
        num_epochs=2,
        eval_freq=10,
        eval_iter=3,
        lr=5e-3,
        progress=False,
        start_context="Every effort",
        tokenizer=verdict[2],
    )
    assert history.steps == 2 * n and len(history.lrs) == 2 * n
    assert history.eval_steps == list(range(1, 2 * n + 1, 10))
    assert history.tokens_seen == [s * 4 * 32 for s in history.eval_steps]
    assert history.train_losses[-1] < history.train_losses[0] - 1.0
    assert history.val_losses[-1] < history.val_losses[0] - 0.8
    out = capsys.readouterr().out
    assert out.count("Every effort") == 2  # one sample per epoch
    assert f"epoch 2, step {history.eval_steps[-1]}: train loss" in out


def test_schedule_clipping_and_max_steps(verdict, monkeypatch):
    model, train_loader, val_loader = setup(verdict)
    clips = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm):
        clips.append(max_norm)
        return real_clip(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    history = train_model(
        model,
        train_loader,
        val_loader,
        device="cpu",
        num_epochs=5,
        max_steps=7,
        eval_freq=3,
        eval_iter=1,
        lr=1e-3,
        use_schedule=True,
        warmup_steps=2,
        min_lr=1e-4,
        grad_clip=0.5,
        progress=False,
    )
    assert history.steps == 7 and history.eval_steps == [1, 4, 7]
    assert history.lrs == pytest.approx([lr_at_step(s, 7, 1e-3, 2, 1e-4) for s in range(7)])
    assert clips == [0.5] * 7


def test_bfloat16_autocast_runs(verdict):
    model, train_loader, val_loader = setup(verdict)
    history = train_model(
        model,
        train_loader,
        val_loader,
        device="cpu",
        max_steps=2,
        eval_iter=1,
        amp=True,
        progress=False,
    )
    assert history.steps == 2 and all(
        math.isfinite(x) for x in history.train_losses + history.val_losses
    )
    assert next(model.parameters()).dtype == torch.float32


class Interrupted(Exception):
    pass


def test_resuming_continues_exactly_as_if_never_stopped(verdict, tmp_path, monkeypatch):
    """A straight run and one stopped after a mid-epoch checkpoint, then resumed: equal losses."""
    kwargs = {
        "device": "cpu",
        "num_epochs": 2,
        "eval_freq": 4,
        "eval_iter": 2,
        "lr": 2e-3,
        "use_schedule": True,
        "warmup_steps": 3,
        "progress": False,
    }
    model, train_loader, val_loader = setup(verdict)
    straight = train_model(model, train_loader, val_loader, **kwargs)
    n = len(train_loader)
    stop_at = n + n // 2  # in the middle of the second epoch

    real_save = train.save_checkpoint

    def save_then_crash(*args, **kw):
        real_save(*args, **kw)
        raise Interrupted

    monkeypatch.setattr(train, "save_checkpoint", save_then_crash)
    model, train_loader, val_loader = setup(verdict)
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(Interrupted):
        train_model(
            model,
            train_loader,
            val_loader,
            checkpoint_path=path,
            checkpoint_every=stop_at,
            **kwargs,
        )
    monkeypatch.undo()

    model, train_loader, val_loader = setup(verdict, seed=999)  # other weights and generator state
    resumed = train_model(model, train_loader, val_loader, resume_from=path, **kwargs)
    assert resumed.steps == straight.steps == 2 * n
    assert resumed.train_losses == straight.train_losses
    assert resumed.val_losses == straight.val_losses
    assert resumed.lrs == straight.lrs
    assert resumed.tokens_seen == straight.tokens_seen


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_epochs": None}, "give at least one"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"eval_freq": 0}, "eval_freq"),
        ({"checkpoint_every": 5}, "checkpoint_path"),
    ],
)
def test_bad_train_arguments_fail_before_training(verdict, kwargs, match):
    model, train_loader, val_loader = setup(verdict)
    with pytest.raises((ValueError, TypeError), match=match):
        train_model(model, train_loader, val_loader, progress=False, **kwargs)


def test_empty_validation_loader_fails_before_training(verdict):
    model, train_loader, _ = setup(verdict)
    with pytest.raises(ValueError, match="val_loader: yields no batches"):
        train_model(model, train_loader, [], device="cpu", progress=False)


def test_make_adamw_is_fused_on_cpu_and_steps_like_the_plain_adamw():
    torch.manual_seed(0)
    fused_model = torch.nn.Linear(6, 4)
    plain_model = torch.nn.Linear(6, 4)
    plain_model.load_state_dict(fused_model.state_dict())
    fused = make_adamw(fused_model, lr=1e-2, weight_decay=0.1)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    x = torch.randn(5, 6)
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
