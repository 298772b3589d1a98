"""Tests for the command line: train, generate and chat end to end, help and one-line errors."""

import json
import signal
import subprocess
import sys

import pytest
from cli_runner import ENV, run_cli

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
        (["train", "the-verdict", "--set", "colour=blue"], "--set: expected KEY=VALUE"),
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
