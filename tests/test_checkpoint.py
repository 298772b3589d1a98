"""Tests for minigpt_lib.checkpoint: round trips, shape errors, atomic writes, refusing pickles."""

import os
import pickle

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from minigpt_lib import checkpoint
from minigpt_lib.checkpoint import load_checkpoint, save_checkpoint, tokenizer_info
from minigpt_lib.model import GPTModel
from minigpt_lib.tokenizer import CharTokenizer, get_tokenizer

CFG = {
    "vocab_size": 40,
    "context_length": 16,
    "emb_dim": 32,
    "n_heads": 2,
    "n_layers": 2,
    "drop_rate": 0.0,
    "qkv_bias": False,
}

pytestmark = pytest.mark.usefixtures("one_thread")


def trained(seed=0, cfg=CFG):
    """A tiny model and an AdamW that has taken one step, so the optimizer has state."""
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x = torch.randint(0, cfg["vocab_size"], (2, 8))
    model(x).sum().backward()
    optimizer.step()
    return model, optimizer


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_round_trip_restores_weights_optimizer_and_extras(tmp_path):
    model, optimizer = trained()
    tok = CharTokenizer.from_text("abc def")
    path = save_checkpoint(
        tmp_path / "ckpt.safetensors",
        model,
        optimizer,
        tokenizer=tok,
        step=7,
        extra={"note": "hello", "losses": [1.5, 2.5]},
        tensors={"marker": torch.arange(3)},
    )
    fresh, fresh_opt = trained(seed=1)
    ckpt = load_checkpoint(path, fresh, fresh_opt)
    assert_same_state(model, fresh)
    saved, loaded = optimizer.state_dict(), fresh_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for pid, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(value, loaded["state"][pid][key]), (pid, key)
    assert ckpt.step == 7 and ckpt.extra == {"note": "hello", "losses": [1.5, 2.5]}
    assert torch.equal(ckpt.tensors["marker"], torch.arange(3))
    assert ckpt.config == model.cfg
    assert ckpt.tokenizer().encode("fed") == tok.encode("fed")


def test_without_a_model_the_config_builds_one(tmp_path):
    model, _ = trained()
    save_checkpoint(tmp_path / "m.safetensors", model, tokenizer=get_tokenizer())
    ckpt = load_checkpoint(tmp_path / "m.safetensors")
    assert isinstance(ckpt.model, GPTModel)
    assert_same_state(model, ckpt.model)
    assert ckpt.tokenizer_info == {"type": "tiktoken", "name": "gpt2"}
    assert ckpt.tokenizer() is get_tokenizer()
    with pytest.raises(ValueError, match="without optimizer state"):
        load_checkpoint(
            tmp_path / "m.safetensors", optimizer=torch.optim.AdamW(ckpt.model.parameters())
        )


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    model, _ = trained(cfg={**CFG, "tie_weights": True})
    save_checkpoint(tmp_path / "t.safetensors", model)
    ckpt = load_checkpoint(tmp_path / "t.safetensors")
    assert ckpt.model.out_head.weight is ckpt.model.tok_emb.weight
    assert_same_state(model, ckpt.model)


def test_wrapped_models_are_saved_under_plain_names(tmp_path):
    model, _ = trained()
    save_checkpoint(tmp_path / "w.safetensors", nn.DataParallel(model))
    assert_same_state(model, load_checkpoint(tmp_path / "w.safetensors").model)


def test_other_shape_names_the_first_mismatching_tensor(tmp_path):
    model, _ = trained()
    save_checkpoint(tmp_path / "c.safetensors", model)
    wider = GPTModel({**CFG, "emb_dim": 64})
    with pytest.raises(
        ValueError, match=r"'tok_emb.weight' has shape \(40, 32\), but the model expects \(40, 64\)"
    ):
        load_checkpoint(tmp_path / "c.safetensors", wider)
    deeper = GPTModel({**CFG, "n_layers": 3})
    with pytest.raises(ValueError, match=r"no tensor 'trf_blocks.2.att.W_query.weight'"):
        load_checkpoint(tmp_path / "c.safetensors", deeper)


def test_restore_rng_continues_the_random_streams(tmp_path):
    model, _ = trained()
    torch.manual_seed(42)
    save_checkpoint(tmp_path / "r.safetensors", model)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_checkpoint(tmp_path / "r.safetensors", model, restore_rng=True)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_info_rejects_unknown_tokenizers():
    with pytest.raises(TypeError, match="tokenizer"):
        tokenizer_info(object())


# --- atomic writes --------------------------------------------------------------------------------


def snapshot(path):
    return path.read_bytes()


def test_failure_inside_the_writer_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    old, _ = trained(seed=0)
    path = save_checkpoint(tmp_path / "ckpt.safetensors", old)
    before = snapshot(path)

    def write_half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint, "save_file", write_half_then_fail)
    new, _ = trained(seed=1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, new)
    assert snapshot(path) == before
    assert_same_state(old, load_checkpoint(path).model)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary file left over


def test_failure_at_the_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    old, _ = trained(seed=0)
    path = save_checkpoint(tmp_path / "ckpt.safetensors", old)
    before = snapshot(path)

    def failing_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(checkpoint.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(path, trained(seed=1)[0])
    monkeypatch.undo()
    assert snapshot(path) == before
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


# --- loading never runs code --------------------------------------------------------------------


class Payload:
    """Unpickling this creates a file: the harmless stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_without_running(tmp_path):
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(Payload(armed)))  # the payload is live: plain unpickling runs it
    assert armed.exists()

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.safetensors"
    torch.save({"model": Payload(marker)}, evil)
    with pytest.raises(ValueError, match="not a minigpt checkpoint"):
        load_checkpoint(evil, GPTModel(CFG))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="not a minigpt checkpoint"):
        load_checkpoint(tmp_path / "evil.pkl", GPTModel(CFG))
    assert not marker.exists()


def test_other_safetensors_files_and_missing_files_are_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="without a minigpt header"):
        load_checkpoint(tmp_path / "plain.safetensors", GPTModel(CFG))
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.safetensors")
