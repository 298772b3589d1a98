"""Tests for batches from token files: random-offset windows through np.memmap, and training from them."""

import numpy as np
import pytest
import torch

from minigpt_lib.prepare import prepare_token_files, read_meta
from minigpt_lib.token_data import TokenWindowLoader


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Token files of six short generated documents, two of them for validation."""
    root = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    words = ["the", "verdict", "was", "a", "surprise", "to", "everyone", ",", ".", "\n"]
    for i in range(6):
        text = " ".join(rng.choice(words, size=400 + 50 * i))
        (root / f"doc{i}.txt").write_text(text, encoding="utf-8")
    prepare_token_files([root], root / "out", val_fraction=0.3, workers=1, progress=False)
    return root / "out"


def test_random_windows_are_seeded_and_are_slices_of_the_file(prepared):
    loader = TokenWindowLoader(prepared, "train", batch_size=4, context_length=8)
    tokens = np.fromfile(prepared / "train.bin", dtype=np.uint16).astype(np.int64)
    torch.manual_seed(0)
    first = list(loader)
    torch.manual_seed(0)
    again = list(loader)
    assert len(first) == len(loader) == len(tokens) // 32
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one token
        for row in x:
            starts = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(tokens, 8).__eq__(row.numpy()).all(1))
            assert len(starts) >= 1
    torch.manual_seed(1)
    assert not torch.equal(next(iter(loader))[0], first[0][0])


def test_random_windows_draw_one_number_from_the_global_generator_per_epoch(prepared):
    loader = TokenWindowLoader(prepared, "train", batch_size=2, context_length=4, batches_per_epoch=5)
    torch.manual_seed(0)
    batches = iter(loader)
    state = torch.get_rng_state()
    list(batches)  # drawing the batches themselves leaves the global generator alone (dropout is not moved)
    assert torch.equal(state, torch.get_rng_state())


def test_evenly_spaced_windows_span_the_file_and_never_change(prepared):
    loader = TokenWindowLoader(prepared, "val", batch_size=2, context_length=4, random=False, batches_per_epoch=3)
    tokens = np.fromfile(prepared / "val.bin", dtype=np.uint16).astype(np.int64)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [2, 2, 2]
    np.testing.assert_array_equal(batches[0][0][0], tokens[:4])
    np.testing.assert_array_equal(batches[-1][1][-1], tokens[-4:])  # the last target ends the file
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, loader, strict=True))


def test_shards_of_a_batch_together_are_the_whole_batch(prepared):
    loader = TokenWindowLoader(prepared, "train", batch_size=4, context_length=8, batches_per_epoch=2)
    torch.manual_seed(3)
    whole = list(loader)
    shards = []
    for rank in range(2):
        torch.manual_seed(3)
        shards.append(list(loader.shard(2, rank)))
    for k, (x, _) in enumerate(whole):
        assert torch.equal(x[0::2], shards[0][k][0]) and torch.equal(x[1::2], shards[1][k][0])
    with pytest.raises(ValueError, match="batch_size: the global batch of 4 windows must split evenly between 3"):
        loader.shard(3, 0)


def test_too_short_a_file_for_one_window_is_refused(prepared):
    n = read_meta(prepared)["val"]["tokens"]
    with pytest.raises(ValueError, match=f"val.bin: {n} tokens are too few for one window of context_length={n}"):
        TokenWindowLoader(prepared, "val", batch_size=1, context_length=n)
