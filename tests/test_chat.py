"""The ChatML format, the history trimmed to the context, and the chat loop (streaming, EOF, Ctrl-C)."""

from __future__ import annotations

import io

import pytest
import torch

from minigpt_lib.chat import DEFAULT_SYSTEM_PROMPT, chat, fit_history, format_chat
from minigpt_lib.llama import SMOLLM2_135M_CONFIG, LlamaModel


class ByteTokenizer:
    """One token per UTF-8 byte: enough for the loop's mechanics, with a model of 256 tokens."""

    n_vocab = 256
    eos_id = None

    def encode(self, text, *, allowed_special=None):
        return list(text.encode("utf-8"))

    def decode(self, tokens):
        return bytes(tokens).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def tiny_model():
    cfg = {**SMOLLM2_135M_CONFIG, "vocab_size": 256, "context_length": 400, "emb_dim": 16, "n_heads": 2,
           "n_kv_heads": 1, "n_layers": 1, "hidden_dim": 32}
    torch.manual_seed(0)
    return LlamaModel(cfg)


def test_format_chat_writes_chatml_with_the_default_system_prompt():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert format_chat(messages) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )
    own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert format_chat(own_system, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    with pytest.raises(ValueError, match=r"messages\[1\]: expected \{'role': one of \['system', 'user', 'assistant'\]"):
        format_chat([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        format_chat([{"role": "user", "content": None}])


def test_fit_history_drops_the_oldest_turns_and_keeps_the_system_message():
    tok = ByteTokenizer()
    system = {"role": "system", "content": "S"}
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 5} for i in range(6)]
    everything = [system, *turns]
    assert fit_history(everything, tok, 10_000) == everything
    budget = len(tok.encode(format_chat([system, *turns[-2:]])))
    assert fit_history(everything, tok, budget) == [system, *turns[-2:]]
    assert fit_history(turns, tok, len(tok.encode(format_chat(turns[-1:])))) == turns[-1:]
    with pytest.raises(ValueError, match="the last message does not fit in 10 prompt tokens"):
        fit_history(everything, tok, 10)


def test_chat_streams_answers_keeps_history_and_ends_on_eof(tiny_model):
    questions = iter(["Hello", "", "And again?"])

    def read(prompt):
        try:
            return next(questions)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    messages = chat(tiny_model, ByteTokenizer(), max_new_tokens=5, read=read, out=out)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert out.getvalue().count("bot> ") == 2 and out.getvalue().endswith("\n")
    # The same conversation again gives the same (greedy) answers: the history is what the model sees.
    questions = iter(["Hello", "", "And again?"])
    assert chat(tiny_model, ByteTokenizer(), max_new_tokens=5, read=read, out=io.StringIO()) == messages


def test_chat_trims_history_to_the_context_and_stops_cleanly_on_ctrl_c(tiny_model):
    asked = []

    def read(prompt):
        if len(asked) == 4:
            raise KeyboardInterrupt
        asked.append(f"question number {len(asked)}")
        return asked[-1]

    messages = chat(tiny_model, ByteTokenizer(), max_new_tokens=50, temperature=1.0, seed=3, read=read,
                    out=io.StringIO())
    prompt_tokens = len(ByteTokenizer().encode(format_chat(messages[:-1])))
    assert prompt_tokens <= 400 - 50
    assert messages[-2]["content"] == "question number 3" and messages[0]["content"] != "question number 0"
