"""Padding with the causal mask: right-padded batches keep the real tokens' logits; a masked loss skips pads.

The concept page notebooks/concepts/masks.ipynb explains these facts; these tests keep them true for GPTModel.
"""

import pytest
import torch
import torch.nn.functional as F

from minigpt_lib import GPT_CONFIG_SMALL, GPTModel

pytestmark = pytest.mark.usefixtures("one_thread")

PAD_ID = 50256  # GPT-2's <|endoftext|>, the usual stand-in for a padding token
# "Every effort moves you forward, one step" and "Hello, I am" in GPT-2 BPE: 8 and 4 tokens.
SEQS = [[6109, 3626, 6100, 345, 2651, 11, 530, 2239], [15496, 11, 314, 716]]


def pad(seqs: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Pad every sequence to the longest one with ``value``, on the right (or left); shape (batch, longest)."""
    width = max(len(s) for s in seqs)
    return torch.tensor([[value] * (width - len(s)) + s if left else s + [value] * (width - len(s)) for s in seqs])


@pytest.fixture(scope="module", params=[True, False], ids=["fused", "explicit"])
def model(request) -> GPTModel:
    """A small untrained GPT in eval mode, with the fused (SDPA) or the explicit attention path."""
    torch.manual_seed(123)
    gpt = GPTModel({**GPT_CONFIG_SMALL, "n_layers": 2}).eval()
    for block in gpt.trf_blocks:
        block.att.use_fast = request.param
    return gpt


def test_right_padding_keeps_real_token_logits(model):
    with torch.no_grad():
        padded = model(pad(SEQS, PAD_ID))
        for row, seq in enumerate(SEQS):
            alone = model(torch.tensor([seq]))[0]
            torch.testing.assert_close(padded[row, : len(seq)], alone)


def test_left_padding_without_a_mask_changes_logits(model):
    # The contrast that makes the test above meaningful: pads *before* the tokens are attended to.
    with torch.no_grad():
        padded = model(pad(SEQS, PAD_ID, left=True))
        alone = model(torch.tensor([SEQS[1]]))[0]
    assert (padded[1, -len(SEQS[1]) :] - alone).abs().max() > 1e-2


def test_masked_loss_equals_unpadded_loss(model):
    inputs = pad([s[:-1] for s in SEQS], PAD_ID)
    targets = pad([s[1:] for s in SEQS], -100)  # -100 is F.cross_entropy's default ignore_index
    with torch.no_grad():
        logits = model(inputs).flatten(0, 1)
        masked = F.cross_entropy(logits, targets.flatten())
        pads_counted = F.cross_entropy(logits, targets.masked_fill(targets == -100, PAD_ID).flatten())
        real_logits = torch.cat([model(torch.tensor([s[:-1]]))[0] for s in SEQS])
        unpadded = F.cross_entropy(real_logits, torch.tensor([t for s in SEQS for t in s[1:]]))
    torch.testing.assert_close(masked, unpadded)
    assert not torch.isclose(pads_counted, unpadded)
