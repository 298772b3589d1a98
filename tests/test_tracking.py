"""Tests for experiment tracking: FLOPs per token, the TensorBoard tracker and reading its scalars back."""

import math

import pytest
import torch

from minigpt_lib.model import GPTModel
from minigpt_lib.tracking import (
    TrainingTracker,
    flops_per_token,
    matmul_parameters,
    measure_peak_flops,
    read_scalars,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {"vocab_size": 50, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": False}  # fmt: skip


def tiny_model(**changes):
    torch.manual_seed(0)
    return GPTModel({**CFG, **changes})


def test_matmul_parameters_are_12_d_squared_per_block_plus_the_head():
    d, n_layers, vocab = CFG["emb_dim"], CFG["n_layers"], CFG["vocab_size"]
    assert matmul_parameters(tiny_model()) == 12 * d * d * n_layers + vocab * d
    assert flops_per_token(tiny_model(), 16) == 6 * (12 * d * d * n_layers + vocab * d) + 12 * n_layers * 16 * d


def test_a_weight_shared_by_embedding_and_head_counts_once():
    model = tiny_model()
    model.out_head.weight = model.tok_emb.weight
    assert matmul_parameters(model) == 12 * CFG["emb_dim"] ** 2 * CFG["n_layers"] + CFG["vocab_size"] * CFG["emb_dim"]


def test_measuring_the_peak_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    assert measure_peak_flops("cpu", size=64) > 0
    assert torch.equal(state, torch.get_rng_state())


def run_steps(tracker, model, steps=4):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(0, CFG["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(0))
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
        loss.backward()
        optimizer.step()
        tracker.on_step(step, loss.item(), 0.1, x.numel())
        if step % 2 == 0:
            tracker.on_evaluation(step, loss.item(), loss.item() + 1)
    return loss.item()


def test_tracker_writes_every_scalar_and_prints_tokens_per_s_and_mfu(tmp_path, capsys):
    model = tiny_model()
    tracker = TrainingTracker(tmp_path, model, 16, peak_flops=1e9, log_every=2)
    last_loss = run_steps(tracker, model)
    tracker.close()
    scalars = read_scalars(tmp_path)
    assert sorted(scalars) == ["grad_norm", "loss/step", "loss/train", "loss/val", "lr", "mfu", "tokens_per_s"]
    assert scalars["loss/step"][0] == [1, 2, 3, 4]
    assert scalars["loss/val"][0] == [2, 4] and math.isclose(scalars["loss/val"][1][-1], last_loss + 1, rel_tol=1e-6)
    assert scalars["tokens_per_s"][0] == [2, 4]
    for tokens_per_s, mfu in zip(scalars["tokens_per_s"][1], scalars["mfu"][1], strict=True):
        assert math.isclose(mfu, tokens_per_s * flops_per_token(model, 16) / 1e9, rel_tol=1e-5)
    grad_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()])).item()
    assert math.isclose(scalars["grad_norm"][1][-1], grad_norm, rel_tol=1e-5)
    printed = capsys.readouterr().out
    assert "step 2: " in printed and " tokens/s, MFU " in printed


def test_without_a_peak_no_mfu_and_without_a_logdir_no_files(tmp_path, capsys):
    model = tiny_model()
    tracker = TrainingTracker(None, model, 16, log_every=4)
    run_steps(tracker, model)
    tracker.close()
    assert "MFU" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="holds no TensorBoard event files"):
        read_scalars(tmp_path)


def test_tracker_arguments_are_checked():
    with pytest.raises(ValueError, match="peak_flops: expected a number in"):
        TrainingTracker(None, tiny_model(), 16, peak_flops=0)
    with pytest.raises(ValueError, match="log_every: expected a positive integer"):
        TrainingTracker(None, tiny_model(), 16, log_every=0)


def test_a_missing_tensorboard_package_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match="logdir: writing TensorBoard logs needs the tensorboard package"):
        TrainingTracker(tmp_path, tiny_model(), 16)
