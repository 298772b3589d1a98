"""Measuring functions: matmul peak, training throughput, generation throughput, training-step peak memory.

Each returns plain dicts (one JSON record each) so the report, the JSON lines and the tests share them.
Implementations are interleaved round by round (A B C, A B C, ...) and every figure is a median, so a
noisy neighbour on a shared machine slows all of them alike instead of whichever happened to run then.
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .implementations import PROMPT_IDS, Implementation, find_implementation

REPO_ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock time covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_params(cfg: dict[str, Any]) -> int:
    """Weights that take part in matrix multiplications: 12·d² per block plus the output head.

    Embedding lookups, biases and norms cost (next to) no FLOPs, so they are left out, as in PaLM's MFU.
    """
    d = cfg["emb_dim"]
    return cfg["n_layers"] * 12 * d * d + cfg["vocab_size"] * d


def train_flops_per_token(cfg: dict[str, Any], tokens: int) -> float:
    """6·N for the weights (forward + backward) plus 12·layers·d·tokens for attention scores and sums."""
    return 6 * matmul_params(cfg) + 12 * cfg["n_layers"] * cfg["emb_dim"] * tokens


def generate_flops_per_token(cfg: dict[str, Any]) -> float:
    """2·N: one forward pass of one token through the weights (the useful work of a generated token)."""
    return 2 * matmul_params(cfg)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> dict:
    """The machine's matmul throughput (GFLOP/s, best of ``repeats``): the yardstick for MFU.

    Measured with ``torch.mm`` and, on x86 CPUs, with PyTorch's internal oneDNN product too: the faster is the
    peak. The two differ from host to host (MKL runs slower code on some AMD chips), which is why the results
    record both; the package itself only ever uses ``torch.mm``'s path.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    products = {"torch_mm": lambda: a @ b}
    onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if device.type == "cpu" else None
    if onednn is not None and torch.backends.mkldnn.is_available():
        products["onednn"] = lambda: onednn(a, b, None, "none", [], "")
    record = {"kind": "matmul_peak", "dtype": str(dtype).removeprefix("torch."), "size": size}
    for name, product in products.items():
        times = []
        for i in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            product()
            sync(device)
            if i:  # the first call warms up
                times.append(time.perf_counter() - start)
        record[f"{name}_gflops"] = 2 * size**3 / min(times) / 1e9
    return {**record, "gflops": max(record[f"{name}_gflops"] for name in products)}


def _batch(cfg: dict[str, Any], batch: int, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg["vocab_size"], (batch, tokens + 1), generator=gen)
    return data[:, :-1].to(device), data[:, 1:].to(device)


def _build(impl: Implementation, cfg: dict[str, Any], device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return impl.build(cfg).to(device)


def measure_training(
    impls: list[Implementation],
    cfg: dict[str, Any],
    config_name: str,
    batch: int,
    tokens: int,
    device: torch.device,
    dtype: str = "fp32",
    rounds: int = 3,
    warmup: int = 1,
) -> list[dict]:
    """Tokens per second of one training step (forward, loss, backward, AdamW), one record per implementation.

    Each round builds every model afresh (seed 0), runs ``warmup`` untimed steps and one timed step, so
    only one model is in memory at a time; rounds interleave the implementations.
    """
    impls = [impl for impl in impls if impl.step is not None]
    x, y = _batch(cfg, batch, tokens, device)
    samples: dict[str, list[tuple[float, float]]] = {impl.name: [] for impl in impls}
    for _ in range(rounds):
        for impl in impls:
            model = _build(impl, cfg, device).train()
            opt = impl.make_optimizer(model)
            for _ in range(warmup):
                impl.step(model, opt, x, y, dtype == "bf16")
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            impl.step(model, opt, x, y, dtype == "bf16")
            sync(device)
            samples[impl.name].append((time.perf_counter() - wall, time.process_time() - cpu))
            del model, opt
            gc.collect()
    records = []
    for impl in impls:
        step_s = statistics.median(s[0] for s in samples[impl.name])
        records.append(
            {
                "kind": "train",
                "impl": impl.name,
                "config": config_name,
                "dtype": dtype,
                "batch": batch,
                "tokens": tokens,
                "step_s": step_s,
                "cpu_s": statistics.median(s[1] for s in samples[impl.name]),
                "samples_s": [round(s[0], 4) for s in samples[impl.name]],
                "tokens_per_s": batch * tokens / step_s,
                "tflops": batch * tokens * train_flops_per_token(cfg, tokens) / step_s / 1e12,
            }
        )
    return records


def measure_generation(
    impls: list[Implementation],
    cfg: dict[str, Any],
    config_name: str,
    new_tokens: int,
    device: torch.device,
    modes: dict[str, tuple[bool, ...]],
    rounds: int = 3,
) -> list[dict]:
    """New tokens per second of greedy generation from :data:`PROMPT_IDS`, per implementation and cache mode.

    ``modes`` maps an implementation name to the cache settings to time (``True`` = KV cache). Each round
    builds each model once, warms it up with a 2-token generation, then times each mode.
    """
    prompt = torch.tensor([PROMPT_IDS], device=device) % cfg["vocab_size"]  # tiny test vocabularies too
    impls = [impl for impl in impls if modes.get(impl.name)]
    samples: dict[tuple[str, bool], list[float]] = {}
    failed: dict[tuple[str, bool], str] = {}
    for _ in range(rounds):
        for impl in impls:
            model = _build(impl, cfg, device).eval()
            for use_cache in modes[impl.name]:
                if (impl.name, use_cache) in failed:
                    continue
                try:
                    with torch.no_grad():
                        impl.generate(model, prompt, 2, use_cache)
                        sync(device)
                        start = time.perf_counter()
                        out = impl.generate(model, prompt, new_tokens, use_cache)
                        sync(device)
                        elapsed = time.perf_counter() - start
                    if out.shape[1] != prompt.shape[1] + new_tokens:
                        raise RuntimeError(f"returned {out.shape[1]} tokens, expected prompt + {new_tokens}")
                except Exception as error:  # a broken peer is reported, not fatal
                    failed[impl.name, use_cache] = f"{type(error).__name__}: {error}"
                    continue
                samples.setdefault((impl.name, use_cache), []).append(elapsed)
            del model
            gc.collect()
    errors = [
        {"kind": "error", "impl": name, "measure": f"generate {new_tokens} use_cache={use_cache}", "error": message}
        for (name, use_cache), message in failed.items()
    ]
    return errors + [
        {
            "kind": "generate",
            "impl": name,
            "config": config_name,
            "new_tokens": new_tokens,
            "use_cache": use_cache,
            "seconds": statistics.median(times),
            "samples_s": [round(t, 4) for t in times],
            "tokens_per_s": new_tokens / statistics.median(times),
            "tflops": new_tokens * generate_flops_per_token(cfg) / statistics.median(times) / 1e12,
        }
        for (name, use_cache), times in samples.items()
    ]


def _memory_bytes(field: str) -> int | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident peak) of this process from /proc, None off Linux."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def _max_rss_bytes() -> int:
    """Peak resident memory of this process. ``getrusage`` is the fallback only: after fork + exec it
    still holds the parent's peak, while ``VmHWM`` starts afresh with the new program."""
    peak = _memory_bytes("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def training_memory(impl_name: str, cfg: dict[str, Any], batch: int, tokens: int, device: torch.device) -> dict:
    """Peak memory of two training steps in this process: CUDA allocator peak, or resident set growth on CPU.

    On CPU call it in a fresh process (:func:`measure_memory` does), since the peak RSS never goes down.
    """
    impl = find_implementation(impl_name)
    x, y = _batch(cfg, batch, tokens, device)
    model = _build(impl, cfg, device).train()
    opt = impl.make_optimizer(model)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _memory_bytes("VmRSS") or _max_rss_bytes()
    for _ in range(2):
        impl.step(model, opt, x, y, False)
    sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _max_rss_bytes()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "kind": "memory",
        "impl": impl_name,
        "batch": batch,
        "tokens": tokens,
        "device": device.type,
        "params_mb": params / 1e6,
        "before_mb": before / 1e6,
        "peak_mb": peak / 1e6,
        "step_peak_mb": (peak - before) / 1e6,
    }


def measure_memory(
    impl_name: str, cfg: dict[str, Any], config_name: str, batch: int, tokens: int, device: torch.device, threads: int
) -> dict:
    """:func:`training_memory` in a fresh Python process (CPU) or in this one (CUDA), as one record."""
    if device.type == "cuda":
        record = training_memory(impl_name, cfg, batch, tokens, device)
    else:
        args = json.dumps(
            {"impl": impl_name, "cfg": cfg, "batch": batch, "tokens": tokens, "device": device.type, "threads": threads}
        )
        code = "import sys; from benchmarks.measure import _memory_child; _memory_child(sys.argv[1])"
        done = subprocess.run(
            [sys.executable, "-c", code, args], capture_output=True, text=True, check=False, cwd=REPO_ROOT
        )
        if done.returncode:
            raise RuntimeError(f"memory child for {impl_name} failed:\n{done.stderr[-2000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
    return {**record, "config": config_name}


def _memory_child(args_json: str) -> None:
    args = json.loads(args_json)
    torch.set_num_threads(args["threads"])
    record = training_memory(args["impl"], args["cfg"], args["batch"], args["tokens"], torch.device(args["device"]))
    print(json.dumps(record))
