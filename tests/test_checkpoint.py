"""Tests for minigpt_lib.checkpoint: round trips, shape errors, atomic writes, refusing pickles."""

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
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
        load_checkpoint(tmp_path / "m.safetensors", optimizer=torch.optim.AdamW(ckpt.model.parameters()))


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
        ValueError, match=r"tensor 'model.tok_emb.weight': has shape \(40, 32\), but the model expects \(40, 64\)"
    ):
        load_checkpoint(tmp_path / "c.safetensors", wider)
    deeper = GPTModel({**CFG, "n_layers": 3})
    with pytest.raises(ValueError, match=r"tensor 'model.trf_blocks.2.att.W_query.weight': missing; the model needs"):
        load_checkpoint(tmp_path / "c.safetensors", deeper)
    shallower = GPTModel({**CFG, "n_layers": 1})
    with pytest.raises(ValueError, match=r"tensor 'model.trf_blocks.1.\S+': has no counterpart in the model"):
        load_checkpoint(tmp_path / "c.safetensors", shallower)


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


# --- every field of an untrusted file is checked, each problem one line naming the file and the field ---


def read_file(path):
    """The header (parsed) and all tensors of a checkpoint, to tamper with."""
    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()["minigpt"]), {name: f.get_tensor(name) for name in f.keys()}


def write_file(path, header, tensors):
    save_file(tensors, path, metadata={"minigpt": header if isinstance(header, str) else json.dumps(header)})


@pytest.fixture
def saved(tmp_path):
    """A checkpoint with model, optimizer, char tokenizer and RNG state; returns its path."""
    model, optimizer = trained()
    return save_checkpoint(
        tmp_path / "ckpt.safetensors", model, optimizer, tokenizer=CharTokenizer.from_text("abc"), step=3
    )


def tamper(path, change_header=None, change_tensors=None):
    header, tensors = read_file(path)
    if change_header:
        header = change_header(header)
    if change_tensors:
        change_tensors(tensors)
    write_file(path, header, tensors)


def setting(key, value):
    """A header change that sets ``key`` (dotted for nested fields) to ``value``."""

    def change(header):
        *parents, last = key.split(".")
        target = header
        for part in parents:
            target = target[part]
        target[last] = value
        return header

    return change


def without(key):
    def change(header):
        del header[key]
        return header

    return change


def load_everything(path):
    """Load as resuming training would: a fresh model and optimizer, RNG restored."""
    model, optimizer = trained(seed=5)
    return load_checkpoint(path, model, optimizer, restore_rng=True)


def assert_one_line(exc_info, path, *parts):
    message = str(exc_info.value)
    assert "\n" not in message and message.startswith(f"checkpoint {path}: "), message
    for part in parts:
        assert part in message, message


HEADER_CASES = [
    # (change, field named in the message, what the message says was expected)
    (lambda h: [h], "its minigpt header", "expected a JSON object, got [{"),
    (lambda h: None, "its minigpt header", "expected a JSON object, got null"),
    (lambda h: "{not json", "its minigpt header", "is not valid JSON"),
    (setting("aliases", []), "field 'aliases'", "expected an object mapping tensor names to tensor names, got []"),
    (setting("aliases", None), "field 'aliases'", "got null"),
    (setting("aliases", {"out_head.weight": 5}), "field 'aliases'", 'got {"out_head.weight": 5}'),
    (setting("aliases", {"out_head.weight": "nope"}), "field 'aliases'", "holds 'out_head.weight' itself or no 'nope'"),
    (setting("aliases", {"no.such": "tok_emb.weight"}), "field 'aliases'", "the model has no tensor 'no.such'"),
    (setting("tokenizer", []), "field 'tokenizer'", "expected {'type': 'char', 'chars': ...}"),
    (setting("tokenizer", {"type": "bpe"}), "field 'tokenizer'", 'got {"type": "bpe"}'),
    (setting("tokenizer", {"type": "char"}), "field 'tokenizer'", "tokenizer['chars']: expected the non-empty string"),
    (setting("tokenizer", {"type": "char", "chars": "cba"}), "field 'tokenizer'", "distinct, sorted characters"),
    (setting("tokenizer", {"type": "char", "chars": 7}), "field 'tokenizer'", "got 7"),
    (setting("tokenizer", {"type": "tiktoken"}), "field 'tokenizer'", "tokenizer['name']: expected one of"),
    (setting("tokenizer", {"type": "tiktoken", "name": "gpt5"}), "field 'tokenizer'", 'got "gpt5"'),
    (setting("tokenizer.chars", "".join(map(chr, range(33, 80)))), "field 'tokenizer'", "need vocab_size >= 47"),
    (setting("step", -1), "field 'step'", "expected a non-negative integer, got -1"),
    (setting("step", "7"), "field 'step'", 'got "7"'),
    (setting("step", True), "field 'step'", "got true"),
    (setting("step", None), "field 'step'", "got null"),
    (setting("extra", []), "field 'extra'", "expected an object, got []"),
    (setting("config", []), "field 'config'", "expected an object or null, got []"),
    (setting("config", "small"), "field 'config'", 'got "small"'),
    (setting("python_random", None), "field 'python_random'", "a list of 625 integers"),
    (setting("python_random", [3, [1, 2], None]), "field 'python_random'", "got [3, [1, 2], null]"),
    (setting("optimizer", []), "field 'optimizer'", "expected an object or null, got []"),
    (setting("optimizer.param_groups", None), "field 'optimizer.param_groups'", "expected a list of objects"),
    (setting("optimizer.param_groups", [7]), "field 'optimizer.param_groups[0]'", "expected an object, got 7"),
    (setting("optimizer.scalars", []), "field 'optimizer.scalars'", "expected an object mapping parameter ids"),
    (without("aliases"), "field 'aliases'", "missing from the header"),
    (without("python_random"), "field 'python_random'", "missing from the header"),
]


@pytest.mark.parametrize(("change", "where", "expected"), HEADER_CASES)
def test_malformed_header_fields_are_one_line_naming_file_and_field(saved, change, where, expected):
    tamper(saved, change)
    with pytest.raises(ValueError) as info:
        load_everything(saved)
    assert_one_line(info, saved, where, expected)
    with pytest.raises(ValueError) as info:  # without model or optimizer too: nothing is used unchecked
        load_checkpoint(saved)
    assert_one_line(info, saved)


def group_setting(key, value):
    def change(header):
        header["optimizer"]["param_groups"][0][key] = value
        return header

    return change


@pytest.mark.parametrize(
    ("change", "where", "expected"),
    [
        (group_setting("lr", "fast"), "optimizer.param_groups[0].lr", 'expected a finite number, got "fast"'),
        (group_setting("lr", float("nan")), "optimizer.param_groups[0].lr", "expected a finite number, got NaN"),
        (group_setting("lr", True), "optimizer.param_groups[0].lr", "expected a finite number, got true"),
        (group_setting("betas", [0.9]), "optimizer.param_groups[0].betas", "a list of 2 finite numbers"),
        (group_setting("initial_lr", float("inf")), "optimizer.param_groups[0].initial_lr", "got Infinity"),
        (group_setting("amsgrad", "yes"), "optimizer.param_groups[0].amsgrad", "true, false or null"),
        (group_setting("params", [0, 0]), "optimizer.param_groups", "each parameter id once"),
        (group_setting("params", ["a"]), "optimizer.param_groups[0].params", "a list of integer parameter ids"),
        (group_setting("params", [0]), "optimizer.param_groups", "parameter groups of sizes [1]"),
    ],
)
def test_malformed_optimizer_settings_are_named(saved, change, where, expected):
    tamper(saved, change)
    with pytest.raises(ValueError) as info:
        load_everything(saved)
    assert_one_line(info, saved, where, expected)


def test_optimizer_with_other_groups_is_named(saved):
    model, _ = trained()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    with pytest.raises(ValueError) as info:
        load_checkpoint(saved, model, optimizer)
    assert_one_line(info, saved, "field 'optimizer.param_groups'", "the saved optimizer has parameter groups of sizes")


def put(name, tensor):
    return lambda tensors: tensors.__setitem__(name, tensor)


@pytest.mark.parametrize(
    ("change", "where", "expected"),
    [
        (put("weights.x", torch.zeros(1)), "tensor 'weights.x'", "has no place in a checkpoint"),
        (put("model.extra_layer.weight", torch.zeros(1)), "tensor 'model.extra_layer.weight'", "no counterpart"),
        (
            put("model.tok_emb.weight", torch.zeros(40, 32, dtype=torch.int64)),
            "tensor 'model.tok_emb.weight'",
            "expected floating-point numbers, got torch.int64",
        ),
        (
            put("model.pos_emb.weight", torch.zeros(16)),
            "tensor 'model.pos_emb.weight'",
            "has shape (16,), but the model expects (16, 32)",
        ),
        (lambda t: t.pop("model.final_norm.scale"), "tensor 'model.final_norm.scale'", "missing; the model needs it"),
        (
            put("optimizer.0.exp_avg", torch.zeros(3)),
            "tensor 'optimizer.0.exp_avg'",
            "has shape (3,), but its parameter",
        ),
        (put("optimizer.999.exp_avg", torch.zeros(3)), "tensor 'optimizer.999.exp_avg'", "names no parameter"),
        (put("optimizer.x", torch.zeros(3)), "tensor 'optimizer.x'", "names no parameter"),
        (put("rng.torch", torch.zeros(5)), "tensor 'rng.torch'", "expected a generator state of"),
        (lambda t: t.pop("rng.torch"), "tensor 'rng.torch'", "missing; restore_rng needs it"),
        (
            put("model.out_head.weight", torch.full((40, 32), float("nan"))),
            "tensor 'model.out_head.weight'",
            "holds NaN or infinite values",
        ),
        (
            put("optimizer.0.exp_avg_sq", torch.full((40, 32), float("inf"))),
            "tensor 'optimizer.0.exp_avg_sq'",
            "holds NaN or infinite values",
        ),
    ],
)
def test_wrong_tensors_are_named(saved, change, where, expected):
    tamper(saved, change_tensors=change)
    with pytest.raises(ValueError) as info:
        load_everything(saved)
    assert_one_line(info, saved, where, expected)


@pytest.mark.parametrize(
    ("config_change", "expected"),
    [
        ({"n_layers": -1}, "cfg['n_layers']: expected a positive integer, got -1"),
        ({"dropout": 0.1}, "cfg: unknown key 'dropout'; did you mean 'drop_rate'?"),
        ({"tie_weigths": True}, "did you mean 'tie_weights'?"),
        ({"emb_dim": 31}, "cfg['emb_dim']: expected a multiple of n_heads=2"),
        ({"n_layers": 3}, "tensors (n_layers=3), but the file holds"),
    ],
)
def test_a_bad_config_is_named_before_a_model_is_built(saved, config_change, expected):
    tamper(saved, lambda h: {**h, "config": {**h["config"], **config_change}})
    with pytest.raises(ValueError) as info:
        load_checkpoint(saved)
    assert_one_line(info, saved, "field 'config'", expected)


@pytest.mark.parametrize(
    "claim",
    [
        {"n_layers": 20_000},
        {"vocab_size": 2**25},
        {"context_length": 20_000},
        {"emb_dim": 2**20, "n_heads": 1},
        {"context_length": 2**40},
        {"n_layers": 10**12, "vocab_size": 2**40},
    ],
)
def test_a_tiny_file_claiming_a_huge_model_fails_without_building_it(tmp_path, monkeypatch, claim):
    path = tmp_path / "tiny.safetensors"
    header = {
        "format": "minigpt-checkpoint",
        "version": 1,
        "config": {**CFG, **claim},
        "aliases": {},
        "tokenizer": None,
        "step": 0,
        "extra": {},
        "python_random": list(random_state()),
        "optimizer": None,
    }
    write_file(path, header, {"model.tok_emb.weight": torch.zeros(2, 2)})
    assert path.stat().st_size < 8000
    built = []

    def spy(cfg):
        built.append((cfg["n_layers"], torch.empty(0).device.type))
        return GPTModel(cfg)

    monkeypatch.setattr(checkpoint, "GPTModel", spy)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    assert_one_line(info, path, "config")
    assert all(device == "meta" and n_layers == 1 for n_layers, device in built), built


def random_state():
    version, internal, gauss = __import__("random").getstate()
    return version, list(internal), gauss


def test_not_a_checkpoint_at_all(tmp_path):
    for name, content in [("empty", b""), ("text", b"hello"), ("short", b"\x08\x00\x00\x00\x00\x00\x00\x00{}")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"path: {path} is not a minigpt checkpoint"):
            load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path)


def test_other_format_or_version_is_named(saved):
    tamper(saved, setting("version", 2))
    with pytest.raises(ValueError, match=r"has format 'minigpt-checkpoint' version 2; this minigpt_lib reads"):
        load_checkpoint(saved)


# --- a diverged model never replaces a good checkpoint ---------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_saving_non_finite_weights_is_refused_and_keeps_the_old_file(tmp_path, value):
    model, optimizer = trained()
    path = save_checkpoint(tmp_path / "ckpt.safetensors", model, optimizer)
    before = path.read_bytes()
    with torch.no_grad():
        model.trf_blocks[1].ff.layers[0].weight[0, 0] = value
    with pytest.raises(ValueError, match=r"model: 'trf_blocks.1.ff.layers.0.weight' holds NaN or infinite values"):
        save_checkpoint(path, model, optimizer)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_saving_a_non_finite_optimizer_state_is_refused(tmp_path):
    model, optimizer = trained()
    next(iter(optimizer.state.values()))["exp_avg"][0] = float("nan")
    with pytest.raises(ValueError, match=r"optimizer: '0.exp_avg' holds NaN or infinite values"):
        save_checkpoint(tmp_path / "ckpt.safetensors", model, optimizer)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("step", "extra"), [(-1, None), (1.5, None), (True, None), (0, [1]), (0, {"x": object()})])
def test_saving_bad_step_or_extra_is_refused(tmp_path, step, extra):
    with pytest.raises((TypeError, ValueError), match="^(step|extra): expected"):
        save_checkpoint(tmp_path / "c.safetensors", trained()[0], step=step, extra=extra)
    assert os.listdir(tmp_path) == []


# --- a writer killed mid-save leaves a temporary that the next run removes --------------------------------

KILLED_WRITER = """
import os, signal, sys
import torch
from minigpt_lib import checkpoint
from minigpt_lib.model import GPTModel

cfg = {cfg!r}
torch.manual_seed(0)
checkpoint.save_checkpoint(sys.argv[1], GPTModel(cfg))  # the good checkpoint


def write_part_then_die(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"x" * 100_000)
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)


checkpoint.save_file = write_part_then_die
checkpoint.save_checkpoint(sys.argv[1], GPTModel(cfg))
"""


def test_a_writer_killed_mid_save_leaves_the_old_file_and_a_temporary_that_cleanup_removes(tmp_path):
    from minigpt_lib.utils import remove_stale_temporaries

    path = tmp_path / "ckpt.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER.format(cfg=CFG), str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2 and leftovers[1] == "ckpt.safetensors", leftovers
    assert leftovers[0].startswith(".ckpt.safetensors.") and leftovers[0].endswith(".partial")
    torch.manual_seed(0)
    assert_same_state(GPTModel(CFG), load_checkpoint(path).model)  # the old checkpoint is whole
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [leftovers[0]]
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_a_small_file_cannot_make_the_loader_allocate_huge_attention_masks(tmp_path, monkeypatch):
    """A long context with one-wide embeddings keeps the weights tiny, but every block's causal mask is
    context_length squared: the loader refuses before building; a trusted file still loads into a given model."""
    cfg = {**CFG, "vocab_size": 3, "context_length": 4000, "emb_dim": 1, "n_heads": 1, "n_layers": 2}
    monkeypatch.setattr(checkpoint, "UNSAVED_BUFFER_BUDGET", 2**20)  # so that the test needs only 32 MB
    path = save_checkpoint(tmp_path / "long.safetensors", GPTModel(cfg))
    assert path.stat().st_size < 40_000
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    assert_one_line(info, path, "field 'config'", "context_length=4000 and n_layers=2 need 31 MiB of attention masks")
    load_checkpoint(path, GPTModel(cfg))  # trusted: the caller built the model
    monkeypatch.setattr(checkpoint, "UNSAVED_BUFFER_BUDGET", 64 * 2**20)
    assert load_checkpoint(path).model.cfg["context_length"] == 4000


@pytest.mark.parametrize("change", [{"n_layers": -1}, {"dropout": 0.1}, {"qkv_bias": "no"}])
def test_a_bad_config_is_named_even_when_the_model_is_given(saved, change):
    tamper(saved, lambda h: {**h, "config": {**h["config"], **change}})
    with pytest.raises(ValueError) as info:
        load_everything(saved)
    assert_one_line(info, saved, "field 'config': cfg")
    assert "pass it as model=" not in str(info.value)
