"""Every exercise check passes the package's own implementation and names the mistake in a wrong one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt_lib import checks
from minigpt_lib.attention import MultiHeadAttention, explicit_causal_attention
from minigpt_lib.checks import CheckError
from minigpt_lib.data import GPTDataset
from minigpt_lib.generate import filter_logits
from minigpt_lib.layers import GELU, FeedForward, LayerNorm
from minigpt_lib.model import TransformerBlock, count_parameters
from minigpt_lib.tokenizer import get_tokenizer


@pytest.fixture(autouse=True)
def global_rng_untouched():
    """No check may consume or reset the global random state."""
    torch.manual_seed(2024)
    before = torch.random.get_rng_state()
    yield
    assert torch.equal(before, torch.random.get_rng_state())


def passes(check, implementation, capsys, what: str) -> None:
    """Run a check that must succeed and print exactly one ✓ line."""
    assert check(implementation) is None
    assert capsys.readouterr().out == f"✓ {what} matches the reference\n"


# ---------------------------------------------------------------------------------------------------------
# check_close


def test_check_close_reports_shape_dtype_and_first_difference(capsys):
    expected = torch.arange(6.0).reshape(2, 3)
    checks.check_close(expected.clone(), expected, name="logits")
    assert capsys.readouterr().out == "✓ logits matches the reference\n"
    with pytest.raises(CheckError, match=r"logits: expected shape \(2, 3\), got \(3, 2\)"):
        checks.check_close(expected.T, expected, name="logits")
    with pytest.raises(CheckError, match="expected dtype torch.float32, got torch.float64"):
        checks.check_close(expected.double(), expected)
    wrong = expected.clone()
    wrong[1, 2] = 9.0
    with pytest.raises(CheckError, match=r"1 of 6 values differ; first at index \[1, 2\]: expected 5, got 9"):
        checks.check_close(wrong, expected)
    with pytest.raises(CheckError, match="expected a torch.Tensor, got list"):
        checks.check_close([0.0], expected)
    nan = expected.clone()
    nan[0, 1] = float("nan")
    with pytest.raises(CheckError, match=r"1 NaN value\(s\), first at index \[0, 1\]"):
        checks.check_close(nan, expected)


# ---------------------------------------------------------------------------------------------------------
# Tokens and windows


def test_check_token_ids(capsys):
    passes(checks.check_token_ids, get_tokenizer().encode, capsys, "GPT-2 tokenizer")
    with pytest.raises(CheckError, match="character-level tokenizer"):
        checks.check_token_ids(lambda text: [ord(c) for c in text])
    with pytest.raises(CheckError, match=r"first difference at position 4: expected None = end of text, got 0"):
        checks.check_token_ids(lambda text: get_tokenizer().encode(text) + [0])


def reference_windows(ids, max_length, stride):
    dataset = GPTDataset(ids, max_length=max_length, stride=stride)
    inputs, targets = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(inputs), torch.stack(targets)


def windows_with(start_stop=0, shift=1, one_apart=False):
    """Windows built with a deliberate mistake: wrong last start, wrong target shift, or starts 1 apart."""

    def make_windows(ids, max_length, stride):
        starts = range(0, len(ids) - max_length + start_stop, stride)
        if one_apart:
            starts = range(len(starts))
        inputs = [ids[s : s + max_length] for s in starts]
        targets = [ids[s + shift : s + shift + max_length] for s in starts]
        return torch.tensor(inputs), torch.tensor(targets)

    return make_windows


def test_check_sliding_windows(capsys):
    passes(checks.check_sliding_windows, reference_windows, capsys, "sliding-window function")
    with pytest.raises(CheckError, match=r"expected 5 windows .* got 4\n  hint: one window short"):
        checks.check_sliding_windows(windows_with(start_stop=-1))
    with pytest.raises(CheckError, match="targets equal the inputs"):
        checks.check_sliding_windows(windows_with(shift=0))
    with pytest.raises(CheckError, match="windows start one token apart"):
        checks.check_sliding_windows(windows_with(one_apart=True))
    with pytest.raises(CheckError, match=r"make_windows\(ids of length 21, max_length=4, stride=1\) raised ValueError"):
        checks.check_sliding_windows(windows_with(start_stop=1))  # the extra window is ragged: torch.tensor fails


# ---------------------------------------------------------------------------------------------------------
# Layer norm, GELU, feed-forward, block


class UnbiasedLayerNorm(LayerNorm):
    def forward(self, x):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)  # unbiased by default
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class EpsOutsideLayerNorm(LayerNorm):
    def forward(self, x):
        mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / (std + self.eps) + self.shift


class TorchNamesLayerNorm(nn.LayerNorm):  # parameters called weight/bias
    pass


def test_check_layer_norm(capsys):
    passes(checks.check_layer_norm, LayerNorm, capsys, "LayerNorm")
    with pytest.raises(CheckError, match="looks like you used the unbiased variance"):
        checks.check_layer_norm(UnbiasedLayerNorm)
    with pytest.raises(CheckError, match="variance ~1e-6.*\n  hint: eps is added outside the square root"):
        checks.check_layer_norm(EpsOutsideLayerNorm)
    with pytest.raises(CheckError, match=r"missing: \['scale', 'shift'\]\n  unexpected: \['weight', 'bias'\]"):
        checks.check_layer_norm(TorchNamesLayerNorm)


def test_check_gelu(capsys):
    passes(checks.check_gelu, GELU, capsys, "GELU")
    passes(checks.check_gelu, GELU(), capsys, "GELU")
    passes(checks.check_gelu, lambda x: F.gelu(x, approximate="tanh"), capsys, "GELU")
    with pytest.raises(CheckError, match=r"exact \(erf\) GELU"):
        checks.check_gelu(F.gelu)
    with pytest.raises(CheckError, match="this is ReLU"):
        checks.check_gelu(nn.ReLU)
    with pytest.raises(CheckError, match="factor 0.5 is missing"):
        checks.check_gelu(lambda x: x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))))


class ReluFeedForward(FeedForward):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.layers[1] = nn.ReLU()


class NarrowFeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["emb_dim"]
        self.layers = nn.Sequential(nn.Linear(d, 2 * d), GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        return self.layers(x)


def test_check_feed_forward(capsys):
    passes(checks.check_feed_forward, FeedForward, capsys, "FeedForward")
    with pytest.raises(CheckError, match="looks like ReLU"):
        checks.check_feed_forward(ReluFeedForward)
    with pytest.raises(CheckError, match=r"parameter layers.0.weight has shape \(16, 8\), expected \(32, 8\)"):
        checks.check_feed_forward(NarrowFeedForward)


class PostNormBlock(TransformerBlock):
    def forward(self, x):
        x = self.norm1(x + self.drop_shortcut(self.att(x)))
        return self.norm2(x + self.drop_shortcut(self.ff(x)))


class NoShortcutBlock(TransformerBlock):
    def forward(self, x):
        return self.ff(self.norm2(self.att(self.norm1(x))))


class UnnamedDropoutBlock(TransformerBlock):
    def __init__(self, cfg):
        super().__init__(cfg)
        del self.drop_shortcut
        self.dropout = nn.Dropout(cfg["drop_rate"])


def test_check_shortcut_block(capsys):
    passes(checks.check_shortcut_block, TransformerBlock, capsys, "TransformerBlock")
    with pytest.raises(CheckError, match="hint: post-norm"):
        checks.check_shortcut_block(PostNormBlock)
    with pytest.raises(CheckError, match="hint: no shortcut connections"):
        checks.check_shortcut_block(NoShortcutBlock)
    with pytest.raises(CheckError, match=r"missing attribute\(s\) \['drop_shortcut'\]"):
        checks.check_shortcut_block(UnnamedDropoutBlock)


# ---------------------------------------------------------------------------------------------------------
# Attention


def causal_attention(queries, keys, values, diagonal=1, mask=True, scale=True, mask_after_softmax=False):
    tokens = queries.shape[-2]
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=diagonal)
    scores = queries @ keys.transpose(-2, -1) / (math.sqrt(keys.shape[-1]) if scale else 1.0)
    if mask and not mask_after_softmax:
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask_after_softmax:
        weights = weights.masked_fill(future, 0.0)
    return weights @ values


def test_check_causal_attention(capsys):
    reference = lambda q, k, v: explicit_causal_attention(q, k, v, torch.triu(torch.ones(6, 6).bool(), 1))[0]  # noqa: E731
    passes(checks.check_causal_attention, reference, capsys, "causal attention")
    passes(checks.check_causal_attention, causal_attention, capsys, "causal attention")
    with pytest.raises(CheckError, match="weights are not zero above the diagonal: is the causal mask applied"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, mask=False))
    with pytest.raises(CheckError, match="don't sum to 1\n  hint: the mask was applied after softmax"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, mask_after_softmax=True))
    with pytest.raises(CheckError, match=r"hint: the scores are not divided by sqrt\(head_dim\)"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, scale=False))
    with pytest.raises(CheckError, match="NaN in the output.*diagonal=1"):
        checks.check_causal_attention(lambda q, k, v: causal_attention(q, k, v, diagonal=0))


class UnmaskedAttention(MultiHeadAttention):
    def forward(self, x):
        self.mask.zero_()
        return super().forward(x, return_weights=True)[0]


class ReshapedHeadsAttention(MultiHeadAttention):
    def _split_heads(self, x):
        return x.reshape(x.shape[0], self.num_heads, x.shape[1], self.head_dim)


class FusedQKVAttention(MultiHeadAttention):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        del self.W_query, self.W_key, self.W_value
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)


def test_check_multi_head_attention(capsys):
    passes(checks.check_multi_head_attention, MultiHeadAttention, capsys, "MultiHeadAttention")
    with pytest.raises(CheckError, match=r"\(qkv_bias=False\).*\n  hint: no causal mask"):
        checks.check_multi_head_attention(UnmaskedAttention)
    with pytest.raises(CheckError, match="hint: heads are split with a plain reshape"):
        checks.check_multi_head_attention(ReshapedHeadsAttention)
    with pytest.raises(CheckError, match=r"missing: \['W_query.weight', 'W_key.weight', 'W_value.weight'\]"):
        checks.check_multi_head_attention(FusedQKVAttention)


# ---------------------------------------------------------------------------------------------------------
# Parameters, loss, schedule, sampling


def test_check_count_parameters(capsys):
    passes(checks.check_count_parameters, count_parameters, capsys, "parameter count")
    with pytest.raises(CheckError, match="number of parameter tensors"):
        checks.check_count_parameters(lambda model: len(list(model.parameters())))
    with pytest.raises(CheckError, match="(?s)tie_weights=True.*counted twice"):
        checks.check_count_parameters(lambda model: sum(t.numel() for t in model.state_dict().values()))
    with pytest.raises(CheckError, match="expected an int, got float"):
        checks.check_count_parameters(lambda model: float(count_parameters(model)))


def test_check_cross_entropy(capsys):
    reference = lambda logits, targets: F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # noqa: E731
    passes(checks.check_cross_entropy, reference, capsys, "cross-entropy")
    with pytest.raises(CheckError, match="the sum over tokens"):
        checks.check_cross_entropy(lambda lg, t: F.cross_entropy(lg.flatten(0, 1), t.flatten(), reduction="sum"))
    with pytest.raises(CheckError, match="perplexity"):
        checks.check_cross_entropy(lambda lg, t: reference(lg, t).exp())
    with pytest.raises(CheckError, match=r"expected a scalar \(shape \(\)\), got shape \(1,\)"):
        checks.check_cross_entropy(lambda lg, t: reference(lg, t).reshape(1))


def test_check_lr_schedule(capsys):
    from minigpt_lib.train import lr_at_step

    passes(checks.check_lr_schedule, lr_at_step, capsys, "learning-rate schedule")

    def off_by_one(step, total_steps, peak_lr, warmup_steps=0, min_lr=0.0):
        return (
            peak_lr * step / warmup_steps if step < warmup_steps else lr_at_step(step, total_steps, peak_lr, 0, min_lr)
        )

    def linear(step, total_steps, peak_lr, warmup_steps=0, min_lr=0.0):
        if step < warmup_steps:
            return peak_lr * (step + 1) / warmup_steps
        return min_lr + (peak_lr - min_lr) * max(0.0, 1 - (step - warmup_steps) / (total_steps - warmup_steps))

    with pytest.raises(CheckError, match=r"lr_fn\(0, total_steps=40.*expected learning rate 0.000125, got 0 "):
        checks.check_lr_schedule(off_by_one)
    with pytest.raises(CheckError, match="hint: the decay is linear"):
        checks.check_lr_schedule(linear)


def test_check_temperature(capsys):
    passes(checks.check_temperature, lambda logits, t: torch.softmax(logits / t, dim=-1), capsys, "temperature scaling")
    with pytest.raises(CheckError, match="temperature applied as multiplication"):
        checks.check_temperature(lambda logits, t: torch.softmax(logits * t, dim=-1))
    with pytest.raises(CheckError, match="probabilities don't sum to 1.*\n  hint: these are the scaled logits"):
        checks.check_temperature(lambda logits, t: logits / t)


def top_k_keeping(extra):
    def filter_fn(logits, k):
        kth = torch.topk(logits, min(k + extra, logits.shape[-1]), dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    return filter_fn


def test_check_top_k(capsys):
    passes(checks.check_top_k, lambda logits, k: filter_logits(logits, top_k=k), capsys, "top-k filtering")
    with pytest.raises(CheckError, match=r"k=1\): row 0 keeps 2 tokens, expected 1\n  hint: keeps k\+1 tokens"):
        checks.check_top_k(top_k_keeping(extra=1))
    with pytest.raises(CheckError, match="nothing was set to -inf"):
        checks.check_top_k(lambda logits, k: filter_logits(logits, top_k=k).nan_to_num(neginf=0.0))
    with pytest.raises(CheckError, match="the kept logits changed"):
        checks.check_top_k(lambda logits, k: filter_logits(logits, top_k=k) * 2)


def test_check_top_p(capsys):
    passes(checks.check_top_p, lambda logits, p: filter_logits(logits, top_p=p), capsys, "top-p filtering")

    def drops_crossing_token(logits, p):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        drop = torch.softmax(sorted_logits, dim=-1).cumsum(-1) > p
        drop[:, 0] = False
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    with pytest.raises(CheckError, match=r"p=0.6\): row 0 keeps 1 tokens, expected 2\n  hint: one token too few"):
        checks.check_top_p(drops_crossing_token)
    with pytest.raises(CheckError, match="come back sorted"):
        checks.check_top_p(lambda logits, p: torch.sort(filter_logits(logits, top_p=p), descending=True).values)


def test_crash_in_learner_code_names_the_input():
    def broken(x):
        raise RuntimeError("boom")

    with pytest.raises(CheckError, match=r"gelu\(x\) raised RuntimeError: boom"):
        checks.check_gelu(broken)
