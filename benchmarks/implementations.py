"""The implementations the benchmark compares, each behind the same calls: build, optimizer, training step, generate.

Every adapter uses the implementation the way its own documentation does (its loss path, its generation
loop), so the figures compare implementations rather than harness code. Ours trains with
:func:`minigpt_lib.train.train_step` and the package's default optimizer, the path ``train_model`` and the
command line run; every peer gets ``torch.optim.AdamW(fused=True)`` and its own documented loss. Peers that
are not installed are skipped; ``pip install -r benchmarks/requirements.txt`` and ``--no-deps -r
benchmarks/requirements-nodeps.txt``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt_lib import GPTModel
from minigpt_lib.generate import generate
from minigpt_lib.train import make_adamw, train_step

#: "Hello, I am" in the GPT-2 tokenizer: a short prompt that needs no tokenizer files.
PROMPT_IDS = [15496, 11, 314, 716]


def peer_adamw(model: nn.Module) -> torch.optim.Optimizer:
    """Every peer's optimizer: PyTorch's fused AdamW, with the book's learning rate and weight decay."""
    return torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=True)


@dataclass(frozen=True)
class Implementation:
    """One GPT-2 implementation: how to build it, make its optimizer, take a training step, generate greedily.

    ``step(model, optimizer, inputs, targets, bf16)`` is one optimization step; None: generation rows only.
    """

    name: str
    build: Callable[[dict[str, Any]], nn.Module]
    step: Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor, bool], Any] | None
    generate: Callable[[nn.Module, torch.Tensor, int, bool], torch.Tensor]
    cache_modes: tuple[bool, ...] = (False, True)
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] = peer_adamw
    ours: bool = False  # the one the ratios are about


def peer_step(loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """A peer's training step: its loss (under bf16 autocast when asked), backward, AdamW step, zero grads."""

    def step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            value = loss(model, x, y)
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _plain_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The book-style loss: full logits, flattened, then cross-entropy."""
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def _ours() -> list[Implementation]:
    def step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> float:
        return train_step(model, opt, x, y, amp=bf16)

    def gen(model: nn.Module, idx: torch.Tensor, n: int, use_cache: bool) -> torch.Tensor:
        return generate(model, idx, n, use_cache=use_cache)

    return [Implementation("minigpt (ours)", GPTModel, step, gen, make_optimizer=make_adamw, ours=True)]


def _huggingface() -> list[Implementation]:
    if importlib.util.find_spec("transformers") is None:
        return []
    import transformers

    transformers.logging.set_verbosity_error()

    def builder(attn: str) -> Callable[[dict[str, Any]], nn.Module]:
        def build(cfg: dict[str, Any]) -> nn.Module:
            config = transformers.GPT2Config(
                vocab_size=cfg["vocab_size"],
                n_positions=cfg["context_length"],
                n_embd=cfg["emb_dim"],
                n_layer=cfg["n_layers"],
                n_head=cfg["n_heads"],
                resid_pdrop=cfg["drop_rate"],
                embd_pdrop=cfg["drop_rate"],
                attn_pdrop=cfg["drop_rate"],
                tie_word_embeddings=cfg.get("tie_weights", False),  # same parameter count as the others
            )
            return transformers.GPT2LMHeadModel._from_config(config, attn_implementation=attn)

        return build

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The documented way to train a causal LM: labels = input ids, shifted inside the model.
        return model(input_ids=x, labels=x, use_cache=False).loss

    def gen(model: nn.Module, idx: torch.Tensor, n: int, use_cache: bool) -> torch.Tensor:
        return model.generate(
            input_ids=idx,
            attention_mask=torch.ones_like(idx),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=model.config.eos_token_id,
        )

    return [Implementation(f"HF {attn}", builder(attn), peer_step(loss), gen) for attn in ("sdpa", "eager")]


def _llms_from_scratch() -> list[Implementation]:
    if importlib.util.find_spec("llms_from_scratch") is None:
        return []
    from llms_from_scratch import ch04
    from llms_from_scratch.kv_cache import generate as kv_generate
    from llms_from_scratch.kv_cache import gpt2 as kv_gpt2

    class KVModel(kv_gpt2.GPTModel):
        """The package's KV-cache GPT-2 with the two members its own generator calls but 1.0.19 lacks."""

        def __init__(self, cfg: dict[str, Any]) -> None:
            super().__init__(cfg)
            self.cfg = cfg

        def reset_kv_cache(self) -> None:
            self.current_pos = 0

        def forward(self, in_idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
            return super().forward(in_idx, use_cache=cache is not None, cache=cache)

    def simple_gen(model: nn.Module, idx: torch.Tensor, n: int, use_cache: bool) -> torch.Tensor:
        model.eval()
        return ch04.generate_text_simple(model, idx, n, context_size=model.pos_emb.num_embeddings)

    def kv_gen(model: nn.Module, idx: torch.Tensor, n: int, use_cache: bool) -> torch.Tensor:
        return kv_generate.generate_text_simple(model, idx, n, use_cache=use_cache)

    return [
        Implementation("LFS GPTModel", ch04.GPTModel, peer_step(_plain_loss), simple_gen, cache_modes=(False,)),
        Implementation("LFS GPTModelFast", ch04.GPTModelFast, peer_step(_plain_loss), simple_gen, cache_modes=(False,)),
        # Trains exactly like LFS GPTModel, so it only takes part in the generation rows.
        Implementation("LFS kv_cache", KVModel, None, kv_gen),
    ]


_FAMILIES = (_ours, _huggingface, _llms_from_scratch)


def all_implementations() -> list[Implementation]:
    """Ours first, then every installed peer."""
    return [impl for family in _FAMILIES for impl in family()]


def find_implementation(name: str) -> Implementation:
    """The implementation called ``name``, importing only the package it lives in."""
    for family in _FAMILIES:
        for impl in family():
            if impl.name == name:
                return impl
    raise ValueError(f"name: expected one of {[impl.name for impl in all_implementations()]}, got {name!r}")
