"""Chatting with an instruction-tuned model: the ChatML prompt format, a history that fits the context, the loop.

An instruction-tuned model was fine-tuned on conversations written in one fixed format; SmolLM2 uses
ChatML, where special tokens open and close each turn::

    <|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    What is the capital of France?<|im_end|>
    <|im_start|>assistant

The model continues with its answer and ends it with ``<|im_end|>``, which is where generation stops.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import torch.nn as nn

from .generate import stream_text
from .tokenizer import Tokenizer

#: The system message SmolLM2's chat template inserts when a conversation does not start with one.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

ROLES = ("system", "user", "assistant")


def format_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The ChatML text of ``messages`` (dicts with ``role`` and ``content``), as SmolLM2's template writes it.

    A conversation that does not open with a system message gets :data:`DEFAULT_SYSTEM_PROMPT`;
    ``add_generation_prompt`` appends the opening of the assistant's turn, for the model to complete.
    """
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(
            message.get("content"), str
        ):
            raise ValueError(
                f"messages[{i}]: expected {{'role': one of {list(ROLES)}, 'content': str}}, got {message!r:.100}"
            )
    text = ""
    if messages and messages[0]["role"] != "system":
        text += f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
    for message in messages:
        text += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
    if add_generation_prompt:
        text += "<|im_start|>assistant\n"
    return text


def fit_history(messages: list[dict[str, str]], tokenizer: Tokenizer, max_tokens: int) -> list[dict[str, str]]:
    """The most recent part of a conversation whose ChatML prompt has at most ``max_tokens`` tokens.

    The oldest turns are dropped first (a system message at the start is kept); if even the last message
    alone does not fit, that is an error, since no answer could follow it.
    """
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system) :]
    while turns:
        if len(tokenizer.encode(format_chat(system + turns))) <= max_tokens:
            return system + turns
        if len(turns) == 1:
            break
        turns = turns[1:]
    raise ValueError(
        f"messages: the last message does not fit in {max_tokens} prompt tokens (the context minus the reply's "
        "max_new_tokens); write a shorter one or allow fewer new tokens"
    )


def chat(
    model: nn.Module,
    tokenizer: Tokenizer,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    system: str | None = None,
    read: Callable[[str], str] = input,
    out: TextIO | None = None,
) -> list[dict[str, str]]:
    """Talk with ``model`` until end of input (Ctrl-D) or Ctrl-C; return the conversation.

    Each answer is printed token by token as it is generated (sampling options as for
    :func:`~minigpt_lib.generate.generate`; ``seed`` makes the whole conversation reproducible). The history
    is sent with every question, trimmed to the oldest turns that still fit the model's context window.
    ``read`` and ``out`` replace the keyboard and the screen (tests, other front ends).
    """
    out = out or sys.stdout
    eos_id = getattr(tokenizer, "eos_id", None)
    prompt_budget = model.cfg["context_length"] - max_new_tokens
    messages = [{"role": "system", "content": system}] if system else []
    answer: list[str] = []
    try:
        while True:
            try:
                question = read("you> ")
            except EOFError:
                break
            if not question.strip():
                continue
            messages.append({"role": "user", "content": question})
            messages = fit_history(messages, tokenizer, prompt_budget)
            out.write("bot> ")
            turn_seed = None if seed is None else seed + len(messages)  # reproducible, yet new for every turn
            pieces = stream_text(
                model, tokenizer, format_chat(messages), max_new_tokens, temperature, top_k, top_p, eos_id, turn_seed
            )
            for piece in pieces:
                out.write(piece)
                out.flush()
                answer.append(piece)
            out.write("\n")
            messages.append({"role": "assistant", "content": "".join(answer).strip()})
            answer = []
    except KeyboardInterrupt:  # keep what was said, the interrupted answer included
        if answer:
            messages.append({"role": "assistant", "content": "".join(answer).strip()})
    out.write("\n")
    out.flush()
    return messages
