"""Tests for minigpt_lib.train: losses, the learning-rate schedule, the loop, exact resumption."""

import json
import math

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from minigpt_lib import train
from minigpt_lib.corpora import load_text
from minigpt_lib.data import create_dataloader, train_val_split
from minigpt_lib.model import GPTModel
from minigpt_lib.tokenizer import CharTokenizer
from minigpt_lib.train import (
    NextTokenLoss,
    TrainingDivergedError,
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    lr_at_step,
    make_adamw,
    perplexity,
    train_model,
    train_step,
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


def _tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = {"vocab_size": 50, "context_length": 12, "emb_dim": 16, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
           "qkv_bias": False, **overrides}
    return GPTModel(cfg)


@pytest.mark.parametrize("tie_weights", [False, True])
def test_next_token_loss_equals_calc_loss_batch_in_value_and_gradients(tie_weights):
    model = _tiny_gpt(tie_weights=tie_weights)
    inputs, targets = torch.randint(0, 50, (3, 12)), torch.randint(0, 50, (3, 12))
    targets[0, :5] = -100  # ignored positions (prompts, padding) count in neither
    loss_fn = NextTokenLoss(model)
    assert loss_fn.chunked  # the output head and the loss are computed together
    fused = loss_fn(inputs, targets)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    plain = calc_loss_batch(inputs, targets, model, "cpu")
    plain_grads = torch.autograd.grad(plain, list(model.parameters()))
    torch.testing.assert_close(fused, plain)
    for got, expected in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="target_batch: expected shape"):
        loss_fn(inputs, targets[:, :4])


def test_next_token_loss_of_any_logits_model_is_cross_entropy():
    loss_fn = NextTokenLoss(Uniform())
    assert not loss_fn.chunked
    targets = torch.randint(0, 10, (2, 5))
    torch.testing.assert_close(loss_fn(torch.zeros(2, 5, dtype=torch.long), targets), torch.tensor(math.log(10)))


def test_train_step_is_one_plain_optimization_step():
    model, reference = _tiny_gpt(), _tiny_gpt()
    inputs, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = train_step(model, optimizer, inputs, targets, grad_clip=0.5)
    # The same step written out: zero, forward on full logits, backward, clip, update.
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    ref_loss = calc_loss_batch(inputs, targets, reference, "cpu")
    ref_loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    ref_optimizer.step()
    assert isinstance(loss, float) and loss == pytest.approx(ref_loss.item(), rel=1e-6)
    for got, expected in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("lr", [float("inf"), 1e30])
def test_train_step_refuses_to_step_on_a_non_finite_loss(lr):
    model = _tiny_gpt()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    inputs, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    with pytest.raises(TrainingDivergedError):
        for _ in range(5):
            train_step(model, optimizer, inputs, targets, grad_clip=1.0)


def test_train_step_with_a_compiled_model_matches_eager():
    model, reference = _tiny_gpt(), _tiny_gpt()
    compiled = torch.compile(model, backend="aot_eager")  # tracing as Inductor does; test_model compiles fully
    inputs, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    loss = train_step(compiled, torch.optim.SGD(model.parameters(), lr=0.1), inputs, targets)
    ref_loss = train_step(reference, torch.optim.SGD(reference.parameters(), lr=0.1), inputs, targets)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for got, expected in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# GPU recipe: gradient accumulation, torch.compile, a tracking callback (each checked on the CPU)


@pytest.mark.parametrize("micro_batches", [2, 3, 8])
def test_micro_batches_accumulate_the_whole_batchs_gradient(micro_batches):
    inputs, targets = torch.randint(0, 50, (8, 12)), torch.randint(0, 50, (8, 12))
    targets[1, :7] = -100  # parts count different numbers of targets...
    targets[6] = -100  # ...and one counts none (skipped with 8 parts)
    results = []
    for parts in (1, micro_batches):
        model = _tiny_gpt()
        loss = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), inputs, targets, micro_batches=parts)
        results.append((loss, [p.grad.clone() for p in model.parameters()], list(model.parameters())))
    (loss, grads, weights), (acc_loss, acc_grads, acc_weights) = results
    assert acc_loss == pytest.approx(loss, rel=1e-6)
    for got, expected in zip(acc_grads + acc_weights, grads + weights, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_micro_batches_must_be_a_positive_int():
    model = _tiny_gpt()
    with pytest.raises(ValueError, match="micro_batches: expected a positive integer, got 0"):
        train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), *torch.zeros(2, 2, 12).long(), micro_batches=0)


def test_train_model_compile_traces_the_loss_and_matches_eager(verdict, monkeypatch):
    compiled = []
    eager_compile = nn.Module.compile

    def compile_aot_eager(module, *args, **kwargs):  # Inductor's tracing without its slow C++ build
        compiled.append(type(module).__name__)
        return eager_compile(module, *args, backend="aot_eager", **kwargs)

    monkeypatch.setattr(nn.Module, "compile", compile_aot_eager)
    histories = []
    for compile in (False, True):
        model, train_loader, val_loader = setup(verdict)
        kwargs = {"max_steps": 3, "eval_freq": 2, "eval_iter": 1, "progress": False}
        histories.append(train_model(model, train_loader, val_loader, device="cpu", compile=compile, **kwargs))
    assert compiled == ["NextTokenLoss"]
    assert histories[1].step_losses == pytest.approx(histories[0].step_losses, rel=1e-5)
    assert histories[1].val_losses == pytest.approx(histories[0].val_losses, rel=1e-5)


class Recorder:
    """A training callback that remembers what it was told."""

    def __init__(self):
        self.steps, self.evaluations = [], []

    def on_step(self, step, loss, lr, tokens):
        self.steps.append((step, loss, lr, tokens))

    def on_evaluation(self, step, train_loss, val_loss):
        self.evaluations.append((step, train_loss, val_loss))


def test_train_model_tells_a_callback_about_steps_and_evaluations(verdict):
    model, train_loader, val_loader = setup(verdict)
    recorder = Recorder()
    history = train_model(model, train_loader, val_loader, device="cpu", max_steps=4, eval_freq=2, eval_iter=1,
                          progress=False, use_schedule=True, callback=recorder)  # fmt: skip
    assert [s[0] for s in recorder.steps] == [1, 2, 3, 4]
    assert [s[1] for s in recorder.steps] == history.step_losses and [s[2] for s in recorder.steps] == history.lrs
    assert all(s[3] == 4 * 32 for s in recorder.steps)  # tokens of each batch of 4 windows of 32
    assert recorder.evaluations == list(zip(history.eval_steps, history.train_losses, history.val_losses, strict=True))


# --- no run ends in a silent wrong result ------------------------------------------------------------------


@pytest.mark.parametrize(("lr", "every"), [(1e30, 1), (1e6, 1), (100.0, 2)])
def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(verdict, tmp_path, lr, every):
    model, train_loader, val_loader = setup(verdict)
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(TrainingDivergedError) as info:
        train_model(
            model, train_loader, val_loader, device="cpu", lr=lr, num_epochs=3, eval_freq=100, progress=False,
            checkpoint_path=path, checkpoint_every=every,
        )
    message = str(info.value)
    saved = train.load_checkpoint(path)  # loads: every weight in it is finite
    assert message.startswith("training diverged at step ") and "loss: became nan" in message
    assert message.endswith(f"stopped, {path} keeps step {saved.step}") and saved.step % every == 0
    assert int(message.split()[4].rstrip(":")) > saved.step


def test_a_run_diverging_before_its_first_checkpoint_says_nothing_was_saved(verdict, tmp_path):
    model, train_loader, val_loader = setup(verdict)
    path = tmp_path / "ckpt.safetensors"
    with pytest.raises(TrainingDivergedError, match=r"at step 2: .*; stopped, nothing was saved$"):
        train_model(model, train_loader, val_loader, device="cpu", lr=1e30, eval_freq=100, progress=False,
                    checkpoint_path=path)
    assert not path.exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, r"lr: expected a number in \(0, inf\], got 0.0"),
        ({"lr": -1e-3}, r"lr: expected a number in \(0"),
        ({"lr": float("inf")}, "lr: expected a finite number, got inf"),
        ({"lr": float("nan")}, "lr: expected a finite number, got nan"),
        ({"lr": "4e-4"}, "lr: expected a finite number"),
        ({"grad_clip": 0.0}, r"grad_clip: expected a number in \(0"),
        ({"grad_clip": -1.0}, r"grad_clip: expected a number in \(0"),
        ({"grad_clip": float("nan")}, "grad_clip: expected a finite number, got nan"),
        ({"weight_decay": -0.1}, r"weight_decay: expected a number in \[0"),
        ({"weight_decay": float("nan")}, "weight_decay: expected a finite number"),
        ({"min_lr": -1.0}, r"min_lr: expected a number in \[0"),
        ({"warmup_steps": -1}, "warmup_steps: expected an integer >= 0, got -1"),
        ({"warmup_steps": 1.5}, "warmup_steps: expected an integer >= 0, got 1.5"),
        ({"use_schedule": True, "warmup_steps": 10_000}, "warmup_steps: expected an integer in"),
        ({"use_schedule": True, "lr": 1e-3, "min_lr": 1e-2}, "min_lr: expected a number in"),
    ],
)
def test_rates_and_caps_outside_their_range_fail_before_anything_is_written(verdict, tmp_path, kwargs, match):
    model, train_loader, val_loader = setup(verdict)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        train_model(model, train_loader, val_loader, device="cpu", progress=False,
                    checkpoint_path=tmp_path / "ckpt.safetensors", **kwargs)
    assert list(tmp_path.iterdir()) == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("grad_clip", [0.0, -1.0, float("inf"), float("nan")])
def test_train_step_refuses_a_meaningless_gradient_cap(grad_clip):
    model = _tiny_gpt()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="grad_clip: expected"):
        train_step(model, optimizer, inputs, targets, grad_clip=grad_clip)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_run_removes_the_temporaries_a_killed_save_left(verdict, tmp_path):
    stale = tmp_path / ".ckpt.safetensors.abc123.partial"
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / "notes.txt"
    other.write_text("kept")
    model, train_loader, val_loader = setup(verdict)
    train_model(model, train_loader, val_loader, device="cpu", max_steps=1, progress=False,
                checkpoint_path=tmp_path / "ckpt.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors", "notes.txt"]


def _tamper_extra(path, change):
    with safe_open(path, framework="pt") as f:
        header, tensors = json.loads(f.metadata()["minigpt"]), {k: f.get_tensor(k) for k in f.keys()}
    change(header["extra"], tensors)
    save_file(tensors, path, metadata={"minigpt": json.dumps(header)})


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (lambda e, t: e.update(epoch=-1), "extra.epoch", "a non-negative integer"),
        (lambda e, t: e.pop("batches_done"), "extra.batches_done", "a non-negative integer"),
        (lambda e, t: e.update(tokens_seen="many"), "extra.tokens_seen", "a non-negative integer"),
        (lambda e, t: e.update(history=[]), "extra.history", "an object of"),
        (lambda e, t: e["history"].update(typo=[]), "extra.history", "an object of"),
        (lambda e, t: e["history"].update(steps=99), "extra.history.steps", "the number of step_losses"),
        (lambda e, t: e["history"].update(lrs=["fast"]), "extra.history.lrs", "a list of numbers"),
        (lambda e, t: t.pop("extra.epoch_rng"), "tensors.epoch_rng", "a generator state"),
        (lambda e, t: t.update({"extra.epoch_rng": torch.zeros(3)}), "tensors.epoch_rng", "a generator state"),
    ],
)
def test_resuming_from_a_tampered_loop_state_names_the_field(verdict, tmp_path, change, field, expected):
    model, train_loader, val_loader = setup(verdict)
    path = tmp_path / "ckpt.safetensors"
    kwargs = {"device": "cpu", "eval_freq": 100, "progress": False}
    train_model(model, train_loader, val_loader, max_steps=2, checkpoint_path=path, **kwargs)
    _tamper_extra(path, change)
    with pytest.raises(ValueError) as info:
        train_model(model, train_loader, val_loader, max_steps=4, resume_from=path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"resume_from: {path}: field '{field}': expected {expected}"), message
    assert "\n" not in message


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_a_non_finite_gradient_stops_the_step_even_when_the_loss_is_finite(grad_clip):
    model = _tiny_gpt()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, targets = torch.randint(0, 50, (2, 12)), torch.randint(0, 50, (2, 12))
    model.trf_blocks[0].att.W_query.weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TrainingDivergedError, match="gradient norm: became nan"):
        train_step(model, optimizer, inputs, targets, grad_clip=grad_clip)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
