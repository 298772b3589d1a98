"""Tests for minigpt_lib.distributed: sharded batches, and torchrun with 2 CPU processes against 1 process."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from minigpt_lib.checkpoint import load_checkpoint
from minigpt_lib.cli import main
from minigpt_lib.distributed import (
    get_world_size,
    init_distributed,
    is_main_process,
    mean_over_processes,
    shard_loader,
)

# A tiny character-level model without dropout, so that no random draws depend on the batch shape.
TINY = "--tokenizer char --set emb_dim=32 --set n_layers=2 --set n_heads=2 --set drop_rate=0 --context-length 32"
TINY = [*TINY.split(), *"--batch-size 4 --eval-freq 2 --eval-iter 2 --quiet".split()]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # keeps TIKTOKEN_CACHE_DIR and MINIGPT_DATA_DIR
# One process averages the loss over 4 windows in one float32 reduction; two processes average over
# 2 windows each and all-reduce the gradients. Same sums, other order: rounding differs near 1e-7.
RTOL = 1e-5


def loader(n_windows, shuffle, drop_last, batch_size=4):
    """A loader over the windows 0, 1, ..., n_windows - 1 (each item is its own index)."""
    return DataLoader(list(range(n_windows)), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)


def shards(global_loader, world_size, seed=0):
    """Each process's batches, every process starting from the same seed (as torchrun's processes do)."""
    per_rank = []
    for rank in range(world_size):
        torch.manual_seed(seed)
        per_rank.append([batch.tolist() for batch in shard_loader(global_loader, world_size, rank)])
    return per_rank


def test_shards_together_are_the_single_process_batches():
    global_loader = loader(23, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    single = [batch.tolist() for batch in global_loader]
    rank0, rank1 = shards(global_loader, 2)
    assert len(rank0) == len(rank1) == len(single) == 5
    assert all(len(batch) == 2 for batch in rank0 + rank1)
    for k, batch in enumerate(single):
        assert sorted(rank0[k] + rank1[k]) == sorted(batch)  # same windows, in every step


def test_unshuffled_shards_repeat_windows_to_split_evenly():
    """Like DistributedSampler: 7 windows for 2 processes become 8, the first one used twice."""
    rank0, rank1 = shards(loader(7, shuffle=False, drop_last=False), 2)
    assert rank0 == [[0, 2], [4, 6]] and rank1 == [[1, 3], [5, 0]]


def test_the_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="batch_size: the global batch of 4 windows must split evenly between 3"):
        shard_loader(loader(23, shuffle=True, drop_last=True), world_size=3, rank=0)
    with pytest.raises(TypeError, match="loader: data-parallel training needs a torch DataLoader"):
        shard_loader([(torch.zeros(4, 8), torch.zeros(4, 8))], world_size=2, rank=0)


def test_without_torchrun_nothing_changes(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed(torch.device("cpu")) == torch.device("cpu")
    assert get_world_size() == 1 and is_main_process() and mean_over_processes(2.5) == 2.5
    single = loader(23, shuffle=True, drop_last=True)
    assert shard_loader(single) is single


# --- torchrun with 2 CPU processes (Gloo) against 1 process ---------------------------------------


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (the rendezvous of the two processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def history(out):
    return json.loads((out / "history.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Two processes (torchrun) for 6 steps; meanwhile one process, here, for 8; then the first run resumed here."""
    root = tmp_path_factory.mktemp("ddp")
    launch = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    launch += [f"--master_port={free_port()}", "-m", "minigpt_lib", "train", "the-verdict", *TINY]
    launch += ["--max-steps", "6", "--out", str(root / "two")]
    with subprocess.Popen(
        [sys.executable, *launch], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    ) as two:
        assert main(["train", "the-verdict", *TINY, "--max-steps", "8", "--out", str(root / "one")]) == 0
        stdout, stderr = two.communicate(timeout=180)
    assert two.returncode == 0, stdout + stderr
    shutil.copytree(root / "two", root / "resumed")
    assert main(["train", "--resume", "--max-steps", "8", "--out", str(root / "resumed")]) == 0
    return root, stdout


def test_two_processes_log_the_losses_of_one_process(runs):
    root, stdout = runs
    one, two = history(root / "one"), history(root / "two")
    assert two["steps"] == 6 and two["eval_steps"] == [1, 3, 5]
    assert two["step_losses"] == pytest.approx(one["step_losses"][:6], rel=RTOL)
    assert two["train_losses"] == pytest.approx(one["train_losses"][:3], rel=RTOL)
    assert two["val_losses"] == pytest.approx(one["val_losses"][:3], rel=RTOL)
    assert two["tokens_seen"] == one["tokens_seen"][:3] == [128, 384, 640]  # 4 windows of 32 per step
    assert stdout.count("model: ") == stdout.count("after 6 steps") == 1  # rank 0 alone prints
    assert "rank 0 of 2 processes" in stdout


def test_rank_0_writes_one_checkpoint_that_resumes_in_one_process(runs):
    root, _ = runs
    assert sorted(p.name for p in (root / "two").iterdir()) == [
        "checkpoint.safetensors",
        "history.json",
        "train_args.json",
    ]
    # It loads into a plain GPTModel: the names carry no "module." prefix from the DDP wrapper.
    assert load_checkpoint(root / "two" / "checkpoint.safetensors").step == 6
    one, resumed = history(root / "one"), history(root / "resumed")
    assert resumed["steps"] == 8 and resumed["step_losses"] == pytest.approx(one["step_losses"], rel=RTOL)
    weights_one = load_checkpoint(root / "one" / "checkpoint.safetensors").model.state_dict()
    for name, weight in load_checkpoint(root / "resumed" / "checkpoint.safetensors").model.state_dict().items():
        torch.testing.assert_close(weight, weights_one[name], rtol=RTOL, atol=1e-6)
