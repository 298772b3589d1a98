"""Interactive notebook explorers (ipywidgets) for looking inside a GPT model, with the plain helpers they draw with.

Presentation only: nothing in the core package imports this module. Every explorer keeps its update function
callable from code, so tests (and readers without a live kernel) can drive it without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .generate import complete
from .model import GPTModel
from .tokenizer import Tokenizer, get_tokenizer
from .utils import eval_mode


def _check_model(model: GPTModel) -> None:
    """Explorers read a model's blocks by name, so anything but a :class:`GPTModel` is refused up front."""
    if not isinstance(model, GPTModel):
        raise TypeError(f"model: expected a minigpt_lib GPTModel, got {type(model).__name__}")


def attention_maps(model: GPTModel, token_ids: torch.Tensor | Sequence[int]) -> list[torch.Tensor]:
    """Attention weights of every transformer block of ``model`` for one token sequence, without dropout.

    ``token_ids`` is ``(tokens,)`` or ``(1, tokens)``; returns one CPU tensor ``(heads, tokens, tokens)`` per block,
    where row i holds how query token i spreads its attention over tokens 0..i.
    """
    _check_model(model)
    ids = torch.as_tensor(token_ids)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(
            f"token_ids: expected a non-empty sequence of shape (tokens,) or (1, tokens), got shape {tuple(ids.shape)}"
        )
    # Record what each attention layer receives during one ordinary forward pass, then ask it for its weights.
    inputs: list[torch.Tensor] = []
    hooks = [
        block.att.register_forward_pre_hook(lambda _module, args: inputs.append(args[0])) for block in model.trf_blocks
    ]
    try:
        with eval_mode(model), torch.no_grad():
            model(ids.unsqueeze(0).to(model.tok_emb.weight.device))
            for hook in hooks:  # stop recording before calling the attention layers again
                hook.remove()
            pairs = zip(model.trf_blocks, inputs, strict=True)
            maps = [block.att(x, return_weights=True)[1][0].cpu() for block, x in pairs]
    finally:
        for hook in hooks:  # again, in case the forward pass failed; removing twice is harmless
            hook.remove()
    return maps


def plot_attention(
    weights: torch.Tensor, tokens: Sequence[str], ax: Axes | None = None, title: str = "Attention weights"
) -> Axes:
    """Heatmap of one head's attention weights ``(tokens, tokens)``, queries down, keys across, on a 0-1 scale.

    The fixed colour scale makes heads and layers comparable; returns the axes drawn on.
    """
    weights = torch.as_tensor(weights).detach().cpu()
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights: expected a square (tokens, tokens) matrix, got shape {tuple(weights.shape)}")
    if len(tokens) != weights.shape[0]:
        raise ValueError(f"tokens: expected {weights.shape[0]} labels (one per row of weights), got {len(tokens)}")
    if ax is None:
        ax = plt.subplots(figsize=(5.5, 4.5))[1]
    image = ax.imshow(weights.float().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(image, ax=ax, label="attention weight")
    ax.set_xticks(range(len(tokens)), labels=list(tokens), rotation=60, ha="right")
    ax.set_yticks(range(len(tokens)), labels=list(tokens))
    ax.set_xlabel("key: token attended to")
    ax.set_ylabel("query: token attending")
    ax.set_title(title)
    return ax


class AttentionExplorer:
    """A sentence dropdown and layer/head sliders above a heatmap of that head's attention weights.

    Display it in a notebook; from code, set the controls' ``value`` or call :meth:`update`. The last drawing
    is kept in ``weights`` ``(tokens, tokens)``, ``tokens``, ``shown`` ``(sentence, layer, head)`` and ``figure``.
    """

    def __init__(self, model: GPTModel, tokenizer: Tokenizer, sentences: Sequence[str]) -> None:
        if isinstance(sentences, str) or not sentences or not all(isinstance(s, str) and s for s in sentences):
            raise ValueError(f"sentences: expected a non-empty list of non-empty strings, got {sentences!r}")
        _check_model(model)
        self.model = model
        self.tokenizer = tokenizer
        self.n_layers = len(model.trf_blocks)
        self.n_heads = model.trf_blocks[0].att.num_heads
        self.sentence = widgets.Dropdown(options=list(sentences), value=sentences[0], description="sentence")
        self.layer = widgets.IntSlider(value=0, min=0, max=self.n_layers - 1, description="layer")
        self.head = widgets.IntSlider(value=0, min=0, max=self.n_heads - 1, description="head")
        self.output = widgets.Output()
        self.widget = widgets.VBox([self.sentence, widgets.HBox([self.layer, self.head]), self.output])
        self._cache: dict[str, tuple[list[str], list[torch.Tensor]]] = {}
        self._syncing = False
        self.weights: torch.Tensor | None = None
        self.tokens: list[str] = []
        self.shown: tuple[str, int, int] | None = None
        self.figure: Figure | None = None
        for control in (self.sentence, self.layer, self.head):
            control.observe(self._on_change, names="value")
        self.update()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _on_change(self, _change: dict) -> None:
        if not self._syncing:
            self.update()

    def _maps_for(self, sentence: str) -> tuple[list[str], list[torch.Tensor]]:
        """Token labels and per-layer attention maps of ``sentence``, computed once and remembered."""
        if sentence not in self._cache:
            ids = self.tokenizer.encode(sentence)
            self._cache[sentence] = ([self.tokenizer.decode([i]) for i in ids], attention_maps(self.model, ids))
        return self._cache[sentence]

    def update(self, sentence: str | None = None, layer: int | None = None, head: int | None = None) -> torch.Tensor:
        """Move the controls to the given values (None keeps the current one) and redraw the heatmap.

        Returns the attention weights drawn, ``(tokens, tokens)``: row i is query token i's distribution.
        """
        sentence = self.sentence.value if sentence is None else sentence
        layer = self.layer.value if layer is None else layer
        head = self.head.value if head is None else head
        if sentence not in self.sentence.options:
            raise ValueError(f"sentence: expected one of {list(self.sentence.options)!r}, got {sentence!r}")
        for name, value, count in (("layer", layer, self.n_layers), ("head", head, self.n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
                raise ValueError(f"{name}: expected an integer in [0, {count - 1}], got {value!r}")
        self._syncing = True
        try:
            self.sentence.value, self.layer.value, self.head.value = sentence, layer, head
        finally:
            self._syncing = False
        self.tokens, maps = self._maps_for(sentence)
        self.weights = maps[layer][head]
        self.shown = (sentence, layer, head)
        self.figure = Figure(figsize=(5.5, 4.5), layout="constrained")
        plot_attention(self.weights, self.tokens, ax=self.figure.add_subplot(), title=f"Layer {layer}, head {head}")
        with self.output:
            self.output.clear_output(wait=True)
            display(self.figure)
        return self.weights


def attention_explorer(model: GPTModel, tokenizer: Tokenizer, sentences: Sequence[str]) -> AttentionExplorer:
    """An :class:`AttentionExplorer` for ``model``: pick a sentence, a layer and a head, see the weights.

    ``tokenizer`` turns each sentence into the model's token ids and labels the heatmap's axes.
    """
    return AttentionExplorer(model, tokenizer, sentences)


# ---------------------------------------------------------------------------------------------------------
# Generation playground


def _check_range(name: str, value: float, low: float, high: float) -> None:
    """Refuse a starting value outside its slider's range (a slider would silently clamp it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")


class GenerationPlayground:
    """A prompt box, sampling controls and a Generate button above the generated text.

    Display it in a notebook; from code, set the controls' ``value`` and call :meth:`generate` (what the
    button runs) or ``generate_button.click()``. The last text is kept in ``text``, an error in ``error``.
    ``top_k`` 0 and ``top_p`` 1.0 mean "no filtering"; ``temperature`` 0 means greedy decoding.
    """

    def __init__(
        self,
        model: GPTModel,
        tokenizer: Tokenizer | None = None,
        prompt: str = "Every effort moves you",
        max_new_tokens: int = 40,
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = None,
        seed: int = 123,
    ) -> None:
        _check_model(model)
        top_k, top_p = top_k or 0, 1.0 if top_p is None else top_p
        for name, value, low, high in (
            ("max_new_tokens", max_new_tokens, 1, 200),
            ("temperature", temperature, 0.0, 2.0),
            ("top_k", top_k, 0, 200),
            ("top_p", top_p, 0.05, 1.0),
        ):
            _check_range(name, value, low, high)
        self.model = model
        self.tokenizer = tokenizer or get_tokenizer()
        style = {"description_width": "initial"}
        self.prompt = widgets.Textarea(value=prompt, description="prompt", layout=widgets.Layout(width="95%"))
        self.temperature = widgets.FloatSlider(
            value=temperature, min=0.0, max=2.0, step=0.05, description="temperature", style=style
        )
        self.top_k = widgets.IntSlider(value=top_k, min=0, max=200, description="top-k (0: off)", style=style)
        self.top_p = widgets.FloatSlider(
            value=top_p, min=0.05, max=1.0, step=0.05, description="top-p (1: off)", style=style
        )
        self.max_new_tokens = widgets.IntSlider(
            value=max_new_tokens, min=1, max=200, description="new tokens", style=style
        )
        self.seed = widgets.IntText(value=seed, description="seed", style=style)
        self.generate_button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.result = widgets.HTML()
        self.text = ""
        self.error: str | None = None
        self.generate_button.on_click(self._on_click)
        self.widget = widgets.VBox(
            [
                self.prompt,
                widgets.HBox([self.temperature, self.max_new_tokens]),
                widgets.HBox([self.top_k, self.top_p]),
                widgets.HBox([self.seed, self.generate_button]),
                self.result,
            ]
        )

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def settings(self) -> dict:
        """The controls' current values as :func:`~minigpt_lib.generate.complete` keyword arguments (0 / 1.0
        become None)."""
        return {
            "prompt": self.prompt.value,
            "max_new_tokens": self.max_new_tokens.value,
            "temperature": self.temperature.value,
            "top_k": self.top_k.value or None,
            "top_p": None if self.top_p.value >= 1.0 else self.top_p.value,
            "seed": self.seed.value,
        }

    def generate(self) -> str:
        """Generate with the current settings, show the text below the controls and return it.

        Raises ``ValueError`` for an empty prompt or a prompt the tokenizer cannot encode.
        """
        text = complete(self.model, self.tokenizer, **self.settings())
        prompt = self.prompt.value
        continuation = text[len(prompt) :] if text.startswith(prompt) else text
        self.text, self.error = text, None
        self.result.value = (
            '<pre style="white-space: pre-wrap">'
            f"<b>{html.escape(text[: len(text) - len(continuation)])}</b>{html.escape(continuation)}</pre>"
        )
        return text

    def _on_click(self, _button: widgets.Button) -> None:
        """The button's handler: generate, or show what was wrong instead of failing silently."""
        try:
            self.generate()
        except (ValueError, TypeError) as exc:
            self.text, self.error = "", str(exc)
            self.result.value = f'<pre style="color: #b00">error: {html.escape(str(exc))}</pre>'


def generation_playground(
    model: GPTModel, tokenizer: Tokenizer | None = None, **defaults
) -> GenerationPlayground:
    """A :class:`GenerationPlayground` for ``model``: type a prompt, move the sliders, press Generate.

    ``tokenizer`` defaults to GPT-2's BPE; ``defaults`` set the controls' starting values (``prompt``,
    ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``seed``).
    """
    return GenerationPlayground(model, tokenizer, **defaults)
