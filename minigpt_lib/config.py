"""Model configurations: the GPT-2 sizes, a small CPU-friendly one, and the validator every model calls."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

#: The smallest GPT-2 (Radford et al., 2019), exactly as chapter 2 prints it.
GPT_CONFIG_124M: dict[str, Any] = {
    "vocab_size": 50257,  # size of the GPT-2 BPE vocabulary
    "context_length": 1024,  # longest input the position embeddings cover
    "emb_dim": 768,  # width of every token vector
    "n_heads": 12,  # attention heads per block
    "n_layers": 12,  # transformer blocks
    "drop_rate": 0.1,  # dropout probability
    "qkv_bias": False,  # bias in the query/key/value projections
}

#: GPT-2 medium, large and XL differ from 124M only in width, depth and head count.
GPT_CONFIG_355M: dict[str, Any] = {**GPT_CONFIG_124M, "emb_dim": 1024, "n_layers": 24, "n_heads": 16}
GPT_CONFIG_774M: dict[str, Any] = {**GPT_CONFIG_124M, "emb_dim": 1280, "n_layers": 36, "n_heads": 20}
GPT_CONFIG_1558M: dict[str, Any] = {**GPT_CONFIG_124M, "emb_dim": 1600, "n_layers": 48, "n_heads": 25}

#: A model that trains on the sample corpus in well under a minute on a laptop CPU.
GPT_CONFIG_SMALL: dict[str, Any] = {
    **GPT_CONFIG_124M,
    "context_length": 128,
    "emb_dim": 128,
    "n_heads": 4,
    "n_layers": 4,
}

#: Presets by name, as the command line accepts them (``--preset 124M``).
PRESETS: dict[str, dict[str, Any]] = {
    "124M": GPT_CONFIG_124M,
    "355M": GPT_CONFIG_355M,
    "774M": GPT_CONFIG_774M,
    "1558M": GPT_CONFIG_1558M,
    "small": GPT_CONFIG_SMALL,
}

_POSITIVE_INTS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
_BOOLS = ("qkv_bias", "tie_weights")
REQUIRED_KEYS = (*_POSITIVE_INTS, "drop_rate", "qkv_bias")
#: Every key a GPT config may hold: the required ones and the optional ``tie_weights``.
KNOWN_KEYS = (*REQUIRED_KEYS, "tie_weights")


def check_known_keys(name: str, mapping: dict[str, Any], known: Iterable[str]) -> None:
    """Raise naming the first key of ``mapping`` that is not in ``known``, with the closest known key.

    A misspelt setting (``tie_weigths``) would otherwise be ignored and the default silently used.
    """
    known = list(known)
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{name}: unknown key {key!r}; {hint}known keys: {', '.join(known)}")


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a model configuration and return a copy with defaults filled in.

    Every model calls this, so a typo fails at construction with the key, the value and what was expected.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg: expected a dict of model settings, got {type(cfg).__name__}")
    check_known_keys("cfg", cfg, KNOWN_KEYS)
    missing = [key for key in REQUIRED_KEYS if key not in cfg]
    if missing:
        raise ValueError(f"cfg: missing key(s) {missing}; a model config needs {list(REQUIRED_KEYS)}")
    for key in _POSITIVE_INTS:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"cfg[{key!r}]: expected a positive integer, got {value!r}")
    drop = cfg["drop_rate"]
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0.0 <= drop < 1.0:
        raise ValueError(f"cfg['drop_rate']: expected a number in [0, 1), got {drop!r}")
    for key in _BOOLS:
        if key in cfg and not isinstance(cfg[key], bool):
            raise ValueError(f"cfg[{key!r}]: expected True or False, got {cfg[key]!r}")
    if cfg["emb_dim"] % cfg["n_heads"]:
        raise ValueError(
            f"cfg['emb_dim']: expected a multiple of n_heads={cfg['n_heads']} so that every head gets "
            f"the same width, got {cfg['emb_dim']}"
        )
    return {"tie_weights": False, **cfg}
