"""Checks of chapters 5 and 7: the transformer block and the parameter count pass our code and name a mistake."""

import pytest
import torch.nn as nn
from checks_support import global_rng_untouched, passes  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError
from minigpt_lib.model import TransformerBlock, count_parameters


class PostNormBlock(TransformerBlock):
    def forward(self, x):
        x = self.norm1(x + self.drop_shortcut(self.att(x)))
        return self.norm2(x + self.drop_shortcut(self.ff(x)))


class NoShortcutBlock(TransformerBlock):
    def forward(self, x):
        return self.ff(self.norm2(self.att(self.norm1(x))))


class UnnamedDropoutBlock(TransformerBlock):
    def __init__(self, cfg):
        super().__init__(cfg)
        del self.drop_shortcut
        self.dropout = nn.Dropout(cfg["drop_rate"])


def test_check_shortcut_block(capsys):
    passes(checks.check_shortcut_block, TransformerBlock, capsys, "TransformerBlock")
    with pytest.raises(CheckError, match="hint: post-norm"):
        checks.check_shortcut_block(PostNormBlock)
    with pytest.raises(CheckError, match="hint: no shortcut connections"):
        checks.check_shortcut_block(NoShortcutBlock)
    with pytest.raises(CheckError, match=r"missing attribute\(s\) \['drop_shortcut'\]"):
        checks.check_shortcut_block(UnnamedDropoutBlock)


def test_check_count_parameters(capsys):
    passes(checks.check_count_parameters, count_parameters, capsys, "parameter count")
    with pytest.raises(CheckError, match="number of parameter tensors"):
        checks.check_count_parameters(lambda model: len(list(model.parameters())))
    with pytest.raises(CheckError, match="(?s)tie_weights=True.*counted twice"):
        checks.check_count_parameters(lambda model: sum(t.numel() for t in model.state_dict().values()))
    with pytest.raises(CheckError, match="expected an int, got float"):
        checks.check_count_parameters(lambda model: float(count_parameters(model)))
