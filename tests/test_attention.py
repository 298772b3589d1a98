"""Tests for minigpt_lib.attention: causal masking, explicit vs fused paths, attention weights and the KV cache."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt_lib.attention import KVCache, LayerKVCache, MultiHeadAttention, explicit_causal_attention

D_IN, D_OUT, CONTEXT, HEADS = 6, 8, 12, 2

pytestmark = pytest.mark.usefixtures("one_thread")


def make_mha(use_fast: bool = True, dropout: float = 0.0, qkv_bias: bool = True, seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    mha = MultiHeadAttention(D_IN, D_OUT, CONTEXT, dropout, HEADS, qkv_bias=qkv_bias, use_fast=use_fast)
    return mha.eval()


def twin_paths(dropout: float = 0.0) -> tuple[MultiHeadAttention, MultiHeadAttention]:
    """The same weights, once with the explicit steps and once with the fused kernel."""
    fast = make_mha(use_fast=True, dropout=dropout)
    slow = make_mha(use_fast=False, dropout=dropout)
    slow.load_state_dict(fast.state_dict())
    return slow, fast


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(2, 10, D_IN)


def test_attributes_and_output_shape(x):
    mha = make_mha()
    assert mha.head_dim == D_OUT // HEADS and mha.use_fast is True
    for name in ("W_query", "W_key", "W_value"):
        layer = getattr(mha, name)
        assert (layer.in_features, layer.out_features) == (D_IN, D_OUT)
    assert (mha.out_proj.in_features, mha.out_proj.out_features) == (D_OUT, D_OUT)
    assert mha(x).shape == (2, 10, D_OUT)


def test_qkv_bias_flag():
    assert make_mha(qkv_bias=False).W_query.bias is None
    assert make_mha(qkv_bias=True).W_key.bias is not None
    assert make_mha(qkv_bias=False).out_proj.bias is not None  # the output projection always has a bias


def test_mask_is_a_non_persistent_bool_upper_triangle():
    mha = make_mha()
    assert mha.mask.dtype == torch.bool and mha.mask.shape == (CONTEXT, CONTEXT)
    assert torch.equal(mha.mask, torch.ones(CONTEXT, CONTEXT).triu(diagonal=1).bool())
    assert "mask" not in mha.state_dict()  # so checkpoints and GPT-2 weights load without it


@pytest.mark.parametrize("use_fast", [True, False])
def test_changing_a_later_token_never_changes_earlier_outputs(x, use_fast):
    mha = make_mha(use_fast=use_fast)
    base = mha(x)
    for t in range(x.shape[1]):
        changed = x.clone()
        changed[:, t] += torch.randn(D_IN)
        out = mha(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t])
        assert not torch.allclose(out[:, t], base[:, t])  # the changed token itself does move


def test_explicit_path_equals_fused_path(x):
    slow, fast = twin_paths()
    torch.testing.assert_close(slow(x), fast(x))


def test_explicit_function_matches_pytorch_kernel():
    torch.manual_seed(3)
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    mask = torch.ones(5, 5, dtype=torch.bool).triu(diagonal=1)
    context, weights = explicit_causal_attention(q, k, v, mask)
    torch.testing.assert_close(context, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    expected = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(4)).masked_fill(mask, float("-inf")), dim=-1)
    torch.testing.assert_close(weights, expected)


@pytest.mark.parametrize("chunks", [[1] * 10, [3, 5, 2], [4, 1, 1, 4], [10]])
@pytest.mark.parametrize("use_fast", [True, False])
def test_kv_cache_equals_full_forward(x, chunks, use_fast):
    slow, fast = twin_paths()
    full = slow(x)  # reference: explicit path, whole sequence at once
    mha = fast if use_fast else slow
    cache = LayerKVCache(CONTEXT)
    outs, start = [], 0
    for size in chunks:
        outs.append(mha(x[:, start : start + size], kv_cache=cache))
        start += size
        assert cache.length == start
    torch.testing.assert_close(torch.cat(outs, dim=1), full)


def test_return_weights_are_causal_probabilities(x):
    for mha in twin_paths():
        out, weights = mha(x, return_weights=True)
        assert weights.shape == (2, HEADS, 10, 10)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, HEADS, 10))
        assert torch.all(weights.triu(diagonal=1) == 0)
        assert torch.all(weights[..., torch.ones(10, 10, dtype=torch.bool).tril()] > 0)
        torch.testing.assert_close(out, mha(x))
    # The first token can only look at itself.
    assert torch.all(weights[..., 0, 0] == 1)


def test_return_weights_with_kv_cache(x):
    mha = make_mha()
    cache = LayerKVCache(CONTEXT)
    mha(x[:, :4], kv_cache=cache)
    _, weights = mha(x[:, 4:7], kv_cache=cache, return_weights=True)
    assert weights.shape == (2, HEADS, 3, 7)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, HEADS, 3))
    for i in range(3):  # query 4 + i sees keys 0..4 + i and nothing after
        assert torch.all(weights[..., i, 5 + i :] == 0)
        assert torch.all(weights[..., i, : 5 + i] > 0)
    _, full_weights = mha(x[:, :7], return_weights=True)
    torch.testing.assert_close(weights, full_weights[..., 4:7, :])


def test_dropout_acts_only_in_training(x):
    for mha in twin_paths(dropout=0.5):
        evaluated = mha(x)
        torch.testing.assert_close(mha(x), evaluated)  # eval mode: deterministic
        mha.train()
        torch.manual_seed(0)
        assert not torch.allclose(mha(x), evaluated)


@pytest.mark.parametrize("shape", [(10, D_IN), (2, 10, D_IN + 1), (1, 2, 10, D_IN)])
def test_wrong_input_shape(shape):
    with pytest.raises(ValueError, match=rf"x: expected shape \(batch, tokens, {D_IN}\), got"):
        make_mha()(torch.randn(*shape))


def test_exceeding_context_length():
    mha = make_mha()
    with pytest.raises(ValueError, match=rf"context_length={CONTEXT}.*0 cached \+ {CONTEXT + 1} new"):
        mha(torch.randn(1, CONTEXT + 1, D_IN))
    cache = LayerKVCache(CONTEXT)
    mha(torch.randn(1, CONTEXT - 2, D_IN), kv_cache=cache)
    with pytest.raises(ValueError, match=rf"context_length={CONTEXT}.*{CONTEXT - 2} cached \+ 3 new"):
        mha(torch.randn(1, 3, D_IN), kv_cache=cache)
    assert cache.length == CONTEXT - 2  # the failed call left the cache alone


def test_d_out_must_divide_into_heads():
    with pytest.raises(ValueError, match="d_out: expected a multiple of num_heads=3, got 8"):
        MultiHeadAttention(D_IN, 8, CONTEXT, 0.0, num_heads=3)


def test_layer_cache_grows_and_refuses_overflow():
    cache = LayerKVCache(max_len=5)
    k1, v1 = torch.randn(2, 1, 2, 3, 4).unbind(0)
    keys, values = cache.update(k1, v1)
    assert cache.length == 3 and torch.equal(keys, k1) and torch.equal(values, v1)
    k2, v2 = torch.randn(2, 1, 2, 2, 4).unbind(0)
    keys, values = cache.update(k2, v2)
    assert cache.length == 5
    assert torch.equal(keys, torch.cat([k1, k2], dim=2)) and torch.equal(values, torch.cat([v1, v2], dim=2))
    with pytest.raises(ValueError, match=r"kv_cache: holds at most 5 tokens, but 5 cached \+ 1 new = 6"):
        cache.update(k2[:, :, :1], v2[:, :, :1])


def test_model_cache_length_and_reset():
    cache = KVCache(n_layers=3, max_len=8)
    assert len(cache.layers) == 3 and cache.length == 0
    for layer in cache.layers:
        layer.update(torch.randn(1, 2, 4, 5), torch.randn(1, 2, 4, 5))
    assert cache.length == 4
    cache.reset()
    assert cache.length == 0 and all(layer.length == 0 for layer in cache.layers)
