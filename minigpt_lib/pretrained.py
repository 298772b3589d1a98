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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .corpora import download_file, sha256_of
from .model import GPTModel

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
    """The folder that holds downloaded models: ``$MINIGPT_MODELS_DIR``, else ``~/.cache/minigpt/models``.

    ``$XDG_CACHE_HOME`` replaces ``~/.cache`` when set.
    """
    folder = os.environ.get("MINIGPT_MODELS_DIR")
    if folder:
        return Path(folder).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "minigpt" / "models"


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


def hf_to_minigpt_state_dict(hf_state_dict: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename, transpose and split Hugging Face GPT-2 weights into a state dict for ``GPTModel(cfg)``.

    Accepts names with or without the ``transformer.`` prefix; raises ``ValueError`` naming any tensor that is
    missing, unexpected or of the wrong shape for ``cfg``.
    """
    weights = _strip_prefix(hf_state_dict)
    lm_head = weights.pop("lm_head.weight", None)
    shapes = _expected_hf_shapes(cfg)
    missing = [name for name in shapes if name not in weights]
    unexpected = [name for name in weights if name not in shapes]
    if missing or unexpected:
        raise ValueError(
            f"hf_state_dict: does not match a GPT-2 with n_layers={cfg['n_layers']}: "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(
                f"hf_state_dict[{name!r}]: expected shape {shape} for this config, got {tuple(weights[name].shape)}"
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
    cfg = config_from_hf(json.loads(config_file.read_text(encoding="utf-8")))
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
