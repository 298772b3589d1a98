"""Character-level models end to end: ``train --tokenizer char``, then ``chat`` and ``generate`` on the checkpoint."""

import io
import sys

import pytest
import torch
from cli_runner import run_cli

from minigpt_lib import CharTokenizer, GPTModel, load_checkpoint, load_text, save_checkpoint
from minigpt_lib.cli import main
from minigpt_lib.generate import generate

TINY = {"emb_dim": 32, "n_layers": 2, "n_heads": 2, "context_length": 32}
NEW = 12  # characters generated per prompt

pytestmark = pytest.mark.usefixtures("one_thread")



def sampling(seed="7"):
    """Options for chat and generate: CPU, NEW characters, sampling (temperature 0.8, top-k 40) with a fixed seed."""
    return ["--device", "cpu", "--max-new-tokens", str(NEW), "--temperature", "0.8", "--top-k", "40", "--seed", seed]


@pytest.fixture(scope="module")
def vocab():
    return CharTokenizer.from_text(load_text("the-verdict"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A char-level model trained for 3 steps through the command line."""
    out = tmp_path_factory.mktemp("char_run")
    sizes = [f"--set={key}={value}" for key, value in TINY.items() if key != "context_length"]
    result = run_cli(
        "train", "the-verdict", "--tokenizer", "char", *sizes, "--context-length", str(TINY["context_length"]),
        "--batch-size", "4", "--max-steps", "3", "--eval-freq", "2", "--eval-iter", "1",
        "--device", "cpu", "--quiet", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "after 3 steps: train loss" in result.stdout
    return out / "checkpoint.safetensors"


def run_in_process(argv, stdin, monkeypatch, capsys):
    """``main(argv)`` with ``stdin`` as standard input; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_train_stores_a_character_model_and_its_vocabulary(checkpoint, vocab):
    ckpt = load_checkpoint(checkpoint)
    assert ckpt.tokenizer_info == vocab.to_dict()
    assert ckpt.config["vocab_size"] == vocab.n_vocab == 62
    assert ckpt.model.tok_emb.weight.shape == ckpt.model.out_head.weight.shape == (62, TINY["emb_dim"])
    assert ckpt.step == 3


def test_chat_continues_each_prompt_from_stdin(checkpoint, vocab):
    result = run_cli("chat", str(checkpoint), *sampling(), stdin="Every effort\nI had\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # Two answers, each the prompt plus NEW generated characters (which may include newlines).
    first = len("Every effort") + NEW
    assert len(result.stdout) == first + 1 + len("I had") + NEW + 1
    assert result.stdout.startswith("Every effort") and result.stdout[first:].startswith("\nI had")
    generated = result.stdout[len("Every effort") : first] + result.stdout[first + 1 + len("I had") : -1]
    assert len(generated) == 2 * NEW and set(generated) <= set(vocab.chars)


def test_chat_reports_an_unknown_character_on_one_line_and_goes_on(checkpoint):
    # 'K' never occurs in the story, so the character vocabulary lacks it.
    result = run_cli("chat", str(checkpoint), *sampling(), stdin="I had\nKeep it\nShe\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "error: text: character 'K' is not in this tokenizer's 62-character vocabulary\n"
    assert result.stdout.startswith("I had") and "\nShe" in result.stdout
    assert "Keep" not in result.stdout


def test_chat_is_reproducible_with_a_seed(checkpoint, monkeypatch, capsys):
    outputs = [
        run_in_process(["chat", str(checkpoint), *sampling(seed)], "I had\nShe\n", monkeypatch, capsys)
        for seed in ("5", "5", "6")
    ]
    assert all(status == 0 and err == "" for status, _, err in outputs)
    assert outputs[0][1] == outputs[1][1] != outputs[2][1]


def test_generate_rejects_an_unknown_character_with_a_one_line_error(checkpoint, capsys):
    assert main(["generate", str(checkpoint), *sampling(), "--prompt", "Kelp"]) == 1
    err = capsys.readouterr().err
    assert err == "error: text: character 'K' is not in this tokenizer's 62-character vocabulary\n"


def test_chat_reads_a_checkpoint_saved_from_python(tmp_path, vocab, monkeypatch, capsys):
    torch.manual_seed(0)
    model = GPTModel({"vocab_size": vocab.n_vocab, **TINY, "drop_rate": 0.0, "qkv_bias": False})
    path = save_checkpoint(tmp_path / "char.safetensors", model, tokenizer=vocab)
    expected = generate(model, torch.tensor([vocab.encode("I had")]), NEW)  # greedy
    argv = ["chat", str(path), *sampling(), "--temperature", "0"]
    status, out, err = run_in_process(argv, "I had\n", monkeypatch, capsys)
    assert (status, err) == (0, "")
    assert out == vocab.decode(expected[0].tolist()) + "\n"
