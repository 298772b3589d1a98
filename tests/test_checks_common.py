"""The shared machinery of minigpt_lib.checks: comparing tensors, a crash in the learner's code, an unwritten stub."""

import pytest
import torch
from checks_support import global_rng_untouched  # noqa: F401

from minigpt_lib import checks
from minigpt_lib.checks import CheckError


def test_check_close_reports_shape_dtype_and_first_difference(capsys):
    expected = torch.arange(6.0).reshape(2, 3)
    checks.check_close(expected.clone(), expected, name="logits")
    assert capsys.readouterr().out == "✓ logits matches the reference\n"
    with pytest.raises(CheckError, match=r"logits: expected shape \(2, 3\), got \(3, 2\)"):
        checks.check_close(expected.T, expected, name="logits")
    with pytest.raises(CheckError, match="expected dtype torch.float32, got torch.float64"):
        checks.check_close(expected.double(), expected)
    wrong = expected.clone()
    wrong[1, 2] = 9.0
    with pytest.raises(CheckError, match=r"1 of 6 values differ; first at index \[1, 2\]: expected 5, got 9"):
        checks.check_close(wrong, expected)
    with pytest.raises(CheckError, match=r"first at index \[0, 0\]: expected 1\.23456, got 1\.234561 "):
        got, reference = torch.tensor([[1.234561]], dtype=torch.float64), torch.tensor([[1.23456]], dtype=torch.float64)
        checks.check_close(got, reference, atol=0.0, rtol=0.0)  # equal to 6 digits: the message shows 10
    with pytest.raises(CheckError, match="expected a torch.Tensor, got list"):
        checks.check_close([0.0], expected)
    nan = expected.clone()
    nan[0, 1] = float("nan")
    with pytest.raises(CheckError, match=r"1 NaN value\(s\), first at index \[0, 1\]"):
        checks.check_close(nan, expected)


def test_crash_in_learner_code_names_the_input():
    def broken(x):
        raise RuntimeError("boom")

    with pytest.raises(CheckError, match=r"gelu\(x\) raised RuntimeError: boom"):
        checks.check_gelu(broken)


def test_exercise_reports_an_unfinished_stub_and_lets_a_wrong_answer_fail(capsys):
    def stub(x):
        raise NotImplementedError("write gelu here")

    with checks.exercise():
        checks.check_gelu(stub)
    assert capsys.readouterr().out == "not done yet: write gelu here\n"

    class StubModule(torch.nn.Module):
        def __init__(self, emb_dim):
            super().__init__()
            raise NotImplementedError("write LayerNorm.__init__ here")

    with checks.exercise():
        checks.check_layer_norm(StubModule)
    assert capsys.readouterr().out == "not done yet: write LayerNorm.__init__ here\n"
    with pytest.raises(CheckError, match="this is ReLU"), checks.exercise():
        checks.check_gelu(torch.relu)
