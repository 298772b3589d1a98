"""Tests for minigpt_lib.model: chapter 2's placeholder logits, GPT-2 124M sizes and generation, input checks."""

import pytest
import torch

from minigpt_lib.config import GPT_CONFIG_124M
from minigpt_lib.generate import generate_text_simple
from minigpt_lib.model import (
    DummyGPTModel,
    DummyLayerNorm,
    DummyTransformerBlock,
    GPTModel,
    TransformerBlock,
    count_parameters,
    model_memory_bytes,
)
from minigpt_lib.tokenizer import get_tokenizer, text_to_token_ids, token_ids_to_text

TINY = {
    "vocab_size": 37,
    "context_length": 12,
    "emb_dim": 16,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}
SEED_BATCH = [[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt124m():
    """GPT-2 124M with the seed-123 initialization, in eval mode (built once: it takes seconds)."""
    torch.manual_seed(123)
    return GPTModel(GPT_CONFIG_124M).eval()


def tiny_model(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel({**TINY, **overrides}).eval()


def test_chapter2_batch_tokenizes_as_printed():
    tokenizer = get_tokenizer()
    batch = torch.stack([torch.tensor(tokenizer.encode(t)) for t in ("Every effort moves you", "Every day holds a")])
    assert batch.tolist() == SEED_BATCH


def test_dummy_model_prints_chapter2_logits():
    torch.manual_seed(123)
    model = DummyGPTModel(GPT_CONFIG_124M)
    with torch.no_grad():
        logits = model(torch.tensor(SEED_BATCH))
    assert logits.shape == (2, 4, 50257)
    firsts = [
        [-1.2034, 0.3201, -0.7130],
        [-0.1192, 0.4539, -0.4432],
        [0.5307, 1.6720, -0.4695],
        [0.0139, 1.6755, -0.3388],
        [-1.0908, 0.1798, -0.9484],
        [-0.7860, 0.5581, -0.0610],
        [0.3567, 1.2698, -0.6398],
        [-0.2407, -0.7349, -0.5102],
    ]
    lasts = [
        [-1.5548, -0.2390, -0.4667],
        [0.2392, 1.3469, 1.2430],
        [1.1966, 0.0111, 0.5835],
        [1.1586, -0.0435, -1.0400],
        [-1.6047, 0.2439, -0.4530],
        [0.4835, -0.0077, 1.6621],
        [-0.0162, -0.1296, 0.3717],
        [2.0057, -0.3694, 0.1814],
    ]
    rows = logits.reshape(8, -1)
    torch.testing.assert_close(rows[:, :3], torch.tensor(firsts), atol=1e-4, rtol=0)
    torch.testing.assert_close(rows[:, -3:], torch.tensor(lasts), atol=1e-4, rtol=0)


def test_dummy_parts_pass_input_through():
    x = torch.randn(2, 3, 4)
    assert DummyTransformerBlock(GPT_CONFIG_124M)(x) is x
    assert DummyLayerNorm(4, eps=1e-6)(x) is x
    assert list(dict(DummyGPTModel(TINY).named_children())) == [
        "tok_emb",
        "pos_emb",
        "drop_emb",
        "trf_blocks",
        "final_norm",
        "out_head",
    ]


def test_124m_parameter_counts_and_memory(gpt124m):
    assert count_parameters(gpt124m) == 163_009_536
    assert count_parameters(gpt124m, include_out_head=False) == 124_412_160
    assert model_memory_bytes(gpt124m) == 163_009_536 * 4
    assert model_memory_bytes(gpt124m, dtype=torch.bfloat16) == 163_009_536 * 2
    assert round(model_memory_bytes(gpt124m) / 1024**2, 2) == 621.83


def test_124m_tied_weights_count_once():
    with torch.device("meta"):  # shapes only: no memory, no initialization time
        model = GPTModel({**GPT_CONFIG_124M, "tie_weights": True})
    assert count_parameters(model) == 124_412_160
    assert count_parameters(model, include_out_head=False) == 124_412_160
    assert model_memory_bytes(model) == 124_412_160 * 4


def test_tied_weights_share_the_tensor():
    model = tiny_model(tie_weights=True)
    assert model.out_head.weight is model.tok_emb.weight
    assert model.cfg["tie_weights"] is True
    assert not tiny_model().cfg["tie_weights"]
    assert tiny_model().out_head.weight is not tiny_model().tok_emb.weight


def test_124m_generation_prints_as_in_chapter7(gpt124m):
    out = generate_text_simple(gpt124m, text_to_token_ids("Hello, I am"), max_new_tokens=6, context_size=1024)
    assert out.shape == (1, 10)
    assert token_ids_to_text(out) == "Hello, I am Featureiman Byeswickattribute argue"


def test_parameters_are_created_in_the_book_order():
    names = [name for name, _ in tiny_model(n_layers=1).named_parameters()]
    block = [
        f"trf_blocks.0.{n}"
        for n in (
            "att.W_query.weight",
            "att.W_key.weight",
            "att.W_value.weight",
            "att.out_proj.weight",
            "att.out_proj.bias",
            "ff.layers.0.weight",
            "ff.layers.0.bias",
            "ff.layers.2.weight",
            "ff.layers.2.bias",
            "norm1.scale",
            "norm1.shift",
            "norm2.scale",
            "norm2.shift",
        )
    ]
    assert names == [
        "tok_emb.weight",
        "pos_emb.weight",
        *block,
        "final_norm.scale",
        "final_norm.shift",
        "out_head.weight",
    ]
    assert list(dict(TransformerBlock(TINY).named_children())) == ["att", "ff", "norm1", "norm2", "drop_shortcut"]


def test_model_keeps_the_validated_config():
    model = tiny_model()
    assert model.cfg == {**TINY, "tie_weights": False}
    assert len(model.trf_blocks) == TINY["n_layers"]
    assert model.pos_emb.weight.shape == (TINY["context_length"], TINY["emb_dim"])
    with pytest.raises(ValueError, match=r"cfg\['emb_dim'\]"):
        GPTModel({**TINY, "emb_dim": 15})
    with pytest.raises(ValueError, match=r"cfg\['drop_rate'\]"):
        DummyGPTModel({**TINY, "drop_rate": 1.0})


def test_transformer_block_shape_and_shortcuts():
    torch.manual_seed(0)
    block = TransformerBlock(TINY).eval()
    x = torch.randn(2, 5, TINY["emb_dim"])
    assert block(x).shape == x.shape
    # With both branches' last layers zeroed, only the shortcut path remains: the block is the identity.
    with torch.no_grad():
        for layer in (block.att.out_proj, block.ff.layers[2]):
            layer.weight.zero_()
            layer.bias.zero_()
    torch.testing.assert_close(block(x), x)


def test_logits_shape_and_eval_determinism():
    model = tiny_model()
    idx = torch.randint(0, TINY["vocab_size"], (3, 7))
    logits = model(idx)
    assert logits.shape == (3, 7, TINY["vocab_size"])
    torch.testing.assert_close(model(idx), logits)
    model.train()
    assert not torch.allclose(model(idx), logits)  # dropout is active in training mode


def test_int32_ids_give_the_same_logits():
    model = tiny_model()
    idx = torch.randint(0, TINY["vocab_size"], (2, 5))
    torch.testing.assert_close(model(idx.int()), model(idx))


def test_gpt_logits_are_causal():
    model = tiny_model()
    idx = torch.randint(0, TINY["vocab_size"], (2, TINY["context_length"]))
    base = model(idx)
    for t in range(idx.shape[1]):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % TINY["vocab_size"]
        logits = model(changed)
        torch.testing.assert_close(logits[:, :t], base[:, :t])
        assert not torch.allclose(logits[:, t], base[:, t])


def test_kv_cache_forward_equals_full_forward():
    model = tiny_model()
    idx = torch.randint(0, TINY["vocab_size"], (2, TINY["context_length"]))
    full = model(idx)
    cache = model.new_kv_cache()
    pieces = [model(idx[:, a:b], kv_cache=cache) for a, b in [(0, 5), (5, 6), (6, 7), (7, 12)]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    assert cache.length == TINY["context_length"]
    with pytest.raises(ValueError, match=r"context_length=12 tokens fit, got 1 after 12 cached"):
        model(idx[:, :1], kv_cache=cache)


@pytest.mark.parametrize(
    ("idx", "message"),
    [
        (torch.zeros(1, 13, dtype=torch.long), r"in_idx: at most context_length=12 tokens fit, got 13; crop"),
        (torch.tensor([[1, 2, 37]]), r"in_idx: token ids must lie in \[0, 36\], got values from 1 to 37"),
        (torch.tensor([[-1, 2, 3]]), r"in_idx: token ids must lie in \[0, 36\], got values from -1 to 3"),
        (torch.zeros(1, 3), r"in_idx: expected an integer tensor \(torch.long\), got dtype torch.float32"),
        (torch.zeros(3, dtype=torch.long), r"in_idx: expected shape \(batch, tokens\).*got \(3,\)"),
        (torch.zeros(1, 2, 3, dtype=torch.long), r"in_idx: expected shape \(batch, tokens\).*got \(1, 2, 3\)"),
        (torch.zeros(1, 0, dtype=torch.long), r"in_idx: expected shape \(batch, tokens\).*got \(1, 0\)"),
        (torch.zeros(0, 3, dtype=torch.long), r"in_idx: expected shape \(batch, tokens\).*got \(0, 3\)"),
    ],
)
def test_bad_inputs_raise_value_error(idx, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()(idx)


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match="in_idx: expected a tensor of token ids, got list"):
        tiny_model()([[1, 2, 3]])


def test_compiled_gpt_model_matches_eager_mode():
    model = tiny_model(drop_rate=0.0).eval()
    idx = torch.randint(0, model.cfg["vocab_size"], (2, 6))
    compiled = torch.compile(model)  # Inductor, the default backend
    logits = compiled(idx)
    torch.testing.assert_close(logits, model(idx), rtol=1e-5, atol=1e-5)
    # Gradients through the compiled graph equal eager ones too.
    loss = logits.logsumexp(-1).mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.autograd.grad(model(idx).logsumexp(-1).mean(), list(model.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# --- a KV cache from another call or another model is refused, never read as garbage ---------------------


@pytest.mark.parametrize(
    ("other", "batch", "message"),
    [
        ({}, 3, r"holds 5 tokens of \(batch, heads, head_dim\)=\(2, 4, 4\), got new keys of \(3, 4, 4\)"),
        ({}, 1, r"\(batch, heads, head_dim\)=\(2, 4, 4\), got new keys of \(1, 4, 4\)"),
        ({"n_heads": 2}, 2, r"\(batch, heads, head_dim\)=\(2, 2, 8\), got new keys of \(2, 4, 4\)"),
        ({"n_heads": 8}, 2, r"\(batch, heads, head_dim\)=\(2, 8, 2\), got new keys of \(2, 4, 4\)"),
        ({"n_layers": 1}, 2, r"kv_cache: expected a KVCache of 2 layers from new_kv_cache\(\), got 1 layers"),
        ({"n_layers": 3}, 2, r"kv_cache: expected a KVCache of 2 layers from new_kv_cache\(\), got 3 layers"),
    ],
)
def test_a_kv_cache_filled_for_another_batch_or_model_is_refused(other, batch, message):
    filler = tiny_model(**other)
    cache = filler.new_kv_cache()
    filler(torch.randint(0, TINY["vocab_size"], (2, 5)), kv_cache=cache)
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        model(torch.randint(0, TINY["vocab_size"], (batch, 1)), kv_cache=cache)


def test_a_kv_cache_filled_in_another_dtype_is_refused():
    model = tiny_model()
    cache = model.new_kv_cache()
    model(torch.randint(0, TINY["vocab_size"], (1, 5)), kv_cache=cache)
    with pytest.raises(ValueError, match=r"kv_cache: holds 5 tokens as torch.float32 on cpu, got new keys as torch.bf"):
        model.to(torch.bfloat16)(torch.randint(0, TINY["vocab_size"], (1, 1)), kv_cache=cache)


def test_a_reset_kv_cache_serves_another_batch_size_correctly():
    model = tiny_model()
    cache = model.new_kv_cache()
    model(torch.randint(0, TINY["vocab_size"], (2, 5)), kv_cache=cache)
    cache.reset()
    idx = torch.randint(0, TINY["vocab_size"], (3, 6))
    cached = torch.cat([model(idx[:, :4], kv_cache=cache), model(idx[:, 4:], kv_cache=cache)], dim=1)
    torch.testing.assert_close(cached, model(idx))


@pytest.mark.parametrize("cache", [[], object(), "cache"])
def test_something_else_than_a_kv_cache_is_refused(cache):
    with pytest.raises(ValueError, match="kv_cache: expected a KVCache of 2 layers from new_kv_cache"):
        tiny_model()(torch.zeros(1, 2, dtype=torch.long), kv_cache=cache)
