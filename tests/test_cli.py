"""Tests for the command line: train, generate and chat end to end, help and one-line errors."""

import json
import os
import select
import signal
import subprocess
import sys

import pytest
import torch
from cli_runner import ENV, run_cli
from safetensors import safe_open
from safetensors.torch import save_file

from minigpt_lib.checkpoint import load_checkpoint
from minigpt_lib.cli import main

# A tiny character-level model: emb 32, 2 layers, 2 heads, context 32.
TINY = "--tokenizer char --set emb_dim=32 --set n_layers=2 --set n_heads=2 --context-length 32"
TINY = [*TINY.split(), *"--batch-size 4 --eval-freq 2 --eval-iter 1 --quiet".split()]

pytestmark = pytest.mark.usefixtures("one_thread")



def assert_one_line_error(stderr):
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_cli("train", "the-verdict", "--max-steps", "4", "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    assert "after 4 steps: train loss" in result.stdout
    return out


def test_train_writes_checkpoint_settings_and_history(run_dir):
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.safetensors",
        "history.json",
        "train_args.json",
    ]
    history = json.loads((run_dir / "history.json").read_text())
    assert history["steps"] == 4 and history["eval_steps"] == [1, 3]
    ckpt = load_checkpoint(run_dir / "checkpoint.safetensors")
    assert ckpt.config["emb_dim"] == 32 and ckpt.config["context_length"] == 32
    assert ckpt.tokenizer_info["type"] == "char" and ckpt.step == 4


def test_generate_continues_the_prompt(run_dir):
    result = run_cli("generate", str(run_dir), "--prompt", "Every effort", "--max-new-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.startswith("Every effort")
        and len(result.stdout.rstrip("\n")) == len("Every effort") + 20
    )


def test_chat_reads_prompts_until_end_of_input(run_dir):
    result = run_cli(
        "chat",
        str(run_dir),
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
        stdin="Every effort\n\nI had\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Every effort")
    assert "\nI had" in result.stdout
    assert result.stderr == ""


def test_chat_ends_cleanly_on_ctrl_c(run_dir):
    chat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minigpt_lib",
            "chat",
            str(run_dir),
            "--max-new-tokens",
            "3",
            "--temperature",
            "0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    chat.stdin.write("I had\n")
    chat.stdin.flush()
    assert chat.stdout.readline().startswith("I had")  # answered: now it waits for the next prompt
    chat.send_signal(signal.SIGINT)
    assert chat.wait(timeout=30) == 0
    assert "Traceback" not in chat.stderr.read()


def test_missing_text_file_is_a_one_line_error(tmp_path):
    result = run_cli("train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "known corpus names: the-verdict" in result.stderr


# --- in-process checks of the parser and of resuming --------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [("train", "--max-steps"), ("generate", "--top-p"), ("chat", "Ctrl-D or Ctrl-C quits")],
)
def test_each_subcommand_has_help(capsys, command, expected):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert expected in " ".join(
        capsys.readouterr().out.split()
    )  # help text is wrapped to the terminal


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "the-verdict", "--batch-size", "abc"],
        ["train", "the-verdict", "--preset", "huge"],
        ["generate"],
        ["fly"],
    ],
)
def test_bad_usage_is_a_one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert_one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "no/such/checkpoint"], "no checkpoint file"),
        (["train", "the-verdict", "--set", "colour=blue"], "--set: unknown key 'colour'"),
        (["train", "the-verdict", "--set", "n_layers=0"], "n_layers"),
        (
            [
                "train",
                "the-verdict",
                "--tokenizer",
                "char",
                "--context-length",
                "2100",
                "--batch-size",
                "1",
            ],
            "validation",
        ),
        (["train"], "give a corpus name"),
    ],
)
def test_bad_values_are_one_line_errors(capsys, tmp_path, argv, message):
    assert main([*argv, *(["--out", str(tmp_path)] if argv[0] == "train" else [])]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert message in err


def test_resume_continues_and_keeps_the_settings(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("checkpoint.safetensors", "train_args.json"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    assert main(["train", "--resume", "--out", str(copy), "--max-steps", "6", "--quiet"]) == 0
    history = json.loads((copy / "history.json").read_text())
    assert history["steps"] == 6 and history["eval_steps"] == [1, 3, 5]
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(copy), "--batch-size", "8"]) == 1
    assert "--batch-size: the run in" in capsys.readouterr().err
    assert main(["train", "the-verdict", "--out", str(copy)]) == 1
    assert "add --resume" in capsys.readouterr().err


# --- reliability: options out of range, bad files, diverging runs, long outputs -----------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--lr", "-0.001"], r"--lr: expected a number in (0, inf], got -0.001"),
        (["--lr", "0"], r"--lr: expected a number in (0, inf], got 0.0"),
        (["--lr", "inf"], "--lr: expected a finite number, got inf"),
        (["--lr", "nan"], "--lr: expected a finite number, got nan"),
        (["--grad-clip", "-1"], r"--grad-clip: expected a number in (0, inf], got -1.0"),
        (["--grad-clip", "0"], r"--grad-clip: expected a number in (0, inf], got 0.0"),
        (["--grad-clip", "nan"], "--grad-clip: expected a finite number, got nan"),
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--epochs", "-3"], "--epochs: expected a positive integer, got -3"),
        (["--max-steps", "0"], "--max-steps: expected a positive integer, got 0"),
        (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
        (["--batch-tokens", "-8"], "--batch-tokens: expected a positive integer, got -8"),
        (["--weight-decay", "-0.1"], "--weight-decay: expected a number in [0, inf], got -0.1"),
        (["--weight-decay", "inf"], "--weight-decay: expected a finite number, got inf"),
        (["--min-lr", "-1"], "--min-lr: expected a number in [0, inf], got -1.0"),
        (["--warmup-steps", "-1"], "--warmup-steps: expected an integer >= 0, got -1"),
        (["--val-fraction", "0"], r"--val-fraction: expected a number in (0, 1], got 0.0"),
        (["--val-fraction", "1"], r"--val-fraction: expected a number in (0, 1), got 1.0"),
        (["--val-fraction", "nan"], "--val-fraction: expected a finite number, got nan"),
        (["--eval-freq", "0"], "--eval-freq: expected a positive integer, got 0"),
        (["--eval-iter", "-1"], "--eval-iter: expected a positive integer, got -1"),
        (["--checkpoint-every", "0"], "--checkpoint-every: expected a positive integer, got 0"),
        (["--context-length", "0"], "--context-length: expected a positive integer, got 0"),
        (["--peak-flops", "0"], r"--peak-flops: expected a number in (0, inf], got 0.0"),
        (["--seed", "-1"], "--seed: expected an integer in [0, 2**64), got -1"),
        (["--schedule", "--lr", "0.001", "--min-lr", "0.01"], "--min-lr: expected at most the peak --lr=0.001"),
        (["--schedule", "--warmup-steps", "100000"], "--warmup-steps: expected at most the run's"),
        (["--set", "tie_weigths=true"], "--set: unknown key 'tie_weigths'; did you mean 'tie_weights'?"),
        (["--set", "dropout=0.1"], "--set: unknown key 'dropout'; did you mean 'drop_rate'?"),
        (["--set", "n_heads=3"], "model config (--preset, --set, --context-length): cfg['emb_dim']: expected a"),
    ],
)
def test_options_out_of_range_are_refused_before_anything_is_written(capsys, tmp_path, options, message):
    out = tmp_path / "run"
    assert main(["train", "the-verdict", "--out", str(out), *TINY, *options]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert err.startswith(f"error: {message}"), err
    assert not out.exists()  # no train_args.json, nothing


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--temperature", "nan"], "--temperature: expected a finite number, got nan"),
        (["--temperature", "-0.5"], "--temperature: expected a number in [0, inf], got -0.5"),
        (["--temperature", "inf"], "--temperature: expected a finite number, got inf"),
        (["--top-k", "0"], "--top-k: expected a positive integer, got 0"),
        (["--top-p", "0"], r"--top-p: expected a number in (0, 1], got 0.0"),
        (["--top-p", "1.5"], r"--top-p: expected a number in (0, 1], got 1.5"),
        (["--top-p", "nan"], "--top-p: expected a finite number, got nan"),
        (["--max-new-tokens", "-1"], "--max-new-tokens: expected an integer >= 0, got -1"),
        (["--seed", "-2"], "--seed: expected an integer in [0, 2**64), got -2"),
    ],
)
@pytest.mark.parametrize("command", ["generate", "chat"])
def test_sampling_options_out_of_range_are_named(capsys, run_dir, command, options, message):
    assert main([command, str(run_dir), *options]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert err == f"error: {message}\n"


def copy_run(run_dir, folder):
    folder.mkdir()
    for name in ("checkpoint.safetensors", "train_args.json"):
        (folder / name).write_bytes((run_dir / name).read_bytes())
    return folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: "{not json", "train_args.json: expected the JSON settings a train run writes"),
        (lambda s: [s], "train_args.json: expected a JSON object of train settings, got list"),
        (lambda s: {**s, "preset": "huge"}, "train_args.json: field 'preset': expected one of 124M, 355M"),
        (lambda s: {**s, "lr": "fast"}, "train_args.json: field 'lr': expected a finite number, got 'fast'"),
        (lambda s: {**s, "lr": -1}, "train_args.json: field 'lr': expected a number in (0, inf], got -1"),
        (lambda s: {**s, "epochs": 0}, "train_args.json: field 'epochs': expected a positive integer, got 0"),
        (lambda s: {**s, "set": "n_layers=2"}, "train_args.json: field 'set': expected a list of KEY=VALUE"),
        (lambda s: {**s, "tokenizer": "bpe"}, "train_args.json: field 'tokenizer': expected one of gpt2, char"),
        (lambda s: {**s, "batch_sise": 4}, "train_args.json: unknown key 'batch_sise'; did you mean 'batch_size'?"),
        (lambda s: {**s, "text": None}, "train_args.json: fields 'text' and 'data': expected exactly one"),
    ],
)
def test_resuming_with_malformed_saved_settings_names_the_file_and_field(capsys, run_dir, tmp_path, change, message):
    run = copy_run(run_dir, tmp_path / "run")
    saved = json.loads((run / "train_args.json").read_text())
    changed = change(saved)
    (run / "train_args.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    before = (run / "checkpoint.safetensors").read_bytes()
    assert main(["train", "--resume", "--out", str(run), "--max-steps", "6"]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert err.startswith(f"error: {run / message}"), err
    assert (run / "checkpoint.safetensors").read_bytes() == before


def test_resuming_removes_a_killed_saves_temporary(capsys, run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    (run / ".checkpoint.safetensors.x1y2.partial").write_bytes(b"\0" * 10_000)
    assert main(["train", "--resume", "--out", str(run), "--max-steps", "5"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors", "history.json", "train_args.json"]


def test_a_diverging_run_exits_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train", "the-verdict", "--out", str(out), "--lr", "1e6", "--max-steps", "20", "--checkpoint-every", "1", *TINY
    )
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "error: training diverged at step 2: loss: became nan;" in result.stderr
    assert result.stderr.endswith(f"stopped, {out / 'checkpoint.safetensors'} keeps step 1\n")
    assert load_checkpoint(out / "checkpoint.safetensors").step == 1  # loads: its weights are finite
    # Step 1 of lr 1e6 left finite but huge weights, whose logits overflow: an error, not a line of garbage.
    generated = run_cli("generate", str(out), "--prompt", "I had", "--max-new-tokens", "5")
    assert generated.returncode == 1
    assert generated.stderr.startswith("error: model: its logits hold NaN or infinite values")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda h: {**h, "aliases": []}, "field 'aliases': expected an object mapping tensor names"),
        (lambda h: {**h, "tokenizer": None}, "stores no tokenizer"),
        (lambda h: {**h, "tokenizer": {"type": "char", "chars": 5}}, "field 'tokenizer': tokenizer['chars']"),
        (lambda h: {**h, "config": None}, "stores no model config"),
        (lambda h: {**h, "config": {**h["config"], "n_layers": 20_000}}, "(n_layers=20000), but the file holds"),
        (lambda h: {**h, "config": {**h["config"], "vocab_size": 2**25}}, "has shape (62, 32), but the model expects"),
        (lambda h: {**h, "config": {**h["config"], "context_length": 20_000}}, "tensor 'model.pos_emb.weight'"),
    ],
)
def test_generating_from_a_malformed_checkpoint_is_one_line(capsys, run_dir, tmp_path, tamper, message):
    path = tmp_path / "bad.safetensors"
    with safe_open(run_dir / "checkpoint.safetensors", framework="pt") as f:
        header = json.loads(f.metadata()["minigpt"])
        tensors = {name: f.get_tensor(name) for name in f.keys() if name.startswith("model.")}
    save_file(tensors, path, metadata={"minigpt": json.dumps(tamper(header))})
    assert main(["generate", str(path)]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert str(path) in err and message in err, err


def test_a_400_byte_checkpoint_claiming_20000_layers_fails_at_once(tmp_path):
    path = tmp_path / "tiny.safetensors"
    header = {
        "format": "minigpt-checkpoint", "version": 1, "aliases": {}, "step": 0, "extra": {}, "optimizer": None,
        "config": {"vocab_size": 50257, "context_length": 20_000, "emb_dim": 768, "n_heads": 12, "n_layers": 20_000,
                   "drop_rate": 0.0, "qkv_bias": False},
        "tokenizer": {"type": "tiktoken", "name": "gpt2"}, "python_random": [3, [0] * 625, None],
    }
    save_file({"model.tok_emb.weight": torch.zeros(1, 1)}, path, metadata={"minigpt": json.dumps(header)})
    result = run_cli("generate", str(path))
    assert result.returncode == 1
    assert result.stderr == (
        f"error: checkpoint {path}: field 'config': describes a model of 260,005 tensors (n_layers=20000), "
        "but the file holds 1\n"
    )


def test_generate_streams_at_once_and_ctrl_c_keeps_the_text(run_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "minigpt_lib", "generate", str(run_dir), "--prompt", "I had",
         "--max-new-tokens", "1000000000", "--temperature", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )
    try:
        printed = b""
        while len(printed) < len("I had") + 20:  # text arrives while generation goes on
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, "no output within 60 s"
            printed += os.read(process.stdout.fileno(), 1000)
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    finally:
        process.kill()
    out = (printed + rest).decode()
    assert process.returncode == 130
    assert out.startswith("I had") and out.endswith("\n") and out.count("\n") >= 1
    assert err.decode() == "error: interrupted\n"


# The pretrained SmolLM2 model (chapter 10)


def test_generate_smollm2_continues_a_prompt_and_stops_at_the_end_of_turn():
    result = run_cli("generate", "smollm2", "--prompt", "The capital of France is", "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The capital of France is Paris")


def test_chat_smollm2_answers_in_its_chat_format_until_end_of_input():
    result = run_cli("chat", "smollm2", "--max-new-tokens", "12", stdin="What is the capital of France?\n")
    assert result.returncode == 0, result.stderr
    assert "The capital of France is Paris." in result.stdout
    assert "<|im_end|>" not in result.stdout


def test_gguf_option_errors_are_one_line(tmp_path, run_dir):
    result = run_cli("generate", "smollm2", "--gguf", str(tmp_path / "absent.gguf"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: path: ") and "absent.gguf' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("generate", str(run_dir), "--gguf", str(tmp_path / "absent.gguf"))
    assert result.returncode == 1 and "--gguf: only used with the model name smollm2" in result.stderr


# --- finetune ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "args", "message"),
    [
        ('[{"instruction": "x", "input": "", "output": 5}]', [], "record 0: field 'output' must be a string"),
        ("", [], "the file is empty"),
        ("[{", [], "invalid JSON at line 1"),
        ("[]", ["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        ("[]", ["--lr", "-1"], "--lr: expected a number in"),
    ],
)
def test_finetune_bad_data_or_arguments_fail_before_training(capsys, tmp_path, data, args, message):
    path = tmp_path / "data.json"
    path.write_text(data)
    assert main(["finetune", "smollm2", str(path), "--out", str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert message in err
    assert not (tmp_path / "out").exists()


def test_finetune_writes_an_adapter_that_generate_can_use(tmp_path):
    out = tmp_path / "ft"
    result = run_cli("finetune", "smollm2", "instruction-data", "--out", str(out), "--max-records", "3",
                     "--batch-size", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "3 training and 0 validation records" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter.safetensors", "finetune_state.json", "optimizer.safetensors"]
    result = run_cli("generate", "smollm2", "--adapter", str(out), "--prompt", "Hello", "--max-new-tokens", "2")
    assert result.returncode == 0 and result.stdout.startswith("Hello"), result.stderr


def test_adapter_is_only_for_smollm2(capsys, tmp_path):
    assert main(["generate", str(tmp_path / "checkpoint.safetensors"), "--adapter", str(tmp_path)]) == 1
    assert "--adapter: only used with the model name smollm2" in capsys.readouterr().err


def test_every_train_setting_has_a_range_check():
    from minigpt_lib.cli import SETTING_CHECKS, TRAIN_DEFAULTS

    assert set(SETTING_CHECKS) == set(TRAIN_DEFAULTS)  # a new option needs its check in SETTING_CHECKS


@pytest.mark.parametrize("tokenizer", ["char", "gpt2"])
@pytest.mark.parametrize(
    ("content", "message"),
    [("", "text: {path} is empty; expected a text to train on"), ("abc", "{path}: its training part (2 characters)")],
)
def test_an_empty_or_tiny_text_names_the_file(capsys, tmp_path, tokenizer, content, message):
    path = tmp_path / "text.txt"
    path.write_text(content)
    assert main(["train", str(path), "--tokenizer", tokenizer, "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert err.startswith("error: " + message.format(path=path)), err
    assert not (tmp_path / "run").exists()


def test_generate_into_a_reader_that_stops_early_ends_quietly(run_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "minigpt_lib", "generate", str(run_dir), "--max-new-tokens", "1000000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )
    try:
        assert process.stdout.read(10)  # like `| head -c 10`: read a little, then stop reading
        process.stdout.close()
        assert process.wait(timeout=60) == 141  # what a shell reports for a writer stopped by SIGPIPE
        assert process.stderr.read() == b""
    finally:
        process.kill()
