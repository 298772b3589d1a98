"""Tests for batches from token files: random-offset windows through np.memmap, and training from them."""

import json
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_runner import ENV, run_cli

from minigpt_lib.cli import main
from minigpt_lib.prepare import prepare_token_files, read_meta
from minigpt_lib.token_data import TokenWindowLoader
from minigpt_lib.tracking import read_scalars

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Token files of six short generated documents, two of them for validation."""
    root = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    words = ["the", "verdict", "was", "a", "surprise", "to", "everyone", ",", ".", "\n"]
    for i in range(6):
        text = " ".join(rng.choice(words, size=400 + 50 * i))
        (root / f"doc{i}.txt").write_text(text, encoding="utf-8")
    prepare_token_files([root], root / "out", val_fraction=0.3, workers=1, progress=False)
    return root / "out"


def test_random_windows_are_seeded_and_are_slices_of_the_file(prepared):
    loader = TokenWindowLoader(prepared, "train", batch_size=4, context_length=8)
    tokens = np.fromfile(prepared / "train.bin", dtype=np.uint16).astype(np.int64)
    torch.manual_seed(0)
    first = list(loader)
    torch.manual_seed(0)
    again = list(loader)
    assert len(first) == len(loader) == len(tokens) // 32
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one token
        for row in x:
            starts = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(tokens, 8).__eq__(row.numpy()).all(1))
            assert len(starts) >= 1
    torch.manual_seed(1)
    assert not torch.equal(next(iter(loader))[0], first[0][0])


def test_random_windows_draw_one_number_from_the_global_generator_per_epoch(prepared):
    loader = TokenWindowLoader(prepared, "train", batch_size=2, context_length=4, batches_per_epoch=5)
    torch.manual_seed(0)
    batches = iter(loader)
    state = torch.get_rng_state()
    list(batches)  # drawing the batches themselves leaves the global generator alone (dropout is not moved)
    assert torch.equal(state, torch.get_rng_state())


def test_evenly_spaced_windows_span_the_file_and_never_change(prepared):
    loader = TokenWindowLoader(prepared, "val", batch_size=2, context_length=4, random=False, batches_per_epoch=3)
    tokens = np.fromfile(prepared / "val.bin", dtype=np.uint16).astype(np.int64)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [2, 2, 2]
    np.testing.assert_array_equal(batches[0][0][0], tokens[:4])
    np.testing.assert_array_equal(batches[-1][1][-1], tokens[-4:])  # the last target ends the file
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, loader, strict=True))


def test_shards_of_a_batch_together_are_the_whole_batch(prepared):
    loader = TokenWindowLoader(prepared, "train", batch_size=4, context_length=8, batches_per_epoch=2)
    torch.manual_seed(3)
    whole = list(loader)
    shards = []
    for rank in range(2):
        torch.manual_seed(3)
        shards.append(list(loader.shard(2, rank)))
    for k, (x, _) in enumerate(whole):
        assert torch.equal(x[0::2], shards[0][k][0]) and torch.equal(x[1::2], shards[1][k][0])
    with pytest.raises(ValueError, match="batch_size: the global batch of 4 windows must split evenly between 3"):
        loader.shard(3, 0)


def test_too_short_a_file_for_one_window_is_refused(prepared):
    n = read_meta(prepared)["val"]["tokens"]
    with pytest.raises(ValueError, match=f"val.bin: {n} tokens are too few for one window of context_length={n}"):
        TokenWindowLoader(prepared, "val", batch_size=1, context_length=n)


# --------------------------------------------------------------------------------------------------
# Training from token files on the command line


TINY = "--set emb_dim=32 --set n_layers=2 --set n_heads=2 --context-length 16 --eval-iter 2 --quiet".split()


def history(out):
    return json.loads((out / "history.json").read_text())


def test_cli_trains_from_token_files_and_logs_tensorboard_scalars(prepared, tmp_path):
    logdir = tmp_path / "tb"
    result = run_cli("train", "--data", str(prepared), *TINY, "--max-steps", "4", "--eval-freq", "2",
                     "--tensorboard", str(logdir), "--peak-flops", "1e12", "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "step 2: " in result.stdout and " tokens/s, MFU " in result.stdout
    scalars = read_scalars(logdir)
    assert {"loss/step", "loss/train", "loss/val", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(scalars)
    assert scalars["loss/step"][0] == [1, 2, 3, 4] and scalars["loss/val"][0] == [1, 3]
    saved = history(tmp_path / "run")
    assert scalars["loss/val"][1] == pytest.approx(saved["val_losses"], rel=1e-6)
    assert saved["tokens_seen"] == [8 * 16, 3 * 8 * 16]  # batches of 8 windows of 16 tokens


def test_training_from_token_files_resumes_exactly(prepared, tmp_path):
    common = ["train", "--data", str(prepared), *TINY, "--eval-freq", "2"]
    assert main([*common, "--max-steps", "6", "--out", str(tmp_path / "whole")]) == 0
    assert main([*common, "--max-steps", "3", "--out", str(tmp_path / "parts")]) == 0
    assert main(["train", "--resume", "--max-steps", "6", "--quiet", "--out", str(tmp_path / "parts")]) == 0
    whole, parts = history(tmp_path / "whole"), history(tmp_path / "parts")
    assert parts["step_losses"] == whole["step_losses"] and parts["val_losses"] == whole["val_losses"]


def test_batch_tokens_accumulates_micro_batches_to_the_same_steps(prepared, tmp_path):
    # Without dropout: micro-batches draw their dropout masks in pieces, so masks would differ.
    common = ["train", "--data", str(prepared), *TINY, "--max-steps", "3", "--eval-freq", "2", "--set", "drop_rate=0"]
    assert main([*common, "--batch-size", "4", "--out", str(tmp_path / "big")]) == 0
    assert main([*common, "--batch-size", "1", "--batch-tokens", str(4 * 16), "--out", str(tmp_path / "acc")]) == 0
    big, acc = history(tmp_path / "big"), history(tmp_path / "acc")
    assert acc["step_losses"] == pytest.approx(big["step_losses"], rel=1e-5)
    assert acc["tokens_seen"] == big["tokens_seen"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "nowhere"], "nowhere/meta.json: no such file"),
        (["the-verdict", "--data", "nowhere"], r"or --data with a folder of token files \(not both\)"),
        (["--batch-tokens", "100"], "--batch-tokens: expected a positive multiple of --batch-size x context length"),
        (["--tokenizer", "char"], "--tokenizer: the token files in .* hold gpt2 ids"),
        (["--val-fraction", "0.2"], "--val-fraction: token files were split by document when prepared"),
    ],
)
def test_cli_train_data_errors_are_one_line(prepared, tmp_path, capsys, args, message):
    if args[0] != "--data" and "--data" not in args:
        args = ["--data", str(prepared), *args]
    assert main(["train", *args, *TINY, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err


def test_two_processes_with_micro_batches_log_the_losses_of_one_process(prepared, tmp_path):
    with socket.socket() as s:  # a free port for the two processes' rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["train", "--data", str(prepared), *TINY, "--max-steps", "3", "--eval-freq", "2", "--set", "drop_rate=0",
              "--batch-size", "2", "--batch-tokens", str(4 * 16), "--device", "cpu"]  # fmt: skip
    launch = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}"]
    two = subprocess.run([sys.executable, *launch, "-m", "minigpt_lib", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    one, two = history(tmp_path / "one"), history(tmp_path / "two")
    assert two["step_losses"] == pytest.approx(one["step_losses"], rel=1e-5)
    assert two["val_losses"] == pytest.approx(one["val_losses"], rel=1e-5)
    assert two["tokens_seen"] == one["tokens_seen"] == [64, 192]
