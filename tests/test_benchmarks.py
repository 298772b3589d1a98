"""Smoke test of the benchmark suite: its measuring functions run on a tiny model and give sane records.

No timing is asserted (the machine may be busy); only that every figure exists, is positive and finite.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` sits beside `tests`, not installed

from benchmarks import bench, measure  # noqa: E402
from benchmarks.implementations import all_implementations, find_implementation  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "vocab_size": 300,
    "context_length": 16,
    "emb_dim": 16,
    "n_heads": 2,
    "n_layers": 2,
    "drop_rate": 0.0,
    "qkv_bias": False,
}
CPU = torch.device("cpu")


def _ours():
    return [find_implementation("minigpt (ours)")]  # without importing the peers' packages


def test_ours_comes_first_and_is_marked():
    impls = all_implementations()
    assert impls[0].ours and sum(impl.ours for impl in impls) == 1


def test_training_records_are_sane():
    records = measure.measure_training(_ours(), TINY, "tiny", batch=2, tokens=8, device=CPU, rounds=2)
    (record,) = records
    assert record["kind"] == "train" and record["impl"] == "minigpt (ours)"
    assert len(record["samples_s"]) == 2
    assert record["tokens_per_s"] > 0 and math.isfinite(record["tokens_per_s"])
    assert record["tokens_per_s"] == pytest.approx(2 * 8 / record["step_s"])
    json.dumps(record)


def test_generation_records_cover_both_cache_modes():
    ours = _ours()
    records = measure.measure_generation(ours, TINY, "tiny", 5, CPU, {ours[0].name: (False, True)}, rounds=1)
    assert {r["use_cache"] for r in records} == {False, True}
    assert all(r["kind"] == "generate" and r["tokens_per_s"] > 0 for r in records)


def test_a_failing_peer_is_reported_not_fatal():
    broken = measure.Implementation("broken", _ours()[0].build, None, lambda *args: 1 / 0)
    (record,) = measure.measure_generation([broken], TINY, "tiny", 3, CPU, {"broken": (True,)}, rounds=1)
    assert record["kind"] == "error" and "ZeroDivisionError" in record["error"]


def test_memory_record_from_a_fresh_process():
    record = measure.measure_memory("minigpt (ours)", TINY, "tiny", 2, 8, CPU, threads=1)
    assert record["kind"] == "memory" and record["peak_mb"] >= record["before_mb"] > 0


def test_flops_match_the_usual_formulas():
    cfg = bench.CONFIG_124M
    n = measure.matmul_params(cfg)
    assert n == 12 * 12 * 768**2 + 50257 * 768
    assert measure.train_flops_per_token(cfg, 256) == 6 * n + 12 * 12 * 768 * 256
    assert measure.matmul_peak(CPU, size=64, repeats=2)["gflops"] > 0


def test_table_shows_ratios_to_the_best_peer():
    records = [
        {
            "kind": "train",
            "impl": "minigpt (ours)",
            "config": "c",
            "dtype": "fp32",
            "batch": 1,
            "tokens": 2,
            "tokens_per_s": 300.0,
        },
        {
            "kind": "train",
            "impl": "peer A",
            "config": "c",
            "dtype": "fp32",
            "batch": 1,
            "tokens": 2,
            "tokens_per_s": 200.0,
        },
        {
            "kind": "train",
            "impl": "peer B",
            "config": "c",
            "dtype": "fp32",
            "batch": 1,
            "tokens": 2,
            "tokens_per_s": 100.0,
        },
        {"kind": "memory", "impl": "minigpt (ours)", "config": "c", "batch": 1, "tokens": 2, "step_peak_mb": 50.0},
        {"kind": "memory", "impl": "peer A", "config": "c", "batch": 1, "tokens": 2, "step_peak_mb": 100.0},
    ]
    text = bench.table(records)
    assert "300 (1.50×)" in text and "**1.50×**" in text  # throughput: ours / fastest peer
    assert "**0.50×**" in text  # memory: ours / smallest peer, lower is better


def test_ours_trains_with_the_packages_train_step_and_optimizer(monkeypatch):
    from minigpt_lib import train

    calls = []
    real_step = train.train_step
    monkeypatch.setattr("benchmarks.implementations.train_step", lambda *a, **k: calls.append(k) or real_step(*a, **k))
    impl = _ours()[0]
    model = impl.build(TINY)
    optimizer = impl.make_optimizer(model)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    x = torch.randint(0, TINY["vocab_size"], (2, 8))
    before = [p.detach().clone() for p in model.parameters()]
    impl.step(model, optimizer, x, x, True)
    assert calls == [{"amp": True}]
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_peers_get_fused_adamw():
    optimizer = measure.Implementation("peer", _ours()[0].build, None, None).make_optimizer(torch.nn.Linear(2, 2))
    assert optimizer.defaults["fused"] and optimizer.defaults["lr"] == 4e-4


def test_quick_plan_is_smaller_than_the_full_one():
    quick, full = bench.plan(True, CPU), bench.plan(False, CPU)
    assert len(quick["generate"]) < len(full["generate"])
    assert quick["train"][1][1] <= full["train"][1][1]
