"""Interactive figures that need no Python kernel: the attention explorer and the sampling playground of the website.

The :mod:`~minigpt_lib.widgets` explorers recompute in a live kernel; a static web page has none. Here the notebook
computes everything once (every layer and head of attention weights, the next-token logits of a few prompts), embeds
it as JSON in an HTML output, and a small script (``static_widgets.js``, shipped with the package, no CDN) redraws
the figure in the browser whenever a control moves. Presentation only: nothing in the core imports this module.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Callable, Mapping, Sequence
from importlib.resources import files

import torch
from IPython.display import HTML

# The browser side, inlined into every output so that a page (or a notebook) needs nothing else.
_SCRIPT = files("minigpt_lib").joinpath("static_widgets.js").read_text(encoding="utf-8")


def _output(kind: str, data: dict, controls: str) -> HTML:
    """One self-contained HTML output: the controls, an empty figure, the data as JSON and the drawing script.

    The element id comes from a hash of the data, so re-running the notebook gives byte-identical output.
    """
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    element_id = f"minigpt-{kind}-{hashlib.sha1(payload.encode()).hexdigest()[:12]}"
    payload = payload.replace("</", "<\\/")  # a token such as "</script>" must not end the JSON block
    return HTML(
        f'<div class="minigpt-static minigpt-{kind}" id="{element_id}">\n'
        f'<div class="minigpt-controls" style="display: flex; flex-wrap: wrap; gap: 0.4em 1.5em">{controls}</div>\n'
        '<div class="minigpt-figure" aria-live="polite"></div>\n'
        f'<script type="application/json" class="minigpt-data">{payload}</script>\n'
        f"</div>\n<script>\n{_SCRIPT}\nminigptStatic.render({json.dumps(element_id)});\n</script>"
    )


def _select(name: str, options: Sequence[str]) -> str:
    items = "".join(f'<option value="{i}">{html.escape(text)}</option>' for i, text in enumerate(options))
    return f'<label>{name} <select name="{name}">{items}</select></label>'


def _slider(name: str, low: float, high: float, step: float, value: float) -> str:
    return (
        f'<label>{name} <input type="range" name="{name}" min="{low}" max="{high}" step="{step}" value="{value}">'
        f' <output name="{name}-value">{value}</output></label>'
    )


def static_attention_explorer(examples: Mapping[str, tuple[Sequence[str], Sequence[torch.Tensor]]]) -> HTML:
    """A sentence menu and layer/head sliders above a heatmap of that head's attention weights, drawn in the browser.

    ``examples`` maps each sentence to its token labels and its per-layer weights, one ``(heads, tokens, tokens)``
    tensor per block, as :func:`minigpt_lib.widgets.attention_maps` returns them. Weights are stored with 256
    levels (one byte each, base64), plenty for a colour scale and small enough to embed many sentences.
    """
    if not examples:
        raise ValueError("examples: expected at least one sentence, got none")
    sentences, shape = [], None
    for text, (tokens, maps) in examples.items():
        weights = torch.stack([torch.as_tensor(m).detach().float().cpu() for m in maps])  # (layers, heads, t, t)
        t = len(tokens)
        if weights.dim() != 4 or weights.shape[2:] != (t, t):
            raise ValueError(
                f"examples[{text!r}]: expected one (heads, {t}, {t}) tensor per layer for {t} tokens, "
                f"got shape {tuple(weights.shape)}"
            )
        if shape is not None and weights.shape[:2] != shape:
            raise ValueError(f"examples[{text!r}]: expected {shape[0]} layers of {shape[1]} heads like the others")
        shape = weights.shape[:2]
        levels = (weights.clamp(0, 1) * 255).round().to(torch.uint8)
        sentences.append(
            {"text": text, "tokens": list(tokens), "weights": base64.b64encode(levels.numpy().tobytes()).decode()}
        )
    layers, heads = shape
    controls = (
        _select("sentence", list(examples))
        + _slider("layer", 0, layers - 1, 1, 0)
        + _slider("head", 0, heads - 1, 1, 0)
    )
    return _output("attention", {"layers": layers, "heads": heads, "sentences": sentences}, controls)


def static_sampling_playground(
    next_token_logits: Mapping[str, torch.Tensor],
    decode: Callable[[list[int]], str],
    candidates: int = 1000,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> HTML:
    """Temperature, top-k and top-p sliders over the next-token distribution of a few prompts, drawn in the browser.

    ``next_token_logits`` maps each prompt to the model's logits for the next token, shape ``(vocab,)``; the
    ``candidates`` most likely tokens are kept (labelled with ``decode([id])``) and the browser applies what
    :func:`minigpt_lib.generate.sample_next_token` does: temperature 0 is greedy, otherwise the logits are divided
    by the temperature, filtered by top-k (0: off) and top-p (1: off), and softmaxed over the candidates.
    """
    if not next_token_logits:
        raise ValueError("next_token_logits: expected at least one prompt, got none")
    prompts = []
    for text, logits in next_token_logits.items():
        logits = torch.as_tensor(logits).detach().double().cpu()
        if logits.dim() != 1 or logits.numel() < 2:
            raise ValueError(f"next_token_logits[{text!r}]: expected a (vocab,) tensor, got {tuple(logits.shape)}")
        top = torch.topk(logits, min(candidates, logits.numel()))
        # Share of the probability (at temperature 1) that the tokens left out hold, so the page can say it.
        left_out = 1.0 - torch.softmax(logits, dim=-1)[top.indices].sum().item()
        prompts.append(
            {
                "text": text,
                "tokens": [decode([i]) for i in top.indices.tolist()],
                "logits": [round(v, 3) for v in top.values.tolist()],  # 3 decimals: stable across CPUs
                "left_out": round(left_out, 4),
            }
        )
    k_max = min(100, min(len(p["logits"]) for p in prompts))
    controls = (
        _select("prompt", list(next_token_logits))
        + _slider("temperature", 0, 2, 0.05, temperature)
        + _slider("top-k", 0, k_max, 1, top_k)
        + _slider("top-p", 0.05, 1, 0.05, top_p)
    )
    return _output("sampling", {"prompts": prompts}, controls)
