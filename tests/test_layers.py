"""Tests for minigpt_lib.layers: LayerNorm, GELU and FeedForward, including the numbers chapter 3 prints."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt_lib.config import GPT_CONFIG_124M
from minigpt_lib.layers import GELU, FeedForward, LayerNorm, linear_cross_entropy


@pytest.fixture
def chapter3_batch():
    """Chapter 3's example: two inputs of five features (the first draw after seed 123)."""
    torch.manual_seed(123)
    return torch.randn(2, 5)


def test_chapter3_layer_norm_gives_mean_zero_and_unit_biased_variance(chapter3_batch):
    out_ln = LayerNorm(emb_dim=5)(chapter3_batch)
    mean = out_ln.mean(dim=-1, keepdim=True)
    var = out_ln.var(dim=-1, unbiased=False, keepdim=True)
    assert mean.abs().max() < 1e-6
    torch.testing.assert_close(var, torch.ones(2, 1), atol=1e-4, rtol=0)
    # Rounded to four decimals this prints exactly as the book shows: -0.0000 / 0.0000 and 1.0000.
    assert torch.round(mean, decimals=4).abs().max() == 0
    assert torch.round(var, decimals=4).eq(1).all()


def test_layer_norm_parameters():
    ln = LayerNorm(7)
    assert ln.eps == 1e-5
    assert [name for name, _ in ln.named_parameters()] == ["scale", "shift"]
    assert torch.equal(ln.scale, torch.ones(7)) and torch.equal(ln.shift, torch.zeros(7))


def _random_layer_norm(emb_dim: int) -> LayerNorm:
    ln = LayerNorm(emb_dim)
    with torch.no_grad():
        ln.scale.copy_(torch.randn(emb_dim))
        ln.shift.copy_(torch.randn(emb_dim))
    return ln


def test_layer_norm_matches_torch_layer_norm():
    torch.manual_seed(0)
    ours = _random_layer_norm(16)
    reference = nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        reference.weight.copy_(ours.scale)
        reference.bias.copy_(ours.shift)
    x = torch.randn(3, 4, 16) * 5 + 2
    torch.testing.assert_close(ours(x), reference(x))


def test_layer_norm_matches_explicit_formula_with_biased_variance():
    torch.manual_seed(1)
    ln = _random_layer_norm(8)
    x = torch.randn(2, 3, 8) * 3 - 1
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    expected = ln.scale * (x - mean) / torch.sqrt(var + 1e-5) + ln.shift
    torch.testing.assert_close(ln(x), expected)
    # The unbiased variance gives measurably different numbers on 8 features: the test would notice.
    unbiased = ln.scale * (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + 1e-5) + ln.shift
    assert not torch.allclose(ln(x), unbiased, atol=1e-3)


def test_layer_norm_eps_is_used():
    ln = LayerNorm(4, eps=1.0)
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0]])  # mean 0, biased variance 1
    torch.testing.assert_close(ln(x), x / math.sqrt(2.0))


def test_gelu_matches_torch_tanh_approximation():
    x = torch.linspace(-6, 6, 241)
    torch.testing.assert_close(GELU()(x), F.gelu(x, approximate="tanh"))


def test_gelu_matches_tanh_formula_of_the_book():
    x = torch.linspace(-3, 3, 100)
    expected = 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))
    torch.testing.assert_close(GELU()(x), expected)


def test_gelu_is_the_approximation_not_the_exact_erf_form():
    x = torch.linspace(-3, 3, 100)
    assert (GELU()(x) - F.gelu(x)).abs().max() > 1e-4
    assert GELU()(torch.tensor(0.0)) == 0
    assert -0.2 < GELU()(torch.tensor(-0.5)) < 0  # small negative output, unlike ReLU


def test_feed_forward_keeps_the_shape_of_chapter4_input():
    torch.manual_seed(123)
    ffn = FeedForward(GPT_CONFIG_124M)
    out = ffn(torch.rand(2, 3, 768))
    assert out.shape == (2, 3, 768)


def test_feed_forward_hidden_width_is_four_times_emb_dim():
    ffn = FeedForward({"emb_dim": 12})
    first, act, second = ffn.layers
    assert isinstance(first, nn.Linear) and (first.in_features, first.out_features) == (12, 48)
    assert isinstance(act, GELU)
    assert isinstance(second, nn.Linear) and (second.in_features, second.out_features) == (48, 12)
    assert sum(p.numel() for p in ffn.parameters()) == 12 * 48 + 48 + 48 * 12 + 12


def test_feed_forward_equals_its_three_steps_and_works_token_by_token():
    torch.manual_seed(2)
    ffn = FeedForward({"emb_dim": 8})
    x = torch.randn(2, 5, 8)
    first, _, second = ffn.layers
    expected = second(F.gelu(first(x), approximate="tanh"))
    torch.testing.assert_close(ffn(x), expected)
    # Each token is transformed on its own: changing token 4 leaves tokens 0..3 alone.
    x2 = x.clone()
    x2[:, 4] += 1.0
    torch.testing.assert_close(ffn(x2)[:, :4], ffn(x)[:, :4])


@pytest.mark.parametrize("chunk_size", [3, 128])
def test_linear_cross_entropy_matches_logits_then_cross_entropy(chunk_size):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 8, generator=gen, requires_grad=True)
    weight = torch.randn(50, 8, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (10,), generator=gen)
    targets[2] = -100  # ignored, like padding
    fused = linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    plain = F.cross_entropy(hidden @ weight.T, targets)
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    torch.testing.assert_close(fused, plain)
    for got, expected in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected)


def test_linear_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="targets: expected shape"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(50, 8), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden, weight"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(50, 7), torch.zeros(4, dtype=torch.long))


def test_linear_cross_entropy_refuses_second_order_gradients():
    hidden = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(20, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.randint(0, 20, (6,)))
    with pytest.raises(RuntimeError, match="higher-order gradients are not supported"):
        torch.autograd.grad(loss, hidden, create_graph=True)


def test_feed_forward_second_order_gradients_are_right():
    """Gradient of ||dL/dx||^2 with respect to the weights, checked against finite differences (float64)."""
    torch.manual_seed(0)
    ffn = FeedForward({"emb_dim": 4}).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    params = tuple(ffn.parameters())

    def grad_norm_sq(*weights):
        out = torch.func.functional_call(ffn, dict(zip([n for n, _ in ffn.named_parameters()], weights, strict=True)),
                                         (x,))
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        return gx.pow(2).sum()

    assert torch.autograd.gradcheck(grad_norm_sq, tuple(p.detach().requires_grad_() for p in params))
