"""Turning next-token logits into text: greedy decoding, temperature, top-k and top-p sampling, KV caching."""

from __future__ import annotations

import torch
import torch.nn as nn

from .tokenizer import Tokenizer, text_to_token_ids, token_ids_to_text


def generate_text_simple(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int
) -> torch.Tensor:
    """Append ``max_new_tokens`` greedy (most likely) tokens to ``idx`` of shape ``(batch, tokens)``.

    The plain loop of chapter 7: re-run the model on the last ``context_size`` tokens for every new token.
    """
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])
        next_id = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        idx = torch.cat((idx, next_id), dim=1)
    return idx


def _check_filter_args(top_k: int | None, top_p: float | None) -> None:
    """Reject top-k and top-p settings that have no meaning, naming the argument."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k: expected None or an integer >= 1, got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p: expected None or a number in (0, 1], got {top_p!r}")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the ``top_k`` largest and outside the top-``top_p`` probability mass.

    ``logits`` is ``(batch, vocab)``; top-p keeps the smallest set of tokens whose probabilities sum to
    at least ``top_p`` (the most likely token is always kept).
    """
    _check_filter_args(top_k, top_p)
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Reject sampling settings that have no meaning, naming the argument."""
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature: expected a number >= 0 (0 means greedy), got {temperature!r}")
    _check_filter_args(top_k, top_p)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token id per row of ``logits`` ``(batch, vocab)``; returns ``(batch, 1)``.

    Temperature 0 takes the most likely token; otherwise logits are divided by the temperature, filtered
    by top-k and top-p, and a token is drawn from the softmax with ``generator``.
    """
    _check_sampling_args(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ``idx`` ``(batch, tokens)`` by up to ``max_new_tokens`` tokens; returns prompt + new tokens.

    The model only ever sees the last ``context_size`` tokens (default: its context length). With
    ``use_cache`` each step feeds just the newest token and reuses cached keys and values; once the window
    is full it slides, so every position shifts and the window is recomputed, exactly as without cache.
    Generation stops early when every row has produced ``eos_id``. The model runs in eval mode.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an integer >= 0, got {max_new_tokens!r}")
    _check_sampling_args(temperature, top_k, top_p)
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx: expected a tensor of shape (batch, tokens) with tokens >= 1, got {idx!r}")
    model_context = getattr(model, "cfg", {}).get("context_length")
    context_size = model_context if context_size is None else context_size
    if not isinstance(context_size, int) or context_size < 1 or (model_context and context_size > model_context):
        raise ValueError(f"context_size: expected an integer in [1, {model_context}], got {context_size!r}")
    if use_cache and not hasattr(model, "new_kv_cache"):
        raise ValueError(f"use_cache: {type(model).__name__} has no new_kv_cache(); pass use_cache=False")

    was_training = model.training
    model.eval()
    cache = model.new_kv_cache() if use_cache else None
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    try:
        with torch.no_grad():
            for _ in range(max_new_tokens):
                if cache is None:
                    logits = model(idx[:, -context_size:])
                elif 0 < cache.length < context_size:
                    logits = model(idx[:, -1:], kv_cache=cache)
                else:  # first step, or the window is full and slides: (re)fill the cache
                    cache.reset()
                    logits = model(idx[:, -context_size:], kv_cache=cache)
                next_id = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
                if eos_id is not None:
                    next_id = next_id.masked_fill(finished.unsqueeze(1), eos_id)
                    finished |= next_id.squeeze(1) == eos_id
                idx = torch.cat((idx, next_id), dim=1)
                if eos_id is not None and finished.all():
                    break
    finally:
        model.train(was_training)
    return idx


def complete(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """``prompt`` followed by up to ``max_new_tokens`` tokens of :func:`generate`, as text.

    Text in, text out: tokenize, generate on the model's device, decode. What the command line's ``generate``
    and ``chat`` and the generation playground print.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt: expected some text to continue, got {prompt!r}")
    idx = text_to_token_ids(prompt, tokenizer).to(next(model.parameters()).device)
    out = generate(
        model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )
    return token_ids_to_text(out, tokenizer)
