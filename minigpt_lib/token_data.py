"""Batches from token files: windows at random offsets of a memory-mapped ``train.bin`` (the nanoGPT way).

The book's :class:`~minigpt_lib.data.GPTDataset` slides windows over a text held in memory, so one epoch sees
every window once. A corpus on disk is sampled instead: each batch takes ``batch_size`` windows starting at
random token offsets, read through ``np.memmap`` so only the pages a batch touches are loaded. Windows may cross
the end-of-text separator between two documents; the model learns that what follows it is a new text.

Determinism and resumption: a loader draws one seed from torch's global generator when an epoch starts (as a
shuffling ``DataLoader`` does) and takes its offsets from a private generator seeded with it. So
``torch.manual_seed`` fixes the batches, dropout's draws do not move them, and
:func:`~minigpt_lib.train.train_model` resumes a half-done epoch exactly, as it does for a ``DataLoader``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .prepare import load_tokens
from .utils import check_positive_int

Batch = tuple[torch.Tensor, torch.Tensor]


class TokenWindowLoader:
    """Batches ``(inputs, targets)``, each ``(batch_size, context_length)``, from one token file.

    ``random=True``: ``batches_per_epoch`` batches of windows at uniformly random offsets (default: as many
    batches as it takes to draw the file's token count once, in expectation). ``random=False``: windows at
    evenly spaced offsets from the start to the end of the file, the same every time: evaluation sees the
    whole file in ``batches_per_epoch`` batches and compares like with like from one evaluation to the next.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        split: str,
        batch_size: int,
        context_length: int,
        *,
        random: bool = True,
        batches_per_epoch: int | None = None,
    ) -> None:
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.context_length = check_positive_int("context_length", context_length)
        self.path = Path(data_dir) / f"{split}.bin"
        self.split, self.random = split, random
        self.tokens = load_tokens(data_dir, split)
        self.n_starts = len(self.tokens) - context_length  # a window needs context_length + 1 tokens
        if self.n_starts < 1:
            raise ValueError(
                f"{self.path}: {len(self.tokens)} tokens are too few for one window of context_length="
                f"{context_length} (need at least {context_length + 1})"
            )
        if batches_per_epoch is None:
            batches_per_epoch = max(1, len(self.tokens) // (batch_size * context_length))
        self.batches_per_epoch = check_positive_int("batches_per_epoch", batches_per_epoch)
        self.rows = range(batch_size)  # the rows of each batch this process keeps (see shard)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _offsets(self, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
        """The start offsets of each batch's windows, ``(batch_size,)`` per batch (random ones from ``generator``)."""
        if generator is not None:
            for _ in range(self.batches_per_epoch):
                yield torch.randint(self.n_starts, (self.batch_size,), generator=generator)
        else:
            starts = torch.linspace(0, self.n_starts - 1, self.batches_per_epoch * self.batch_size).round().long()
            yield from starts.view(self.batches_per_epoch, self.batch_size)

    def _batches(self, generator: torch.Generator | None) -> Iterator[Batch]:
        tokens, span = self.tokens, self.context_length + 1
        for offsets in self._offsets(generator):
            windows = np.stack([tokens[start : start + span] for start in offsets[self.rows].tolist()])
            windows = torch.from_numpy(windows.astype(np.int64))
            yield windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[Batch]:
        """Start an epoch: draw its seed now, from torch's global generator, as ``iter(DataLoader)`` does."""
        generator = None
        if self.random:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator().manual_seed(seed)
        return self._batches(generator)

    def shard(self, world_size: int, rank: int) -> TokenWindowLoader:
        """This process's share for data-parallel training: rows ``rank::world_size`` of every batch.

        Every process draws the same offsets (same seed), so the processes together see one process's batch.
        """
        if self.batch_size % world_size:
            raise ValueError(
                f"batch_size: the global batch of {self.batch_size} windows must split evenly between "
                f"{world_size} processes; use a multiple of {world_size}"
            )
        share = object.__new__(TokenWindowLoader)
        share.__dict__.update(self.__dict__)
        share.rows = range(rank, self.batch_size, world_size)
        return share
