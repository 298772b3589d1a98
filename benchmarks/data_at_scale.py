"""Token files at scale: prepare throughput and memory on a generated corpus; training from memmap vs memory.

    .venv/bin/python -m benchmarks.data_at_scale [--mb 200] [--workers N] [--only prepare|train]

1. prepare: a corpus of ``--mb`` MB (documents of 1 KB to 2 MB cut from tiny Shakespeare at random, plus one
   document of a tenth of the corpus, read in chunks) is tokenized by ``minigpt_lib.prepare`` in a child
   process. Printed: MB/s of text, the peak resident memory of the main process and of the largest worker, and
   the same for a corpus a quarter the size (bounded memory: the peaks should not grow with the corpus). Peer
   in the same run: tiktoken's ``encode_ordinary`` on the same bytes in one process, the file already in memory.
2. train: tokens/s of ``minigpt_lib.train.train_step`` at the small preset (batches of 4 x 128 tokens) on windows
   read from the ``train.bin`` of a ``--train-mb`` corpus through ``np.memmap`` (``TokenWindowLoader``) and on the
   same windows sliced from a token tensor in memory, alternating rounds; the ratio memmap / memory.

The host (``lscpu`` model name) and the thread count are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from minigpt_lib.config import PRESETS
from minigpt_lib.corpora import load_text
from minigpt_lib.model import GPTModel
from minigpt_lib.token_data import TokenWindowLoader
from minigpt_lib.tokenizer import get_tokenizer
from minigpt_lib.train import make_adamw, train_step


def host() -> str:
    """The CPU's model name as ``lscpu`` prints it (the figures depend on it)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def make_corpus(folder: Path, megabytes: float, seed: int = 0) -> int:
    """Write documents cut from tiny Shakespeare at random into ``folder`` until ``megabytes`` MB; return bytes."""
    source = load_text("tinyshakespeare")
    rng = np.random.default_rng(seed)
    target, written, i = int(megabytes * 1e6), 0, 0
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [target // 10]  # one large document, tokenized in chunks
    while written + sum(sizes) < target:
        sizes.append(int(np.exp(rng.uniform(np.log(1e3), np.log(2e6)))))
    for size in sizes:
        with open(folder / f"doc{i:05d}.txt", "w", encoding="utf-8") as f:
            left = size
            while left > 0:
                start = int(rng.integers(0, len(source) - 1000))
                piece = source[start : start + min(left, 200_000)]
                f.write(piece)
                left -= len(piece)
        written += size
        i += 1
    return sum(p.stat().st_size for p in folder.iterdir())


CHILD = """
import json, resource, sys, time
from minigpt_lib.prepare import prepare_token_files
start = time.perf_counter()
meta = prepare_token_files([sys.argv[1]], sys.argv[2], workers=int(sys.argv[3]), progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": meta["train"]["tokens"] + meta["val"]["tokens"],
                  "main_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measure_prepare(corpus: Path, out: Path, workers: int) -> dict:
    """Run prepare in a fresh process (its memory is its own) and return its timings and peak memory."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(corpus), str(out), str(workers)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def tiktoken_one_process(corpus: Path) -> float:
    """Seconds for tiktoken alone to encode every document, read into memory first, in this one process."""
    encoding = get_tokenizer("gpt2")
    texts = [p.read_bytes().decode("utf-8") for p in sorted(corpus.iterdir())]
    start = time.perf_counter()
    for text in texts:
        encoding.encode_ordinary(text)
    return time.perf_counter() - start


class InMemoryWindows:
    """The same windows as a ``TokenWindowLoader`` with the same seed, sliced from a token tensor in memory."""

    def __init__(self, loader: TokenWindowLoader) -> None:
        self.loader = loader
        self.ids = torch.from_numpy(np.array(loader.tokens, dtype=np.int64))

    def __iter__(self):
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator().manual_seed(seed)
        span = self.loader.context_length + 1
        for _ in range(len(self.loader)):
            offsets = torch.randint(self.loader.n_starts, (self.loader.batch_size,), generator=generator)
            windows = torch.stack([self.ids[start : start + span] for start in offsets.tolist()])
            yield windows[:, :-1], windows[:, 1:]


def measure_loading(data_dir: Path, batches: int = 500) -> dict:
    """Milliseconds to build one batch of 4 x 128 windows, from memmap and from memory, without training."""
    memmap = TokenWindowLoader(data_dir, "train", 4, PRESETS["small"]["context_length"], batches_per_epoch=batches)
    record = {}
    for name, source in {"memmap": memmap, "memory": InMemoryWindows(memmap)}.items():
        start = time.perf_counter()
        for _ in source:
            pass
        record[f"{name}_ms_per_batch"] = (time.perf_counter() - start) / batches * 1e3
    return record


def measure_training(data_dir: Path, steps: int, rounds: int) -> dict:
    """Tokens/s of train_step fed from memmap and from memory, alternating ``rounds`` times ``steps`` steps."""
    cfg = {**PRESETS["small"], "drop_rate": 0.0}
    batch_size, context = 4, cfg["context_length"]
    torch.manual_seed(0)
    model = GPTModel(cfg)
    optimizer = make_adamw(model)
    memmap = TokenWindowLoader(data_dir, "train", batch_size, context, batches_per_epoch=steps)
    sources = {"memmap": memmap, "memory": InMemoryWindows(memmap)}
    rates: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(rounds + 1):  # the first round warms up and is not counted
        for name, source in sources.items():
            start = time.perf_counter()
            for inputs, targets in source:
                train_step(model, optimizer, inputs, targets)
            rates[name].append(steps * batch_size * context / (time.perf_counter() - start))
    medians = {name: statistics.median(values[1:]) for name, values in rates.items()}
    return {**{f"{name}_tokens_per_s": value for name, value in medians.items()},
            "ratio_memmap_over_memory": medians["memmap"] / medians["memory"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200, help="corpus size in MB (default: 200)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="prepare's worker processes")
    parser.add_argument("--train-mb", type=float, default=20, help="corpus size for the training part (default: 20)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per round (default: 10)")
    parser.add_argument("--only", choices=["prepare", "train"], help="run one part only")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per data source (default: 3)")
    args = parser.parse_args()
    print(json.dumps({"host": host(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "workers": args.workers, "torch": torch.__version__}))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for megabytes in (args.mb / 4, args.mb) if args.only != "train" else ():
            corpus = tmp / f"corpus{megabytes:g}"
            n_bytes = make_corpus(corpus, megabytes)
            record = measure_prepare(corpus, tmp / f"tokens{megabytes:g}", args.workers)
            tiktoken_seconds = tiktoken_one_process(corpus)
            print(json.dumps({
                "kind": "prepare", "corpus_mb": n_bytes / 1e6, "documents": len(list(corpus.iterdir())),
                "tokens": record["tokens"], "mb_per_s": n_bytes / 1e6 / record["seconds"],
                "tiktoken_one_process_mb_per_s": n_bytes / 1e6 / tiktoken_seconds,
                "main_peak_rss_mb": record["main_rss_kb"] * 1024 / 1e6,
                "worker_peak_rss_mb": record["worker_rss_kb"] * 1024 / 1e6,
            }))  # fmt: skip
        if args.only != "prepare":
            make_corpus(tmp / "train_corpus", args.train_mb)
            measure_prepare(tmp / "train_corpus", tmp / "train_tokens", args.workers)
            record = {
                **measure_loading(tmp / "train_tokens"),
                **measure_training(tmp / "train_tokens", args.steps, args.rounds),
            }
            print(json.dumps({"kind": "train", "corpus_mb": args.train_mb, **record}))


if __name__ == "__main__":
    main()
