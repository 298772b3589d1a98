"""Tests for minigpt_lib.widgets: attention maps, the heatmap helper and the attention explorer's callbacks."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minigpt_lib import GPT_CONFIG_SMALL, CharTokenizer, GPTModel  # noqa: E402
from minigpt_lib.widgets import AttentionExplorer, attention_explorer, attention_maps, plot_attention  # noqa: E402

SENTENCES = ["the cat sat", "a dog ran far"]


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.from_text("".join(SENTENCES))


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = {
        **GPT_CONFIG_SMALL,
        "vocab_size": tokenizer.n_vocab,
        "context_length": 16,
        "emb_dim": 16,
        "n_heads": 2,
        "n_layers": 3,
    }
    torch.manual_seed(0)
    return GPTModel(cfg)


def test_attention_maps_shapes_causal_and_normalized(model, tokenizer):
    ids = tokenizer.encode(SENTENCES[0])
    maps = attention_maps(model, ids)
    assert len(maps) == 3
    for weights in maps:
        assert weights.shape == (2, len(ids), len(ids))
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, len(ids)))
        future = torch.triu(torch.ones(len(ids), len(ids), dtype=torch.bool), diagonal=1)
        assert weights[:, future].abs().max() == 0


def test_attention_maps_match_explicit_computation(model, tokenizer):
    ids = torch.tensor([tokenizer.encode(SENTENCES[1])])
    maps = attention_maps(model, ids)
    model.eval()
    with torch.no_grad():
        x = model.tok_emb(ids) + model.pos_emb(torch.arange(ids.shape[1]))
        for block, got in zip(model.trf_blocks, maps, strict=True):
            expected = block.att(block.norm1(x), return_weights=True)[1][0]
            torch.testing.assert_close(got, expected)
            x = block(x)


def test_attention_maps_restores_training_mode_and_removes_hooks(model, tokenizer):
    model.train()
    attention_maps(model, tokenizer.encode("cat"))
    assert model.training
    assert all(not block.att._forward_pre_hooks for block in model.trf_blocks)
    model.eval()


def test_attention_maps_rejects_a_batch(model):
    with pytest.raises(ValueError, match="token_ids"):
        attention_maps(model, torch.zeros(2, 3, dtype=torch.long))


def test_plot_attention_labels_and_colorbar():
    weights = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    ax = plot_attention(weights, ["a", "b"], title="demo")
    assert ax.get_title() == "demo"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.figure.axes) == 2  # heatmap and colorbar
    assert (ax.images[0].get_array() == weights.numpy()).all()
    plt.close(ax.figure)


def test_plot_attention_rejects_wrong_label_count():
    with pytest.raises(ValueError, match="tokens"):
        plot_attention(torch.eye(3), ["a", "b"])


def test_explorer_sliders_redraw_the_chosen_layer_and_head(model, tokenizer):
    explorer = attention_explorer(model, tokenizer, SENTENCES)
    assert isinstance(explorer, AttentionExplorer)
    assert explorer.shown == (SENTENCES[0], 0, 0)
    maps = attention_maps(model, tokenizer.encode(SENTENCES[0]))
    explorer.layer.value = 2
    assert explorer.shown == (SENTENCES[0], 2, 0)
    explorer.head.value = 1
    assert explorer.shown == (SENTENCES[0], 2, 1)
    torch.testing.assert_close(explorer.weights, maps[2][1])
    drawn = explorer.figure.axes[0]
    assert drawn.get_title() == "Layer 2, head 1"
    assert (drawn.images[0].get_array() == maps[2][1].numpy()).all()


def test_explorer_dropdown_switches_sentence(model, tokenizer):
    explorer = attention_explorer(model, tokenizer, SENTENCES)
    explorer.sentence.value = SENTENCES[1]
    assert explorer.shown == (SENTENCES[1], 0, 0)
    assert explorer.tokens == list(SENTENCES[1])
    assert explorer.weights.shape == (len(SENTENCES[1]), len(SENTENCES[1]))


def test_explorer_update_moves_the_controls(model, tokenizer):
    explorer = attention_explorer(model, tokenizer, SENTENCES)
    weights = explorer.update(sentence=SENTENCES[1], layer=1, head=1)
    assert (explorer.sentence.value, explorer.layer.value, explorer.head.value) == (SENTENCES[1], 1, 1)
    torch.testing.assert_close(weights, attention_maps(model, tokenizer.encode(SENTENCES[1]))[1][1])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"layer": 3}, "layer"), ({"head": -1}, "head"), ({"sentence": "unknown"}, "sentence")],
)
def test_explorer_update_rejects_out_of_range_settings(model, tokenizer, kwargs, name):
    explorer = attention_explorer(model, tokenizer, SENTENCES)
    with pytest.raises(ValueError, match=name):
        explorer.update(**kwargs)
    assert explorer.shown == (SENTENCES[0], 0, 0)


def test_widgets_reject_a_model_that_is_not_a_gpt(tokenizer):
    with pytest.raises(TypeError, match="model"):
        attention_maps(torch.nn.Linear(2, 2), [0, 1])
    with pytest.raises(TypeError, match="model"):
        attention_explorer(torch.nn.Linear(2, 2), tokenizer, SENTENCES)


def test_explorer_needs_sentences(model, tokenizer):
    with pytest.raises(ValueError, match="sentences"):
        attention_explorer(model, tokenizer, [])
