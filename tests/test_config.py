"""Tests for minigpt_lib.config: the GPT-2 presets and validate_config's error messages."""

import re

import pytest

from minigpt_lib.config import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPT_CONFIG_SMALL,
    PRESETS,
    check_known_keys,
    validate_config,
)


def test_124m_config_is_exactly_the_one_chapter2_prints():
    assert GPT_CONFIG_124M == {
        "vocab_size": 50257,
        "context_length": 1024,
        "emb_dim": 768,
        "n_heads": 12,
        "n_layers": 12,
        "drop_rate": 0.1,
        "qkv_bias": False,
    }
    assert list(GPT_CONFIG_124M) == [
        "vocab_size",
        "context_length",
        "emb_dim",
        "n_heads",
        "n_layers",
        "drop_rate",
        "qkv_bias",
    ]


@pytest.mark.parametrize(
    ("cfg", "emb_dim", "n_layers", "n_heads"),
    [(GPT_CONFIG_355M, 1024, 24, 16), (GPT_CONFIG_774M, 1280, 36, 20), (GPT_CONFIG_1558M, 1600, 48, 25)],
)
def test_larger_presets_change_only_width_depth_and_heads(cfg, emb_dim, n_layers, n_heads):
    assert cfg == {**GPT_CONFIG_124M, "emb_dim": emb_dim, "n_layers": n_layers, "n_heads": n_heads}


def test_small_config():
    assert GPT_CONFIG_SMALL == {
        "vocab_size": 50257,
        "context_length": 128,
        "emb_dim": 128,
        "n_heads": 4,
        "n_layers": 4,
        "drop_rate": 0.1,
        "qkv_bias": False,
    }


def test_presets_by_name():
    assert set(PRESETS) == {"124M", "355M", "774M", "1558M", "small"}
    assert PRESETS["124M"] is GPT_CONFIG_124M
    assert PRESETS["355M"] is GPT_CONFIG_355M
    assert PRESETS["774M"] is GPT_CONFIG_774M
    assert PRESETS["1558M"] is GPT_CONFIG_1558M
    assert PRESETS["small"] is GPT_CONFIG_SMALL


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name):
    cfg = validate_config(PRESETS[name])
    assert cfg["tie_weights"] is False  # untied unless asked, as the chapters build the model
    if name != "small":  # every GPT-2 size has attention heads 64 wide (Radford et al., 2019)
        assert cfg["emb_dim"] // cfg["n_heads"] == 64


def test_validate_returns_a_copy_and_keeps_tie_weights():
    original = dict(GPT_CONFIG_124M)
    cfg = validate_config(original)
    assert cfg is not original
    assert original == GPT_CONFIG_124M  # the input is not modified
    assert cfg["tie_weights"] is False
    assert validate_config({**GPT_CONFIG_124M, "tie_weights": True})["tie_weights"] is True


@pytest.mark.parametrize(
    "key", ["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias"]
)
def test_missing_key(key):
    cfg = {k: v for k, v in GPT_CONFIG_124M.items() if k != key}
    with pytest.raises(ValueError, match=rf"missing key\(s\) \['{key}'\]"):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("vocab_size", 0),
        ("context_length", -1),
        ("emb_dim", 0),
        ("n_heads", -4),
        ("n_layers", 0),
        ("n_layers", 2.0),
        ("emb_dim", "768"),
        ("n_layers", True),
    ],
)
def test_sizes_must_be_positive_integers(key, value):
    message = rf"cfg\['{key}'\]: expected a positive integer, got " + re.escape(repr(value))
    with pytest.raises(ValueError, match=message):
        validate_config({**GPT_CONFIG_124M, key: value})


def test_emb_dim_must_divide_into_heads():
    with pytest.raises(ValueError, match=r"cfg\['emb_dim'\]: expected a multiple of n_heads=12.*got 770"):
        validate_config({**GPT_CONFIG_124M, "emb_dim": 770})


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, "0.1", None, True])
def test_drop_rate_must_lie_in_zero_one(value):
    message = r"cfg\['drop_rate'\]: expected a number in \[0, 1\), got " + re.escape(repr(value))
    with pytest.raises(ValueError, match=message):
        validate_config({**GPT_CONFIG_124M, "drop_rate": value})


def test_drop_rate_bounds_accepted():
    assert validate_config({**GPT_CONFIG_124M, "drop_rate": 0})["drop_rate"] == 0
    assert validate_config({**GPT_CONFIG_124M, "drop_rate": 0.99})["drop_rate"] == 0.99


@pytest.mark.parametrize(("key", "value"), [("qkv_bias", 0), ("qkv_bias", "False"), ("tie_weights", 1)])
def test_flags_must_be_bool(key, value):
    message = rf"cfg\['{key}'\]: expected True or False, got " + re.escape(repr(value))
    with pytest.raises(ValueError, match=message):
        validate_config({**GPT_CONFIG_124M, key: value})


def test_config_must_be_a_dict():
    with pytest.raises(TypeError, match="cfg: expected a dict.*got list"):
        validate_config(list(GPT_CONFIG_124M.items()))


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("tie_weigths", "tie_weights"), ("dropout", "drop_rate"), ("n_layer", "n_layers"), ("vocab", "vocab_size")],
)
def test_misspelt_keys_are_refused_with_the_close_key(key, suggestion):
    with pytest.raises(ValueError, match=rf"cfg: unknown key '{key}'; did you mean '{suggestion}'\?"):
        validate_config({**GPT_CONFIG_124M, key: 1})


def test_unknown_key_without_a_close_one_lists_the_known_keys():
    with pytest.raises(ValueError) as info:
        validate_config({**GPT_CONFIG_124M, "learning_rate": 3e-4})
    message = str(info.value)
    assert "unknown key 'learning_rate'" in message and "did you mean" not in message
    known = "vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias, tie_weights"
    assert f"known keys: {known}" in message


def test_a_misspelling_of_a_required_key_is_named_before_the_missing_key():
    cfg = {k: v for k, v in GPT_CONFIG_124M.items() if k != "drop_rate"}
    with pytest.raises(ValueError, match="unknown key 'dropout'; did you mean 'drop_rate'"):
        validate_config({**cfg, "dropout": 0.1})


def test_misspelt_keys_fail_the_model_too():
    from minigpt_lib.model import GPTModel

    with pytest.raises(ValueError, match="did you mean 'tie_weights'"):
        GPTModel({**GPT_CONFIG_SMALL, "n_layers": 1, "tie_weigths": True})


def test_check_known_keys_is_a_shared_helper():
    check_known_keys("opts", {"a": 1}, ["a", "b"])
    with pytest.raises(ValueError, match=r"opts: unknown key 'bb'; did you mean 'b'\? known keys: a, b"):
        check_known_keys("opts", {"a": 1, "bb": 2}, ["a", "b"])
    with pytest.raises(ValueError, match=r"opts: unknown key 3; known keys: a"):
        check_known_keys("opts", {3: 1}, ["a"])
