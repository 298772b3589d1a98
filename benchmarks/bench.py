"""Benchmark minigpt_lib against Hugging Face GPT-2 and llms-from-scratch: training, generation, memory.

Run from the repository root: ``python -m benchmarks.bench [--quick] [--device auto] [--json out.jsonl]``.
Prints one JSON record per figure and, at the end, a Markdown table with every figure next to its ratio to
the best peer (the fastest, or for memory the smallest, implementation that is not a minigpt variant).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from minigpt_lib import GPT_CONFIG_124M
from minigpt_lib.utils import get_device

from .implementations import all_implementations
from .measure import (
    matmul_peak,
    measure_generation,
    measure_memory,
    measure_training,
)

#: The small training config of the issue: context 256, width 384, 6 heads, 6 layers, GPT-2 vocabulary.
CONFIG_SMALL: dict[str, Any] = {
    **GPT_CONFIG_124M,
    "context_length": 256,
    "emb_dim": 384,
    "n_heads": 6,
    "n_layers": 6,
    "drop_rate": 0.0,
}
CONFIG_124M: dict[str, Any] = {**GPT_CONFIG_124M, "drop_rate": 0.0}
CONFIGS = {"small": CONFIG_SMALL, "124M": CONFIG_124M}


def plan(quick: bool, device: torch.device) -> dict[str, Any]:
    """What to measure: sizes, dtypes and repeats for quick or full mode on this device."""
    gpu = device.type in ("cuda", "mps")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu" and not quick
    return {
        "train": [  # (config, batch, tokens, rounds)
            ("small", 8, 256, 1 if quick else 5),
            (
                "124M",
                (8 if gpu else 2) if quick else (8 if gpu else 4),
                256 if quick or not gpu else 1024,
                1 if quick else 3,
            ),
        ],
        "train_dtypes": ["fp32", "bf16"] if bf16 else ["fp32"],
        "generate": [  # (new tokens, rounds, no-cache for peers too, no-cache for ours)
            (100, 1 if quick else 3, not quick, True),
            *([] if quick else [(500, 1, False, True)]),
        ],
        "memory": ("small", 8, 256) if quick and not gpu else ("124M", 2 if quick else 4, 256),
    }


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    """Date, CPU model, cores, GPU, torch version and threads: the header of a results file."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "kind": "machine",
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
    }


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(records: list[dict]) -> str:
    """Markdown table: one row per figure, one column per implementation, ``value (ratio to best peer)``."""
    names: list[str] = []
    rows: dict[str, dict[str, float]] = {}
    lower_is_better: set[str] = set()
    one_thread = any(r["kind"] == "machine" and r["threads"] == 1 and r["device"] == "cpu" for r in records)
    for r in records:
        if r["kind"] == "train" and one_thread:  # CPU time is meaningful per step only without helper threads
            row = f"train {r['config']} {r['dtype']} {r['batch']}×{r['tokens']}: tokens per CPU-second"
            rows.setdefault(row, {})[r["impl"]] = r["batch"] * r["tokens"] / r["cpu_s"]
        if r["kind"] == "train":
            row = f"train {r['config']} {r['dtype']} {r['batch']}×{r['tokens']}: tokens/s"
            value = r["tokens_per_s"]
        elif r["kind"] == "generate":
            cache = "KV cache" if r["use_cache"] else "no cache"
            row = f"generate {r['config']} {r['new_tokens']} new, {cache}: tokens/s"
            value = r["tokens_per_s"]
        elif r["kind"] == "memory":
            row = f"train {r['config']} {r['batch']}×{r['tokens']}: step peak memory MB (lower is better)"
            value = r["step_peak_mb"]
            lower_is_better.add(row)
        elif r["kind"] == "mfu":
            row = f"train {r['config']} {r['dtype']}: MFU % of matmul peak"
            value = r["mfu_percent"]
        else:
            continue
        if r["impl"] not in names:
            names.append(r["impl"])
        rows.setdefault(row, {})[r["impl"]] = value
    ours = next((n for n in names if "ours" in n), None)
    lines = ["| figure | " + " | ".join(names) + " | ours ÷ best peer |", "|---" * (len(names) + 2) + "|"]
    for row, values in rows.items():
        peers = {n: v for n, v in values.items() if not n.startswith("minigpt")}
        pick = min if row in lower_is_better else max
        best = pick(peers.values()) if peers else None
        cells = []
        for n in names:
            if n not in values:
                cells.append("–")
            elif best:
                cells.append(f"{_fmt(values[n])} ({values[n] / best:.2f}×)")
            else:
                cells.append(_fmt(values[n]))
        ratio = f"**{values[ours] / best:.2f}×**" if best and ours in values else "–"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {ratio} |")
    lines += [f"\n- {r['impl']} failed at {r['measure']}: {r['error']}" for r in records if r["kind"] == "error"]
    return "\n".join(lines)


def run(args: argparse.Namespace, emit) -> list[dict]:  # noqa: ANN001
    """Measure everything the plan lists, passing each record to ``emit`` as soon as it exists."""
    device = get_device(args.device)
    torch.set_num_threads(args.threads)
    todo = plan(args.quick, device)
    impls = [i for i in all_implementations() if not args.impls or any(s in i.name for s in args.impls)]
    records: list[dict] = []

    def keep(record: dict) -> None:
        records.append(record)
        emit(record)

    keep(machine_info(device, torch.get_num_threads()))
    keep({"kind": "implementations", "names": [i.name for i in impls], "quick": args.quick})
    sections = set(args.only or ["train", "generate", "memory"])
    if "train" in sections:
        trained = []
        for config, batch, tokens, rounds in todo["train"]:
            for dtype in todo["train_dtypes"]:
                for r in measure_training(impls, CONFIGS[config], config, batch, tokens, device, dtype, rounds):
                    keep(r)
                    trained.append(r)
        for dtype in todo["train_dtypes"]:  # measured after training, twice: the better one is the peak
            torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
            peak = max((matmul_peak(device, torch_dtype) for _ in range(2)), key=lambda p: p["gflops"])
            keep(peak)
            for r in trained:
                if r["dtype"] == dtype:
                    mfu = 100 * r["tflops"] * 1e3 / peak["gflops"]
                    keep({"kind": "mfu", "impl": r["impl"], "config": r["config"], "dtype": dtype, "mfu_percent": mfu})
    if "generate" in sections:
        for new_tokens, rounds, peers_no_cache, ours_no_cache in todo["generate"]:
            modes = {
                i.name: tuple(c for c in i.cache_modes if c or (ours_no_cache if i.ours else peers_no_cache))
                for i in impls
            }
            for r in measure_generation(impls, CONFIG_124M, "124M", new_tokens, device, modes, rounds):
                keep(r)
    if "memory" in sections:
        config, batch, tokens = todo["memory"]
        names = [impl.name for impl in impls if impl.step is not None]
        # On CPU each measurement is a child process with its own peak, so two can run at once; CUDA's run here.
        with ThreadPoolExecutor(max_workers=2 if device.type == "cpu" else 1) as pool:
            for record in pool.map(
                lambda name: measure_memory(name, CONFIGS[config], config, batch, tokens, device, args.threads), names
            ):
                keep(record)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (minutes on 2 CPU cores)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--json", metavar="PATH", help="also write the JSON lines to this file")
    parser.add_argument("--only", nargs="+", choices=["train", "generate", "memory"], help="run only these sections")
    parser.add_argument("--impls", nargs="+", metavar="NAME", help="only implementations whose name contains these")
    args = parser.parse_args(argv)
    out = open(args.json, "w") if args.json else None  # noqa: SIM115

    def emit(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            print(line, file=out, flush=True)

    records = run(args, emit)
    if out:
        out.close()
    print()
    print(table(records))


if __name__ == "__main__":
    sys.exit(main())
