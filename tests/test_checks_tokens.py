"""Checks of chapter 1: GPT-2 encoding and sliding windows pass the package's code and name a wrong one's mistake."""

import pytest
import torch
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError
from minigpt_lib.data import GPTDataset
from minigpt_lib.tokenizer import get_tokenizer


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
