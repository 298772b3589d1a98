"""Tests for minigpt_lib.static_widgets: what the kernel-free figures embed, and that bad input is refused.

The drawing itself runs in a browser: tests/test_site.py moves every control of the built pages.
"""

import base64
import json
import re
from importlib.resources import files

import pytest
import torch

from minigpt_lib.static_widgets import static_attention_explorer, static_sampling_playground

SCRIPT = (files("minigpt_lib") / "static_widgets.js").read_text(encoding="utf-8")


def embedded(output) -> tuple[str, dict]:
    """The element id and the JSON data of a static figure's HTML."""
    element_id = re.search(r'<div class="minigpt-static [^"]*" id="([^"]+)"', output.data).group(1)
    payload = re.search(r'<script type="application/json" class="minigpt-data">(.*?)</script>', output.data, re.S)
    return element_id, json.loads(payload.group(1))


def random_maps(layers, heads, tokens, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(layers, heads, tokens, tokens, generator=gen)
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)
    return list(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1))


def test_attention_explorer_embeds_every_layer_and_head_to_one_level_in_255():
    maps = random_maps(layers=3, heads=2, tokens=4)
    out = static_attention_explorer(
        {"a b c d": (["a", " b", " c", " d"], maps), "x y": (["x", " y"], [m[:, :2, :2] for m in maps])}
    )
    element_id, data = embedded(out)
    assert element_id.startswith("minigpt-attention-")
    assert (data["layers"], data["heads"]) == (3, 2)
    assert [s["text"] for s in data["sentences"]] == ["a b c d", "x y"]
    levels = torch.frombuffer(bytearray(base64.b64decode(data["sentences"][0]["weights"])), dtype=torch.uint8)
    torch.testing.assert_close(levels.reshape(3, 2, 4, 4).float() / 255, torch.stack(maps), atol=0.5 / 255, rtol=0)
    assert out.data.count('type="range"') == 2
    assert f"minigptStatic.render({json.dumps(element_id)})" in out.data and SCRIPT in out.data


def test_same_data_give_the_same_html_and_other_data_another_id():
    maps = random_maps(2, 2, 3)
    first = static_attention_explorer({"s": (["a", "b", "c"], maps)}).data
    assert first == static_attention_explorer({"s": (["a", "b", "c"], maps)}).data
    assert embedded(static_attention_explorer({"s": (["a", "b", "c"], random_maps(2, 2, 3, seed=1))}))[0] != (
        re.search(r'id="(minigpt-attention-[^"]+)"', first).group(1)
    )


def test_attention_explorer_refuses_mismatched_input():
    with pytest.raises(ValueError, match="examples: expected at least one sentence"):
        static_attention_explorer({})
    with pytest.raises(
        ValueError, match=r"examples\['s'\]: expected one \(heads, 2, 2\) tensor per layer for 2 tokens"
    ):
        static_attention_explorer({"s": (["a", "b"], random_maps(2, 2, 3))})
    with pytest.raises(ValueError, match=r"examples\['t'\]: expected 2 layers of 2 heads like the others"):
        static_attention_explorer({"s": (["a", "b"], random_maps(2, 2, 2)), "t": (["a", "b"], random_maps(3, 2, 2))})


def test_a_token_that_closes_a_script_tag_cannot_end_the_data_block():
    out = static_attention_explorer({"</script>": (["</script>"], [torch.ones(1, 1, 1)])})
    assert out.data.count("</script>") == 2  # the JSON block's and the drawing script's own
    assert embedded(out)[1]["sentences"][0]["tokens"] == ["</script>"]


def test_sampling_playground_keeps_the_most_likely_candidates_in_order():
    logits = torch.tensor([0.5, 3.0, -1.0, 2.0, 1.0])
    out = static_sampling_playground({"p": logits}, decode=lambda ids: f"<{ids[0]}>", candidates=3)
    _, data = embedded(out)
    (prompt,) = data["prompts"]
    assert prompt["tokens"] == ["<1>", "<3>", "<4>"] and prompt["logits"] == [3.0, 2.0, 1.0]
    left_out = torch.softmax(logits.double(), dim=-1)[[0, 2]].sum().item()
    assert prompt["left_out"] == pytest.approx(left_out, abs=1e-4)
    assert 'name="top-k" min="0" max="3"' in out.data


def test_sampling_playground_refuses_bad_logits():
    with pytest.raises(ValueError, match="next_token_logits: expected at least one prompt"):
        static_sampling_playground({}, decode=str)
    with pytest.raises(ValueError, match=r"next_token_logits\['p'\]: expected a \(vocab,\) tensor, got \(1, 5\)"):
        static_sampling_playground({"p": torch.zeros(1, 5)}, decode=str)
