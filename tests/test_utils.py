"""Tests for minigpt_lib.utils: argument checks, device choice, cache folders, eval mode, atomic writes."""

import math

import pytest
import torch

from minigpt_lib.utils import (
    atomic_write,
    cache_dir,
    check_number,
    check_positive_int,
    eval_mode,
    get_device,
    remove_stale_temporaries,
)


def test_get_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")
    assert get_device("cpu") == torch.device("cpu")


def test_get_device_refuses_missing_or_unknown_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: cuda was requested"):
        get_device("cuda")
    with pytest.raises(ValueError, match="device: expected one of auto, cpu, cuda, mps, got 'tpu'"):
        get_device("tpu")


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None])
def test_check_positive_int_names_the_argument(value):
    with pytest.raises((TypeError, ValueError), match="batch_size: expected a positive integer"):
        check_positive_int("batch_size", value)


def test_check_positive_int_returns_the_value():
    assert check_positive_int("n", 7) == 7


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", True, None])
def test_check_number_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(ValueError, match="lr: expected a finite number"):
        check_number("lr", value, 0.0, low_open=True)


def test_check_number_range():
    assert check_number("p", 1, 0.0, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"lr: expected a number in \(0, inf\], got 0"):
        check_number("lr", 0, 0.0, low_open=True)
    with pytest.raises(ValueError, match=r"top_p: expected a number in \[0, 1\], got 1.5"):
        check_number("top_p", 1.5, 0.0, 1.0)


def test_cache_dir_follows_the_variable_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_TEST_DIR", str(tmp_path / "here"))
    assert cache_dir("MINIGPT_TEST_DIR", "models") == tmp_path / "here"
    monkeypatch.delenv("MINIGPT_TEST_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("MINIGPT_TEST_DIR", "models") == tmp_path / "xdg" / "minigpt" / "models"


def test_eval_mode_restores_the_previous_mode_even_after_an_error():
    model = torch.nn.Dropout(0.5)
    with eval_mode(model):
        assert not model.training
    assert model.training
    model.eval()
    with pytest.raises(RuntimeError), eval_mode(model):
        model.train()
        raise RuntimeError("boom")
    assert not model.training


def test_atomic_write_replaces_the_file_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with atomic_write(target) as tmp:
        tmp.write_text("first")
        assert not target.exists()
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]  # no temporary left


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / ".ckpt.safetensors.abc123.partial").write_bytes(b"x" * 10)
    (tmp_path / "keep.txt").write_text("keep")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".ckpt.safetensors.abc123.partial"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert remove_stale_temporaries(tmp_path / "missing") == []
