"""LoRA: our layer against peft's, merge/unmerge, trainable counts, adapter files and their errors."""

import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from minigpt_lib.lora import (
    LoRALinear,
    apply_lora,
    count_trainable,
    load_adapter,
    lora_layers,
    merge_and_unload,
    merge_lora,
    read_adapter,
    save_adapter,
    unmerge_lora,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class TwoLayers(nn.Module):
    """A small model with two kinds of linear layers, named as in a Llama block."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(16, 12)
        self.act = nn.ReLU()
        self.down_proj = nn.Linear(12, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.q_proj(x)))


def _model_with_lora(seed: int = 0) -> TwoLayers:
    torch.manual_seed(seed)
    model = TwoLayers()
    apply_lora(model, ["q_proj", "down_proj"], rank=4, alpha=8)
    for layer in lora_layers(model).values():
        nn.init.normal_(layer.lora_B)  # B starts at zero; make the update visible
    return model


def test_layer_equals_peft_lora_on_same_weights():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    ours = LoRALinear(nn.Linear(16, 12), rank=4, alpha=8)
    ours.base.load_state_dict(base.state_dict())
    nn.init.normal_(ours.lora_B)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = base

    theirs = peft.inject_adapter_in_model(
        peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["proj"]), Wrapper()
    ).proj
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(3, 5, 16)
    assert theirs.scaling["default"] == ours.scaling == 2.0
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.delta_weight(), theirs.get_delta_weight("default"))


def test_new_layer_computes_what_the_base_did():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    x = torch.randn(2, 16)
    expected = base(x)
    torch.testing.assert_close(LoRALinear(base, rank=2, alpha=4)(x), expected)


def test_merged_equals_unmerged_and_unmerge_restores_weights():
    model = _model_with_lora()
    x = torch.randn(4, 16)
    weight_before = model.q_proj.base.weight.clone()
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        merged = model(x)
    torch.testing.assert_close(merged, unmerged)
    assert not torch.equal(model.q_proj.base.weight, weight_before)
    unmerge_lora(model)
    torch.testing.assert_close(model.q_proj.base.weight, weight_before)


def test_training_through_a_merged_layer_raises():
    model = _model_with_lora()
    merge_lora(model)
    with pytest.raises(RuntimeError, match="unmerge"):
        model(torch.randn(2, 16))


def test_merge_and_unload_gives_plain_linear_layers_with_same_outputs():
    model = _model_with_lora()
    x = torch.randn(4, 16)
    with torch.no_grad():
        expected = model(x)
        merge_and_unload(model)
        got = model(x)
    assert type(model.q_proj) is nn.Linear and not lora_layers(model)
    torch.testing.assert_close(got, expected)


def test_only_lora_matrices_are_trainable_and_counted():
    model = _model_with_lora()
    trainable, total = count_trainable(model)
    assert trainable == 4 * (16 + 12) + 4 * (12 + 8)
    assert total == trainable + 16 * 12 + 12 + 12 * 8
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "q_proj.lora_A", "q_proj.lora_B", "down_proj.lora_A", "down_proj.lora_B"}


def test_gradients_reach_only_lora_matrices():
    model = _model_with_lora()
    model(torch.randn(2, 16)).sum().backward()
    assert model.q_proj.lora_A.grad is not None and model.q_proj.base.weight.grad is None


def test_unknown_target_names_the_layers_that_exist():
    with pytest.raises(ValueError, match=r"no nn.Linear named \['v_proj'\].*'down_proj', 'q_proj'"):
        apply_lora(TwoLayers(), ["q_proj", "v_proj"])


def test_bad_rank_and_alpha_are_refused():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 4), rank=0, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(4, 4), rank=2, alpha=-1)


def test_adapter_round_trip(tmp_path):
    model = _model_with_lora()
    path = save_adapter(model, tmp_path / "adapter.safetensors", base_model="two-layers")
    fresh = TwoLayers()
    fresh.load_state_dict({k.replace(".base", ""): v for k, v in model.state_dict().items() if "lora" not in k})
    config = load_adapter(fresh, path, base_model="two-layers")
    assert (config.rank, config.alpha, config.target_modules) == (4, 8.0, ("down_proj", "q_proj"))
    x = torch.randn(3, 16)
    torch.testing.assert_close(fresh(x), model(x))
    assert sorted(load_file(path)) == ["down_proj.lora_A", "down_proj.lora_B", "q_proj.lora_A", "q_proj.lora_B"]


def _rewrite(path, tmp_path, tensors=None, **changes):
    """Copy an adapter with some metadata fields changed (None removes one)."""
    config, saved = read_adapter(path)
    metadata = {"format": "minigpt-lora", "format_version": "1", "rank": str(config.rank),
                "alpha": repr(config.alpha), "dropout": repr(config.dropout),
                "target_modules": json.dumps(list(config.target_modules)), "base_model": config.base_model}
    metadata.update(changes)
    metadata = {k: v for k, v in metadata.items() if v is not None}
    out = tmp_path / "bad.safetensors"
    save_file(saved if tensors is None else tensors, str(out), metadata=metadata)
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "something-else"}, "field 'format'"),
        ({"format_version": "9"}, "field 'format_version'"),
        ({"rank": "two"}, "field 'rank': expected a positive integer, got 'two'"),
        ({"rank": "0"}, "field 'rank'"),
        ({"alpha": "nan"}, "field 'alpha'"),
        ({"dropout": "1.5"}, "field 'dropout'"),
        ({"target_modules": "q_proj"}, "field 'target_modules'"),
        ({"base_model": None}, "lacks the field 'base_model'"),
        ({"base_model": "other-model"}, "adapter is for 'other-model', not 'two-layers'"),
        ({"rank": "3"}, r"tensor 'q_proj.lora_A': expected shape \(3, 16\), got \(4, 16\)"),
    ],
)
def test_bad_adapter_metadata_is_refused_by_field(tmp_path, changes, message):
    good = save_adapter(_model_with_lora(), tmp_path / "adapter.safetensors", base_model="two-layers")
    bad = _rewrite(good, tmp_path, **changes)
    fresh = TwoLayers()
    with pytest.raises(ValueError, match=message) as info:
        load_adapter(fresh, bad, base_model="two-layers")
    assert str(bad) in str(info.value)
    assert not lora_layers(fresh)  # nothing was changed before the error


def test_adapter_with_missing_tensor_is_refused(tmp_path):
    good = save_adapter(_model_with_lora(), tmp_path / "adapter.safetensors", base_model="two-layers")
    tensors = load_file(good)
    del tensors["q_proj.lora_B"]
    with pytest.raises(ValueError, match=r"missing \['q_proj.lora_B'\]"):
        load_adapter(TwoLayers(), _rewrite(good, tmp_path, tensors=tensors))


def test_file_that_is_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a safetensors adapter file"):
        load_adapter(TwoLayers(), path)
    with pytest.raises(FileNotFoundError, match="no such adapter file"):
        load_adapter(TwoLayers(), tmp_path / "absent.safetensors")


def test_save_without_lora_layers_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(TwoLayers(), tmp_path / "adapter.safetensors", base_model="x")
    assert not list(tmp_path.iterdir())
