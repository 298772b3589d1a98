"""The oneDNN linear layer: same values and gradients as F.linear, a switch to turn it off, and its fallbacks."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt_lib import matmul
from minigpt_lib.layers import linear_cross_entropy
from minigpt_lib.matmul import Linear, linear, onednn_enabled, use_onednn

needs_onednn = pytest.mark.skipif(not matmul._available, reason="oneDNN linear kernel not available on this CPU")


@pytest.fixture(params=[True, False], ids=["onednn", "torch"])
def backend(request):
    """Run a test with the oneDNN path on and off, then restore the setting."""
    if request.param and not matmul._available:
        pytest.skip("oneDNN linear kernel not available on this CPU")
    previous = use_onednn(request.param)
    yield request.param
    use_onednn(previous)


@pytest.mark.parametrize("shape", [(7,), (5, 7), (2, 3, 7)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_f_linear_values_and_gradients(backend, shape, with_bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    weight = torch.randn(4, 7, generator=gen, requires_grad=True)
    bias = torch.randn(4, generator=gen, requires_grad=True) if with_bias else None
    inputs = (x, weight) + ((bias,) if with_bias else ())
    out = linear(x, weight, bias)
    expected = F.linear(x, weight, bias)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)
    upstream = torch.randn(expected.shape, generator=gen)
    for got, want in zip(
        torch.autograd.grad(out, inputs, upstream), torch.autograd.grad(expected, inputs, upstream), strict=True
    ):
        torch.testing.assert_close(got, want)


def test_linear_only_computes_the_gradients_asked_for(backend):
    x = torch.randn(6, 5)  # no gradient wanted for the input, as for the first layer's token ids
    layer = Linear(5, 3)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.ones(3, 6) @ x)
    torch.testing.assert_close(layer.bias.grad, torch.full((3,), 6.0))


def test_linear_takes_non_contiguous_inputs(backend):
    x = torch.randn(7, 4, 3).transpose(0, 2)  # (3, 4, 7), not contiguous
    weight = torch.randn(5, 7)
    torch.testing.assert_close(linear(x, weight), F.linear(x, weight))


def test_the_start_up_probe_leaves_torchs_random_state_alone():
    state = torch.get_rng_state()
    matmul._onednn_works()
    assert torch.equal(state, torch.get_rng_state())


def test_linear_module_is_an_nn_linear_with_the_same_parameters():
    layer = Linear(4, 3)
    assert isinstance(layer, nn.Linear)
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_turned_off_it_is_exactly_f_linear():
    previous = use_onednn(False)
    try:
        assert not onednn_enabled()
        x, weight, bias = torch.randn(9, 16), torch.randn(8, 16), torch.randn(8)
        assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))
    finally:
        use_onednn(previous)


@needs_onednn
def test_switch_returns_the_previous_setting_and_rejects_non_booleans():
    previous = use_onednn(True)
    try:
        assert use_onednn(False) is True
        assert use_onednn(True) is False
        assert onednn_enabled()
        with pytest.raises(ValueError, match="enabled: expected True or False, got 'yes'"):
            use_onednn("yes")
        assert onednn_enabled()  # a bad call changes nothing
    finally:
        use_onednn(previous)


@needs_onednn
def test_other_dtypes_and_autocast_fall_back_to_pytorch():
    previous = use_onednn(True)
    try:
        x, weight = torch.randn(4, 8), torch.randn(3, 8)
        assert torch.equal(linear(x.double(), weight.double()), F.linear(x.double(), weight.double()))
        assert torch.equal(linear(x.bfloat16(), weight.bfloat16()), F.linear(x.bfloat16(), weight.bfloat16()))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = linear(x, weight)
            assert out.dtype == torch.bfloat16
            assert torch.equal(out, F.linear(x, weight))
    finally:
        use_onednn(previous)


def test_wrong_shapes_get_pytorchs_error_naming_the_shapes(backend):
    with pytest.raises(RuntimeError, match=r"shapes cannot be multiplied \(5x7 and 6x4\)"):
        linear(torch.randn(5, 7), torch.randn(4, 6))
    with pytest.raises(RuntimeError, match=r"expanded size of the tensor \(4\) must match the existing size \(3\)"):
        linear(torch.randn(5, 6), torch.randn(4, 6), torch.randn(3))


@pytest.mark.parametrize("chunk_size", [3, 512])
def test_linear_cross_entropy_agrees_with_plain_loss_on_both_backends(backend, chunk_size):
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(10, 8, generator=gen, requires_grad=True)
    weight = torch.randn(50, 8, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (10,), generator=gen)
    targets[4] = -100
    fused = linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    plain = F.cross_entropy(hidden @ weight.T, targets)
    torch.testing.assert_close(fused, plain)
    for got, want in zip(
        torch.autograd.grad(3 * fused, (hidden, weight)), torch.autograd.grad(3 * plain, (hidden, weight)), strict=True
    ):
        torch.testing.assert_close(got, want)


@needs_onednn
def test_gpt_model_trains_and_generates_alike_with_and_without_onednn():
    from minigpt_lib import GPT_CONFIG_124M, GPTModel, generate

    cfg = {**GPT_CONFIG_124M, "vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2}
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    assert all(type(m) is Linear for m in model.modules() if isinstance(m, nn.Linear))
    idx = torch.randint(0, 97, (2, 12))
    results = {}
    for on in (True, False):
        previous = use_onednn(on)
        try:
            model.zero_grad()
            loss = model(idx, targets=idx)
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters()]
            tokens = generate(model, idx[:, :3], 10)
            results[on] = (model(idx), loss, grads, tokens)
        finally:
            use_onednn(previous)
    (logits, loss, grads, tokens), (logits_off, loss_off, grads_off, tokens_off) = results[True], results[False]
    torch.testing.assert_close(logits, logits_off)
    torch.testing.assert_close(loss, loss_off)
    for got, want in zip(grads, grads_off, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.equal(tokens, tokens_off)
