"""Tests for the generation playground in minigpt_lib.widgets: its controls, its button and the function it calls."""

import html

import pytest
import torch

from minigpt_lib import GPT_CONFIG_SMALL, CharTokenizer, GPTModel
from minigpt_lib.generate import generate
from minigpt_lib.widgets import GenerationPlayground, generation_playground

TEXT = "every effort moves you toward the light, and every light moves you"


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.from_text(TEXT)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = {
        **GPT_CONFIG_SMALL,
        "vocab_size": tokenizer.n_vocab,
        "context_length": 32,
        "emb_dim": 16,
        "n_heads": 2,
        "n_layers": 2,
    }
    torch.manual_seed(0)
    return GPTModel(cfg)


@pytest.fixture
def playground(model, tokenizer):
    return generation_playground(model, tokenizer, prompt="every effort", max_new_tokens=10)


def reference_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed):
    """What the playground should show, computed directly with generate() and a seeded generator."""
    idx = torch.tensor([tokenizer.encode(prompt)])
    generator = torch.Generator().manual_seed(seed)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    return tokenizer.decode(out[0].tolist())


def test_button_click_generates_with_the_controls_settings(playground, model, tokenizer):
    playground.prompt.value = "moves you"
    playground.temperature.value = 0.8
    playground.top_k.value = 5
    playground.top_p.value = 0.9
    playground.max_new_tokens.value = 12
    playground.seed.value = 7
    playground.generate_button.click()
    expected = reference_text(model, tokenizer, "moves you", 12, 0.8, 5, 0.9, 7)
    assert playground.error is None
    assert playground.text == expected
    assert len(playground.text) == len("moves you") + 12  # one character per token
    assert playground.result.value.startswith('<pre style="white-space: pre-wrap"><b>moves you</b>')
    assert html.escape(expected[len("moves you") :]) in playground.result.value


def test_generate_method_returns_what_the_button_shows(playground):
    playground.seed.value = 3
    returned = playground.generate()
    playground.text = ""
    playground.generate_button.click()
    assert playground.text == returned


def test_same_seed_same_text_and_another_seed_other_text(playground):
    playground.temperature.value = 1.5
    playground.top_k.value = 0
    playground.max_new_tokens.value = 30
    playground.seed.value = 11
    first = playground.generate()
    assert playground.generate() == first
    playground.seed.value = 12
    assert playground.generate() != first


def test_temperature_zero_and_top_k_one_are_greedy(playground, model, tokenizer):
    greedy = reference_text(model, tokenizer, "every effort", 10, 0.0, None, None, 0)
    playground.temperature.value = 0.0
    assert playground.generate() == greedy
    playground.temperature.value = 1.0
    playground.top_k.value = 1
    playground.seed.value = 99
    assert playground.generate() == greedy


def test_settings_turn_off_values_into_none(playground):
    playground.top_k.value = 0
    playground.top_p.value = 1.0
    settings = playground.settings()
    assert settings["top_k"] is None and settings["top_p"] is None
    playground.top_k.value = 40
    playground.top_p.value = 0.5
    settings = playground.settings()
    assert settings["top_k"] == 40 and settings["top_p"] == 0.5


def test_sampling_leaves_the_global_random_state_alone(playground):
    torch.manual_seed(5)
    before = torch.get_rng_state()
    playground.generate_button.click()
    assert torch.equal(torch.get_rng_state(), before)


def test_empty_prompt_is_reported_in_the_widget_not_raised(playground):
    playground.prompt.value = ""
    with pytest.raises(ValueError, match="prompt"):
        playground.generate()
    playground.generate_button.click()
    assert playground.text == ""
    assert "prompt" in playground.error
    assert "error: prompt" in playground.result.value


def test_prompt_outside_the_vocabulary_is_reported(playground):
    playground.prompt.value = "every effort!"
    playground.generate_button.click()
    assert playground.text == ""
    assert "'!'" in playground.error


@pytest.mark.parametrize(
    ("name", "value"),
    [("temperature", 2.5), ("top_k", -1), ("top_p", 0.0), ("max_new_tokens", 0)],
)
def test_starting_values_outside_the_sliders_are_refused(model, tokenizer, name, value):
    with pytest.raises(ValueError, match=name):
        GenerationPlayground(model, tokenizer, **{name: value})


def test_only_gpt_models_are_accepted(tokenizer):
    with pytest.raises(TypeError, match="model"):
        generation_playground(torch.nn.Linear(2, 2), tokenizer)


def test_widget_displays_and_holds_all_controls(playground):
    bundle = playground._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    rows = playground.widget.children
    controls = [w for row in rows for w in getattr(row, "children", (row,))]
    for control in (
        playground.prompt,
        playground.temperature,
        playground.top_k,
        playground.top_p,
        playground.max_new_tokens,
        playground.seed,
        playground.generate_button,
        playground.result,
    ):
        assert control in controls
