"""Exercise checks: run a learner's implementation next to the package's reference and say what differs.

One module per topic, in the order the book meets them (``tokens``, ``layers``, ``model``, ``attention``,
``training``, ``generation``, ``llama``, ``finetune``); ``_common`` holds the comparison machinery they share.
Every check prints ``✓ <what> matches the reference`` on success and raises :class:`CheckError` with a precise
message otherwise.
An exercise cell wraps its check in :func:`exercise`, so an unfinished stub prints ``not done yet: ...``.
"""

from ._common import CHECK_CONFIG, CheckError, check_close, exercise
from .attention import check_causal_attention, check_multi_head_attention
from .finetune import check_example_targets, check_last_token_states, check_lora_forward
from .generation import check_temperature, check_top_k, check_top_p
from .layers import check_feed_forward, check_gelu, check_layer_norm
from .llama import check_kv_cache_bytes, check_rope, check_swiglu
from .model import check_count_parameters, check_shortcut_block
from .tokens import check_sliding_windows, check_token_ids
from .training import check_cross_entropy, check_lr_schedule

__all__ = [
    "CHECK_CONFIG",
    "CheckError",
    "check_causal_attention",
    "check_close",
    "check_count_parameters",
    "check_cross_entropy",
    "check_example_targets",
    "check_feed_forward",
    "check_gelu",
    "check_kv_cache_bytes",
    "check_last_token_states",
    "check_layer_norm",
    "check_lr_schedule",
    "check_lora_forward",
    "check_multi_head_attention",
    "check_rope",
    "check_shortcut_block",
    "check_sliding_windows",
    "check_swiglu",
    "check_temperature",
    "check_token_ids",
    "check_top_k",
    "check_top_p",
    "exercise",
]
