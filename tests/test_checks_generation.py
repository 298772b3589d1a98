"""Checks of chapter 9: temperature, top-k and top-p pass the package's code and name a wrong one's mistake."""

import pytest
import torch
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError
from minigpt_lib.generate import filter_logits


def test_check_temperature(capsys):
    passes(checks.check_temperature, lambda logits, t: torch.softmax(logits / t, dim=-1), capsys, "temperature scaling")
    with pytest.raises(CheckError, match="temperature applied as multiplication"):
        checks.check_temperature(lambda logits, t: torch.softmax(logits * t, dim=-1))
    with pytest.raises(CheckError, match="probabilities don't sum to 1.*\n  hint: these are the scaled logits"):
        checks.check_temperature(lambda logits, t: logits / t)


def top_k_keeping(extra):
    def filter_fn(logits, k):
        kth = torch.topk(logits, min(k + extra, logits.shape[-1]), dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    return filter_fn


def test_check_top_k(capsys):
    passes(checks.check_top_k, lambda logits, k: filter_logits(logits, top_k=k), capsys, "top-k filtering")
    with pytest.raises(CheckError, match=r"k=1\): row 0 keeps 2 tokens, expected 1\n  hint: keeps k\+1 tokens"):
        checks.check_top_k(top_k_keeping(extra=1))
    with pytest.raises(CheckError, match="nothing was set to -inf"):
        checks.check_top_k(lambda logits, k: filter_logits(logits, top_k=k).nan_to_num(neginf=0.0))
    with pytest.raises(CheckError, match="the kept logits changed"):
        checks.check_top_k(lambda logits, k: filter_logits(logits, top_k=k) * 2)


def test_check_top_p(capsys):
    passes(checks.check_top_p, lambda logits, p: filter_logits(logits, top_p=p), capsys, "top-p filtering")

    def drops_crossing_token(logits, p):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        drop = torch.softmax(sorted_logits, dim=-1).cumsum(-1) > p
        drop[:, 0] = False
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    with pytest.raises(CheckError, match=r"p=0.6\): row 0 keeps 1 tokens, expected 2\n  hint: one token too few"):
        checks.check_top_p(drops_crossing_token)
    with pytest.raises(CheckError, match="come back sorted"):
        checks.check_top_p(lambda logits, p: torch.sort(filter_logits(logits, top_p=p), descending=True).values)
