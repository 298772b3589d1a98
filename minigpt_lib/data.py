"""From text to training batches: overlapping windows of token ids and their next-token targets.

A window of ``max_length`` ids is an input; the same window shifted one token to the right is its
target, so every position learns to predict the token that follows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .tokenizer import Tokenizer, text_to_token_ids
from .utils import check_positive_int


class GPTDataset(Dataset):
    """Sliding windows over a token sequence: window ``i`` starts at token ``i * stride``.

    Item ``i`` is ``(input_ids, target_ids)``, both ``(max_length,)``; the target is the input
    shifted by one token.
    """

    def __init__(
        self,
        txt_or_ids: str | Sequence[int] | torch.Tensor,
        tokenizer: Tokenizer | None = None,
        max_length: int = 256,
        stride: int = 128,
    ) -> None:
        self.max_length = check_positive_int("max_length", max_length)
        self.stride = check_positive_int("stride", stride)
        if isinstance(txt_or_ids, str):
            self.token_ids = text_to_token_ids(txt_or_ids, tokenizer)[0]  # GPT-2 BPE if None
        else:
            self.token_ids = torch.as_tensor(txt_or_ids, dtype=torch.long).flatten()
        n_tokens = len(self.token_ids)
        if n_tokens < max_length + 1:
            raise ValueError(
                f"txt_or_ids: {n_tokens} tokens are too few for one window of "
                f"max_length={max_length}; need at least max_length + 1 = {max_length + 1} "
                "(the target is shifted by one token)"
            )
        # The same window starts as range(0, n_tokens - max_length, stride), without storing copies.
        self.starts = range(0, n_tokens - max_length, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[idx]
        window = self.token_ids[start : start + self.max_length + 1]
        return window[:-1], window[1:]


def create_dataloader(
    text: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer: Tokenizer | None = None,
) -> DataLoader:
    """Tokenize ``text`` (GPT-2 BPE unless ``tokenizer`` is given) and batch its windows.

    Yields ``(inputs, targets)`` of shape ``(batch_size, max_length)``; shuffling draws from torch's
    global generator, so ``torch.manual_seed`` fixes the order.
    """
    check_positive_int("batch_size", batch_size)
    dataset = GPTDataset(text, tokenizer, max_length=max_length, stride=stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"batch_size: the text gives {len(dataset)} window(s), fewer than "
            f"batch_size={batch_size}, so with drop_last=True the loader would yield no batch; "
            "use a smaller batch_size or max_length, or more text"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
    )


def train_val_split(text: str, train_ratio: float = 0.9) -> tuple[str, str]:
    """Split ``text`` at character ``int(train_ratio * len(text))`` into training and validation.

    A split by position (not at random) keeps each part a continuous text, like a held-out chapter.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    if isinstance(train_ratio, bool) or not isinstance(train_ratio, (int, float)):
        raise TypeError(f"train_ratio: expected a number, got {train_ratio!r}")
    if not 0 < train_ratio < 1:
        raise ValueError(f"train_ratio: expected a number between 0 and 1, got {train_ratio}")
    split_idx = int(train_ratio * len(text))
    return text[:split_idx], text[split_idx:]
