"""Turning next-token logits into text: greedy decoding, temperature, top-k and top-p sampling, KV caching."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn

from .tokenizer import Tokenizer, text_to_token_ids
from .utils import eval_mode


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
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
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
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature: expected a number >= 0 and finite (0 means greedy), got {temperature!r}")
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


def _check_generate_args(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int | None,
                         use_cache: bool) -> int:
    """Validate :func:`generate_tokens`'s arguments once, before the first step; return the context size."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx: expected a tensor of shape (batch, tokens) with tokens >= 1, got {idx!r}")
    model_context = getattr(model, "cfg", {}).get("context_length")
    context_size = model_context if context_size is None else context_size
    if not isinstance(context_size, int) or context_size < 1 or (model_context and context_size > model_context):
        raise ValueError(f"context_size: expected an integer in [1, {model_context}], got {context_size!r}")
    if use_cache and not hasattr(model, "new_kv_cache"):
        raise ValueError(f"use_cache: {type(model).__name__} has no new_kv_cache(); pass use_cache=False")
    return context_size


def generate_tokens(
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
) -> Iterator[torch.Tensor]:
    """Yield the next token ids ``(batch, 1)`` after ``idx`` ``(batch, tokens)``, one step at a time, up to
    ``max_new_tokens`` of them: the loop behind :func:`generate`, for callers that show tokens as they come.

    The model only ever sees the last ``context_size`` tokens (default: its context length). With
    ``use_cache`` each step feeds just the newest token and reuses cached keys and values; once the window
    is full it slides, so every position shifts and the window is recomputed, exactly as without cache.
    Rows that produced ``eos_id`` keep producing it; the steps stop when every row has. The model runs in
    eval mode until the iterator is exhausted or closed.
    """
    context_size = _check_generate_args(model, idx, max_new_tokens, context_size, use_cache)
    _check_sampling_args(temperature, top_k, top_p)  # all checked now, before the first token is asked for
    return _steps(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, use_cache, generator)


def _steps(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    use_cache: bool,
    generator: torch.Generator | None,
) -> Iterator[torch.Tensor]:
    """The decoding loop of :func:`generate_tokens`, on arguments already checked."""
    if max_new_tokens == 0:
        return
    # A cache as long as this call can use, not the whole context (a model with a long context has big caches).
    cache = model.new_kv_cache(min(context_size, idx.shape[1] + max_new_tokens)) if use_cache else None
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    unusable = torch.zeros((), dtype=torch.bool, device=idx.device)  # NaN or +inf logits seen: no token can be chosen
    with eval_mode(model), torch.no_grad():
        for step in range(max_new_tokens):
            if cache is None:
                logits = model(idx[:, -context_size:])
            elif 0 < cache.length < cache.layers[0].max_len:
                logits = model(idx[:, -1:], kv_cache=cache)
            else:  # first step, or the window is full and slides: (re)fill the cache
                cache.reset()
                logits = model(idx[:, -min(context_size, cache.layers[0].max_len):], kv_cache=cache)
            unusable |= ~(logits[:, -1, :] < math.inf).all()
            # Read on the CPU every step; on a GPU only at the end, since reading it makes the CPU wait.
            if (idx.device.type == "cpu" or step == max_new_tokens - 1) and bool(unusable):
                raise ValueError(
                    "model: its logits hold NaN or infinite values, so no token can be chosen; are its weights "
                    "finite numbers (a diverged training run leaves NaN weights)?"
                )
            next_id = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
            if eos_id is not None:
                next_id = next_id.masked_fill(finished.unsqueeze(1), eos_id)
                finished |= next_id.squeeze(1) == eos_id
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id
            if eos_id is not None and finished.all():
                return


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

    Greedy with ``temperature`` 0, else sampled (see :func:`sample_next_token`); the arguments are those of
    :func:`generate_tokens`, which yields the same tokens one at a time.
    """
    steps = generate_tokens(
        model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, use_cache, generator
    )
    return torch.cat([idx, *steps], dim=1)


def stream_text(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece, as its tokens are generated (text in, text out).

    ``seed`` draws the samples from a private generator (the same seed gives the same text, torch's global
    random state is untouched); ``None`` uses the global one. A character split over several tokens is held
    back until it is complete. Generation stops at ``eos_id``, which is not part of the text. The KV cache is
    used when the model has one.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt: expected some text to continue, got {prompt!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed: expected an integer or None, got {seed!r}")
    device = next(model.parameters()).device
    idx = text_to_token_ids(prompt, tokenizer).to(device)  # a prompt the tokenizer cannot encode fails here, now
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    steps = generate_tokens(
        model,
        idx,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        use_cache=hasattr(model, "new_kv_cache"),
        generator=generator,
    )
    return _decode_as_they_come(steps, tokenizer, eos_id)


def _decode_as_they_come(steps: Iterator[torch.Tensor], tokenizer: Tokenizer, eos_id: int | None) -> Iterator[str]:
    """Text pieces of the tokens ``steps`` yields (batch 1), holding back the first bytes of a split character."""
    pending: list[int] = []
    for next_id in steps:
        token = int(next_id[0, 0])
        if token == eos_id:
            break
        pending.append(token)
        piece = tokenizer.decode(pending)
        if piece.endswith("\ufffd") and len(pending) < 4:  # UTF-8 characters are at most 4 bytes
            continue
        yield piece
        pending = []
    if pending:
        yield tokenizer.decode(pending)


def complete(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
) -> str:
    """``prompt`` followed by its continuation: :func:`stream_text`'s pieces joined.

    The one text-in/text-out function: the command line's ``generate`` and ``chat`` and the widgets use it
    (or :func:`stream_text`, to print as they go), with these defaults: greedy, no top-k or top-p filter.
    """
    return prompt + "".join(
        stream_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, eos_id, seed)
    )
