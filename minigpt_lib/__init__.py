"""minigpt_lib: the GPT-2 model the minigpt book builds, chapter by chapter, ready to import and reuse."""

from .attention import KVCache, LayerKVCache, MultiHeadAttention, explicit_causal_attention
from .config import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPT_CONFIG_SMALL,
    PRESETS,
    validate_config,
)
from .generate import filter_logits, generate, generate_text_simple, sample_next_token
from .layers import GELU, FeedForward, LayerNorm
from .model import (
    DummyGPTModel,
    DummyLayerNorm,
    DummyTransformerBlock,
    GPTModel,
    TransformerBlock,
    count_parameters,
    model_memory_bytes,
)
from .tokenizer import CharTokenizer, get_tokenizer, text_to_token_ids, token_ids_to_text

__version__ = "0.1.0"

__all__ = [
    "CharTokenizer",
    "DummyGPTModel",
    "DummyLayerNorm",
    "DummyTransformerBlock",
    "FeedForward",
    "GELU",
    "GPTModel",
    "GPT_CONFIG_124M",
    "GPT_CONFIG_1558M",
    "GPT_CONFIG_355M",
    "GPT_CONFIG_774M",
    "GPT_CONFIG_SMALL",
    "KVCache",
    "LayerKVCache",
    "LayerNorm",
    "MultiHeadAttention",
    "PRESETS",
    "TransformerBlock",
    "count_parameters",
    "explicit_causal_attention",
    "filter_logits",
    "generate",
    "generate_text_simple",
    "get_tokenizer",
    "model_memory_bytes",
    "sample_next_token",
    "text_to_token_ids",
    "token_ids_to_text",
    "validate_config",
]
