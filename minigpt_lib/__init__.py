"""minigpt_lib: the GPT-2 model the minigpt book builds, chapter by chapter, ready to import and reuse.

The decoding function ``generate`` is imported from its module (``from minigpt_lib.generate import generate``),
so that ``minigpt_lib.generate`` stays the module.
"""

from .attention import KVCache, LayerKVCache, MultiHeadAttention, explicit_causal_attention
from .checkpoint import load_checkpoint, save_checkpoint
from .config import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPT_CONFIG_SMALL,
    PRESETS,
    validate_config,
)
from .corpora import load_text
from .data import GPTDataset, create_dataloader, train_val_split
from .generate import (
    complete,
    filter_logits,
    generate_text_simple,
    generate_tokens,
    sample_next_token,
    stream_text,
)
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
from .train import (
    NextTokenLoss,
    TrainingHistory,
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    lr_at_step,
    make_adamw,
    perplexity,
    train_model,
    train_step,
)
from .utils import get_device

__version__ = "0.1.0"

__all__ = [
    "calc_loss_batch",
    "calc_loss_loader",
    "CharTokenizer",
    "complete",
    "count_parameters",
    "create_dataloader",
    "DummyGPTModel",
    "DummyLayerNorm",
    "DummyTransformerBlock",
    "evaluate_model",
    "explicit_causal_attention",
    "FeedForward",
    "filter_logits",
    "GELU",
    "generate_text_simple",
    "generate_tokens",
    "get_device",
    "get_tokenizer",
    "GPT_CONFIG_124M",
    "GPT_CONFIG_1558M",
    "GPT_CONFIG_355M",
    "GPT_CONFIG_774M",
    "GPT_CONFIG_SMALL",
    "GPTDataset",
    "GPTModel",
    "KVCache",
    "LayerKVCache",
    "LayerNorm",
    "load_checkpoint",
    "load_text",
    "lr_at_step",
    "make_adamw",
    "model_memory_bytes",
    "MultiHeadAttention",
    "NextTokenLoss",
    "perplexity",
    "PRESETS",
    "sample_next_token",
    "stream_text",
    "save_checkpoint",
    "text_to_token_ids",
    "token_ids_to_text",
    "train_model",
    "train_step",
    "train_val_split",
    "TrainingHistory",
    "TransformerBlock",
    "validate_config",
]
