"""The Llama model: each new piece against its definition, the whole model against transformers, cache == no cache."""

from __future__ import annotations

import math

import pytest
import torch
import transformers

from minigpt_lib.generate import generate
from minigpt_lib.llama import (
    SMOLLM2_135M_CONFIG,
    GroupedQueryAttention,
    LlamaModel,
    RMSNorm,
    SwiGLUFeedForward,
    apply_rope,
    rope_angles,
    validate_llama_config,
)
from minigpt_lib.pretrained import _llama_file_names

TINY = {
    **SMOLLM2_135M_CONFIG,
    "vocab_size": 97,
    "context_length": 40,
    "emb_dim": 48,
    "n_heads": 6,
    "n_kv_heads": 2,
    "n_layers": 3,
    "hidden_dim": 80,
}


def tiny_hf_model(cfg: dict, seed: int = 0) -> transformers.LlamaForCausalLM:
    """A transformers Llama of ``cfg``'s sizes with seeded weights large enough to give distinct logits."""
    config = transformers.LlamaConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["emb_dim"],
        intermediate_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_heads"],
        max_position_embeddings=cfg["context_length"],
        rms_norm_eps=cfg["norm_eps"],
        rope_theta=cfg["rope_base"],
        tie_word_embeddings=cfg["tie_weights"],
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                noise = torch.randn(p.shape)
                p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.2 * noise)
    return model


def ours_from_hf(hf_model: transformers.LlamaForCausalLM, cfg: dict) -> LlamaModel:
    hf_state = hf_model.state_dict()
    model = LlamaModel(cfg).eval()
    state = {ours: hf_state[theirs] for ours, theirs in _llama_file_names(cfg, 1).items()}
    if cfg["tie_weights"]:
        state["out_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model


@pytest.fixture(scope="module")
def pair() -> tuple[LlamaModel, transformers.LlamaForCausalLM]:
    hf_model = tiny_hf_model(TINY)
    return ours_from_hf(hf_model, TINY), hf_model


def ids(batch: int, tokens: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (batch, tokens), generator=torch.Generator().manual_seed(seed))


def test_config_validator_rejects_typos_unknown_keys_and_bad_values():
    assert validate_llama_config(SMOLLM2_135M_CONFIG) == SMOLLM2_135M_CONFIG
    with pytest.raises(ValueError, match=r"missing key\(s\) \['tie_weights'\], unknown key\(s\) \['tie_weigths'\]"):
        validate_llama_config({**{k: v for k, v in TINY.items() if k != "tie_weights"}, "tie_weigths": True})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['drop_rate'\]"):
        validate_llama_config({**TINY, "drop_rate": 0.1})
    with pytest.raises(ValueError, match=r"cfg\['n_kv_heads'\]: expected a divisor of n_heads=6"):
        validate_llama_config({**TINY, "n_kv_heads": 4})
    with pytest.raises(ValueError, match=r"cfg\['emb_dim'\].*even head width"):
        validate_llama_config({**TINY, "emb_dim": 42})
    with pytest.raises(ValueError, match=r"cfg\['rope_base'\]: expected a positive finite number, got nan"):
        validate_llama_config({**TINY, "rope_base": math.nan})
    with pytest.raises(ValueError, match=r"cfg\['n_layers'\]: expected a positive integer, got True"):
        validate_llama_config({**TINY, "n_layers": True})
    with pytest.raises(TypeError, match="cfg: expected a dict"):
        LlamaModel([("emb_dim", 8)])


def test_rms_norm_follows_its_formula_and_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16) * 3 + 1
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.scale.copy_(torch.rand(16) + 0.5)
        expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.scale
        torch.testing.assert_close(norm(x), expected)
        reference = torch.nn.RMSNorm(16, eps=1e-5)
        reference.weight.copy_(norm.scale)
        torch.testing.assert_close(norm(x), reference(x))
    assert [name for name, _ in norm.named_parameters()] == ["scale"]  # no shift


def test_rope_makes_scores_depend_only_on_the_distance():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    cos, sin = rope_angles(8, 64, base=100.0)

    def score(m: int, n: int) -> float:
        rotated_q = apply_rope(q, cos[m : m + 1], sin[m : m + 1])
        return (rotated_q * apply_rope(k, cos[n : n + 1], sin[n : n + 1])).sum().item()

    assert score(5, 2) == pytest.approx(score(45, 42), abs=1e-5)
    assert score(10, 10) == pytest.approx(score(0, 0), abs=1e-5) == pytest.approx((q * k).sum().item(), abs=1e-5)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # the distance does matter
    rotated = apply_rope(q.expand(1, 1, 64, 8), cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 64))  # a rotation keeps lengths


def test_swiglu_is_down_of_silu_gate_times_up_with_three_matrices():
    torch.manual_seed(0)
    ff = SwiGLUFeedForward(12, 20)
    x = torch.randn(2, 3, 12)
    gate, up = x @ ff.gate.weight.T, x @ ff.up.weight.T
    torch.testing.assert_close(ff(x), (gate * torch.sigmoid(gate) * up) @ ff.down.weight.T)
    assert sum(p.numel() for p in ff.parameters()) == 3 * 12 * 20


def test_grouped_query_attention_equals_multi_head_attention_with_repeated_key_value_heads():
    torch.manual_seed(0)
    gqa = GroupedQueryAttention(24, n_heads=6, n_kv_heads=2)
    mha = GroupedQueryAttention(24, n_heads=6, n_kv_heads=6)
    with torch.no_grad():
        mha.W_query.weight.copy_(gqa.W_query.weight)
        mha.out_proj.weight.copy_(gqa.out_proj.weight)
        # Key/value head j serves query heads 3j, 3j+1, 3j+2: repeat its rows for each of them.
        for name in ("W_key", "W_value"):
            heads = getattr(gqa, name).weight.view(2, 4, 24).repeat_interleave(3, dim=0)
            getattr(mha, name).weight.copy_(heads.reshape(24, 24))
    x = torch.randn(2, 7, 24)
    cos, sin = rope_angles(4, 7)
    torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin))
    assert gqa.W_key.weight.shape == (8, 24)  # a third of the key parameters


def test_logits_match_transformers_llama(pair):
    model, hf_model = pair
    x = ids(2, TINY["context_length"])
    with torch.no_grad():
        expected, got = hf_model(x).logits, model(x)
    assert got.shape == (2, 40, 97)
    assert (got - expected).abs().max().item() <= 1e-5
    assert expected.std() > 0.5
    assert model.out_head.weight is model.tok_emb.weight
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


def test_untied_head_and_plain_multi_head_attention_match_transformers():
    cfg = {**TINY, "n_kv_heads": 6, "tie_weights": False}
    hf_model = tiny_hf_model(cfg, seed=3)
    model = ours_from_hf(hf_model, cfg)
    x = ids(1, 17, seed=4)
    with torch.no_grad():
        assert (model(x) - hf_model(x).logits).abs().max().item() <= 1e-5
    assert model.out_head.weight is not model.tok_emb.weight


def test_kv_cache_gives_the_same_logits_as_no_cache(pair):
    model, _ = pair
    x = ids(2, 20, seed=5)
    with torch.no_grad():
        full = model(x)
        cache = model.new_kv_cache(max_len=20)
        steps = [model(x[:, :7], kv_cache=cache)]  # a prompt, then one token at a time, then two at once
        steps += [model(x[:, i : i + 1], kv_cache=cache) for i in range(7, 18)]
        steps.append(model(x[:, 18:], kv_cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.layers[0].keys.shape == (2, TINY["n_kv_heads"], 20, 8)  # the cache holds the kv heads only


def test_explicit_attention_path_equals_the_fused_one(pair):
    model, _ = pair
    x = ids(1, 12, seed=6)
    with torch.no_grad():
        fast = model(x)
        for block in model.trf_blocks:
            block.att.use_fast = False
        try:
            slow = model(x)
            cache = model.new_kv_cache()
            slow_cached = torch.cat([model(x[:, :5], kv_cache=cache), model(x[:, 5:], kv_cache=cache)], dim=1)
        finally:
            for block in model.trf_blocks:
                block.att.use_fast = True
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow_cached, fast, atol=1e-5, rtol=1e-5)


def test_generate_drives_the_llama_model_with_and_without_cache(pair):
    model, _ = pair
    prompt = ids(2, 6, seed=7)
    cached = generate(model, prompt, 50, use_cache=True)  # past the 40-token context: the window slides
    uncached = generate(model, prompt, 50, use_cache=False)
    assert cached.shape == (2, 56)
    assert torch.equal(cached, uncached)
    gen = [torch.Generator().manual_seed(0) for _ in range(2)]
    sampled = [generate(model, prompt, 10, temperature=1.0, top_k=20, generator=g) for g in gen]
    assert torch.equal(*sampled)


def test_attention_weights_are_causal_distributions(pair):
    model, _ = pair
    weights = model.attention_weights(ids(1, 9, seed=8))
    assert weights.shape == (TINY["n_layers"], 1, TINY["n_heads"], 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 1, 6, 9))
    assert torch.all(weights.triu(1) == 0)


def test_bad_inputs_get_clear_errors(pair):
    model, _ = pair
    with pytest.raises(ValueError, match=r"at most context_length=40 tokens fit, got 0 cached \+ 41 new"):
        model(ids(1, 41))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 96\], got 0 to 97"):
        model(torch.tensor([[0, 97]]))
    with pytest.raises(TypeError, match="in_idx: expected an integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"expected shape \(batch, tokens\)"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="kv_cache: expected a cache from this model"):
        model(ids(1, 3), kv_cache=LlamaModel({**TINY, "n_layers": 1}).new_kv_cache())
    cache = model.new_kv_cache(max_len=4)
    with pytest.raises(ValueError, match="kv_cache: holds at most 4 tokens"):
        model(ids(1, 5), kv_cache=cache)
    with pytest.raises(ValueError, match="max_len: expected None or a positive integer, got 0"):
        model.new_kv_cache(0)
    assert model.new_kv_cache(1000).layers[0].max_len == 40
