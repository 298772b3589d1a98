"""Tests for minigpt_lib.generate: greedy and sampled decoding, the KV cache path, top-k/top-p and stopping."""

import pytest
import torch

from minigpt_lib.generate import (
    complete,
    filter_logits,
    generate,
    generate_text_simple,
    generate_tokens,
    sample_next_token,
    stream_text,
)
from minigpt_lib.model import DummyGPTModel, GPTModel
from minigpt_lib.tokenizer import get_tokenizer

CFG = {
    "vocab_size": 97,
    "context_length": 16,
    "emb_dim": 32,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": True,
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


@pytest.fixture
def prompt():
    torch.manual_seed(1)
    return torch.randint(0, CFG["vocab_size"], (2, 5))


def sampled(model, idx, seed, use_cache=True, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return generate(model, idx, 50, use_cache=use_cache, generator=generator, **kwargs)


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_equals_generate_text_simple_past_the_context_window(model, prompt, use_cache):
    expected = generate_text_simple(model, prompt, max_new_tokens=50, context_size=CFG["context_length"])
    out = generate(model, prompt, 50, temperature=0.0, use_cache=use_cache)
    assert out.shape == (2, 55) and out.dtype == torch.long
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 20}, {"top_p": 0.9}, {"top_k": 30, "top_p": 0.95}])
def test_kv_cache_equals_no_cache_when_sampling(model, prompt, kwargs):
    with_cache = sampled(model, prompt, seed=7, temperature=1.0, **kwargs)
    without_cache = sampled(model, prompt, seed=7, use_cache=False, temperature=1.0, **kwargs)
    assert with_cache.shape == (2, 55)
    assert torch.equal(with_cache, without_cache)
    assert not torch.equal(with_cache, generate(model, prompt, 50))  # it did sample, not decode greedily


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_shorter_context_size_with_and_without_cache(model, prompt, temperature):
    with_cache = sampled(model, prompt, seed=3, context_size=8, temperature=temperature)
    without_cache = sampled(model, prompt, seed=3, use_cache=False, context_size=8, temperature=temperature)
    assert torch.equal(with_cache, without_cache)
    if temperature == 0.0:
        assert torch.equal(with_cache, generate_text_simple(model, prompt, 50, context_size=8))


def test_sampling_is_reproducible_with_a_generator(model, prompt):
    first = sampled(model, prompt, seed=11, temperature=1.0)
    assert torch.equal(first, sampled(model, prompt, seed=11, temperature=1.0))
    assert not torch.equal(first, sampled(model, prompt, seed=12, temperature=1.0))


def test_top_k_one_and_tiny_top_p_are_greedy(model, prompt):
    greedy = generate(model, prompt, 50)
    assert torch.equal(sampled(model, prompt, seed=5, temperature=1.5, top_k=1), greedy)
    assert torch.equal(sampled(model, prompt, seed=5, temperature=1.5, top_p=1e-6), greedy)


def test_max_new_tokens_zero_returns_the_prompt(model, prompt):
    assert torch.equal(generate(model, prompt, 0), prompt)


def test_prompt_longer_than_the_context_is_cropped(model):
    torch.manual_seed(2)
    long_prompt = torch.randint(0, CFG["vocab_size"], (1, 20))
    out = generate(model, long_prompt, 5)
    assert out.shape == (1, 25)
    assert torch.equal(out[:, :20], long_prompt)
    # Only the last 16 tokens matter: the first four may be anything.
    assert torch.equal(out[:, 4:], generate(model, long_prompt[:, 4:], 5))
    assert torch.equal(out, generate_text_simple(model, long_prompt, 5, context_size=16))


def test_stops_at_eos(model, prompt):
    first = generate(model, prompt[:1], 1)[0, -1].item()
    out = generate(model, prompt[:1], 10, eos_id=first)
    assert out.shape == (1, prompt.shape[1] + 1)
    assert out[0, -1].item() == first


def test_finished_rows_are_padded_with_eos(model, prompt):
    free = generate(model, prompt, 20)[:, 5:]
    eos = free[0, 0].item()
    row1_hits = (free[1] == eos).nonzero()
    assert 3 <= row1_hits[0].item() < 19  # premise: row 1 produces eos too, but later than row 0
    steps = row1_hits[0].item() + 1
    out = generate(model, prompt, 20, eos_id=eos)
    assert out.shape == (2, 5 + steps)  # stopped once both rows were done
    assert torch.all(out[0, 5:] == eos)  # row 0 finished first and is padded with eos
    assert torch.equal(out[1, 5:], free[1, :steps])


@pytest.mark.parametrize("use_cache", [True, False])
def test_mode_is_restored(model, prompt, use_cache):
    model.train()
    try:
        first = generate(model, prompt, 3, use_cache=use_cache)
        assert model.training and all(m.training for m in model.modules())
        # It ran in eval mode: dropout off, so the result is deterministic.
        assert torch.equal(first, generate(model, prompt, 3, use_cache=use_cache))
    finally:
        model.eval()
    generate(model, prompt, 3, use_cache=use_cache)
    assert not any(m.training for m in model.modules())


def test_models_without_cache_need_use_cache_false():
    torch.manual_seed(0)
    dummy = DummyGPTModel(CFG)
    idx = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="use_cache: DummyGPTModel has no new_kv_cache"):
        generate(dummy, idx, 2, context_size=16)
    expected = generate_text_simple(dummy.eval(), idx, 4, context_size=16)
    assert torch.equal(generate(dummy, idx, 4, context_size=16, use_cache=False), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.5}, r"temperature: expected a number >= 0.*got -0.5"),
        ({"temperature": "hot"}, r"temperature: expected a number >= 0.*got 'hot'"),
        ({"top_k": 0}, r"top_k: expected None or an integer >= 1, got 0"),
        ({"top_k": -3}, r"top_k: expected None or an integer >= 1, got -3"),
        ({"top_k": 2.0}, r"top_k: expected None or an integer >= 1, got 2.0"),
        ({"top_k": True}, r"top_k: expected None or an integer >= 1, got True"),
        ({"top_p": 0}, r"top_p: expected None or a number in \(0, 1\], got 0"),
        ({"top_p": 1.5}, r"top_p: expected None or a number in \(0, 1\], got 1.5"),
        ({"max_new_tokens": -1}, r"max_new_tokens: expected an integer >= 0, got -1"),
        ({"max_new_tokens": True}, r"max_new_tokens: expected an integer >= 0, got True"),
        ({"max_new_tokens": 2.0}, r"max_new_tokens: expected an integer >= 0, got 2.0"),
        ({"context_size": 17}, r"context_size: expected an integer in \[1, 16\], got 17"),
        ({"context_size": 0}, r"context_size: expected an integer in \[1, 16\], got 0"),
        ({"idx": torch.tensor([1, 2, 3])}, r"idx: expected a tensor of shape \(batch, tokens\)"),
        ({"idx": [[1, 2, 3]]}, r"idx: expected a tensor of shape \(batch, tokens\)"),
    ],
)
def test_bad_arguments(model, kwargs, message):
    args = {"idx": torch.tensor([[1, 2, 3]]), "max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, **args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p")],
)
def test_bad_sampling_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_next_token(torch.randn(1, 5), **kwargs)
    if "temperature" not in kwargs:
        with pytest.raises(ValueError, match=message):
            filter_logits(torch.randn(1, 5), **kwargs)


def test_filter_logits_top_k_keeps_exactly_k():
    torch.manual_seed(4)
    logits = torch.randn(3, 50)
    for k in (1, 5, 49):
        kept = torch.isfinite(filter_logits(logits, top_k=k))
        assert kept.sum(dim=-1).tolist() == [k] * 3
        assert torch.equal(kept, torch.zeros_like(kept).scatter(-1, logits.topk(k).indices, True))
    filtered = filter_logits(logits, top_k=5)
    assert torch.equal(filtered[torch.isfinite(filtered)], logits[torch.isfinite(filtered)])  # kept values unchanged
    assert torch.equal(filter_logits(logits, top_k=50), logits)
    assert torch.equal(filter_logits(logits, top_k=500), logits)


def test_filter_logits_top_k_keeps_ties():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, False, True, True, False]]


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (0.3, [True, False, False, False]),
        (0.5, [True, False, False, False]),
        (0.51, [True, True, False, False]),
        (0.8, [True, True, False, False]),
        (0.81, [True, True, True, False]),
        (0.96, [True, True, True, True]),
        (1.0, [True, True, True, True]),
    ],
)
def test_filter_logits_nucleus(top_p, kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    order = torch.tensor([2, 0, 3, 1])  # shuffled, so the sort inside top-p is exercised
    logits = probs[order].log().unsqueeze(0)
    assert torch.isfinite(filter_logits(logits, top_p=top_p))[0].tolist() == [kept[i] for i in order]


def test_filter_logits_top_k_then_top_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # top_k=3 renormalizes to 0.5/0.95, 0.3/0.95, ...: 0.84 of the mass lies in the first two.
    assert torch.isfinite(filter_logits(logits, top_k=3, top_p=0.84)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_k=3, top_p=0.85)).tolist() == [[True, True, True, False]]


def test_sample_next_token_greedy_and_shapes():
    torch.manual_seed(6)
    logits = torch.randn(4, 30)
    greedy = sample_next_token(logits)
    assert greedy.shape == (4, 1) and greedy.dtype == torch.long
    assert torch.equal(greedy[:, 0], logits.argmax(dim=-1))
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next_token(logits, temperature=1e-3, generator=generator), greedy)


def test_sampling_follows_the_tempered_distribution():
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05])
    logits = probs.log().expand(20000, 4)
    generator = torch.Generator().manual_seed(0)
    for temperature in (1.0, 2.0):
        draws = sample_next_token(logits, temperature=temperature, generator=generator)[:, 0]
        freq = torch.bincount(draws, minlength=4) / len(draws)
        torch.testing.assert_close(freq, torch.softmax(probs.log() / temperature, dim=-1), atol=0.015, rtol=0)
    draws = sample_next_token(logits, temperature=1.0, top_k=2, generator=generator)[:, 0]
    freq = torch.bincount(draws, minlength=4) / len(draws)
    torch.testing.assert_close(freq, torch.tensor([0.6, 0.25, 0, 0]) / 0.85, atol=0.015, rtol=0)


class ByteTokenizer:
    """One token per UTF-8 byte (ids 0-96 cover the bytes used here), so one character can span several tokens."""

    def encode(self, text, allowed_special=None):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


class ScriptedModel(torch.nn.Module):
    """A model that always predicts the next id of a fixed script, whatever the input: decoding made visible."""

    def __init__(self, script):
        super().__init__()
        self.script = script
        self.cfg = {"context_length": 64}
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, idx):
        logits = torch.full((idx.shape[0], idx.shape[1], 256), -1e9)
        logits[:, -1, self.script[min(self.calls, len(self.script) - 1)]] = 0.0
        self.calls += 1
        return logits


def test_stream_text_holds_back_a_character_until_its_bytes_are_complete():
    script = list("é!".encode()) + [10]  # é is two bytes: the first alone decodes to U+FFFD
    model = ScriptedModel(script)
    pieces = list(stream_text(model, ByteTokenizer(), "a", max_new_tokens=4, eos_id=10))
    assert pieces == ["é", "!"]
    assert "\ufffd" not in "".join(pieces)


def test_complete_is_the_prompt_and_the_streamed_pieces(model):
    tokenizer = get_tokenizer()
    model_gpt = GPTModel({**CFG, "vocab_size": 50257, "drop_rate": 0.0})
    text = complete(model_gpt, tokenizer, "Every effort", max_new_tokens=6, temperature=1.0, seed=5)
    assert text == "Every effort" + "".join(
        stream_text(model_gpt, tokenizer, "Every effort", 6, temperature=1.0, seed=5)
    )
    idx = torch.tensor([tokenizer.encode("Every effort")])
    expected = generate(model_gpt, idx, 6, temperature=1.0, generator=torch.Generator().manual_seed(5))
    assert text == tokenizer.decode(expected[0].tolist())
    assert complete(model_gpt, tokenizer, "Every effort", 6, temperature=1.0, seed=6) != text


def test_generate_tokens_yields_what_generate_returns(model, prompt):
    steps = list(generate_tokens(model, prompt, 7, temperature=0.9, generator=torch.Generator().manual_seed(2)))
    assert len(steps) == 7 and all(s.shape == (2, 1) for s in steps)
    expected = generate(model, prompt, 7, temperature=0.9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.cat([prompt, *steps], dim=1), expected)


def test_generate_tokens_restores_the_mode_when_closed_early(model, prompt):
    model.train()
    steps = generate_tokens(model, prompt, 100)
    next(steps)
    assert not model.training  # eval mode while generating
    steps.close()
    assert model.training
    model.eval()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "prompt"),
        ({"seed": 1.5}, "seed"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": True}, "top_p"),
    ],
)
def test_text_generation_checks_its_arguments(kwargs, message):
    model_gpt = GPTModel({**CFG, "vocab_size": 50257})
    args = {"prompt": "Every", **kwargs}
    with pytest.raises(ValueError, match=message):
        complete(model_gpt, get_tokenizer(), args.pop("prompt"), 3, **args)


# --- a model whose numbers are not finite gives an error, never text ---------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize(
    ("use_cache", "kwargs"), [(True, {}), (False, {}), (True, {"temperature": 1.0}), (True, {"top_k": 5})]
)
def test_non_finite_logits_are_an_error_not_tokens(prompt, value, use_cache, kwargs):
    broken = GPTModel(CFG).eval()
    with torch.no_grad():
        broken.out_head.weight[3, 0] = value  # NaN, or +-inf in the logits of token 3
    with pytest.raises(ValueError, match="model: its logits hold NaN or infinite values, so no token can be chosen"):
        generate(broken, prompt, 5, use_cache=use_cache, **kwargs)


def test_non_finite_weights_fail_the_text_functions_too():
    broken = GPTModel(CFG).eval()
    with torch.no_grad():
        broken.tok_emb.weight.fill_(float("nan"))
    tokenizer = CharTokenizerForTest()
    with pytest.raises(ValueError, match="model: its logits hold NaN"):
        complete(broken, tokenizer, "ab", 3)
    with pytest.raises(ValueError, match="model: its logits hold NaN"):
        next(stream_text(broken, tokenizer, "ab", 3))


class CharTokenizerForTest:
    """97 ids, one per character from chr(32): enough to decode anything the test model emits."""

    n_vocab = 97

    def encode(self, text, allowed_special=None):
        return [ord(c) - 32 for c in text]

    def decode(self, tokens):
        return "".join(chr(t + 32) for t in tokens)
