"""Token files: many documents tokenized once into ``train.bin`` and ``val.bin``, read back by memory mapping.

Training on a corpus larger than memory cannot start by reading the text into a string. Instead the text is
tokenized once, document by document, and the ids are appended to two flat files of ``uint16`` (two bytes per
token: GPT-2's 50,257 ids fit below 65,536). After every document comes the end-of-text token (50256 in GPT-2),
so the model sees where one text stops and the next begins. Whole documents go either to training or to
validation, never half to each, so no validation text leaks into training.

Exactness: the ids in the files are exactly ``encode_ordinary(document) + [eot]`` for each document, in order
(text that merely looks like ``<|endoftext|>`` is encoded as ordinary text). Large documents are read in chunks of
about ``chunk_bytes``, cut only at a line break ``\\n`` whose neighbouring bytes on both sides are printable ASCII
(not whitespace). GPT-2's pre-tokenizer never joins characters across such a break, nor does the break's match
depend on what follows, so tokenizing the chunks one by one gives the same ids as tokenizing the document whole.
A document without such a break is tokenized whole. ``tests/test_prepare.py`` checks this against tiktoken.

Memory: documents and chunks are tokenized by a pool of worker processes, at most ``4 * workers`` chunks in
flight, so memory stays near ``4 * workers * chunk_bytes`` whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tqdm.auto import tqdm

from .tokenizer import get_tokenizer
from .utils import atomic_write, check_number, check_positive_int, remove_stale_temporaries

META_NAME = "meta.json"
SPLITS = ("train", "val")
TOKEN_DTYPE = np.uint16
FORMAT = "minigpt-token-files/1"
TEXT_SUFFIXES = (".txt", ".md", ".text")
CHUNK_BYTES = 1 << 22  # 4 MiB of text per task


@dataclass(frozen=True)
class Chunk:
    """Bytes ``start`` to ``end`` of document ``doc`` (its index in the corpus); ``last`` ends the document."""

    doc: int
    path: str
    start: int
    end: int
    last: bool


def find_documents(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The documents named by ``inputs``: each file as given, and each text file under each folder.

    A folder contributes its files ending in .txt, .md or .text, recursively, in sorted order (hidden files
    and folders skipped), so the same folder always gives the same corpus.
    """
    if not inputs:
        raise ValueError("inputs: expected at least one file or folder")
    documents = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in TEXT_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise FileNotFoundError(
                    f"{path}: folder holds no text files (expected names ending in {', '.join(TEXT_SUFFIXES)})"
                )
            documents.extend(found)
        elif path.is_file():
            documents.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return documents


def check_token_dtype(encoding: tiktoken.Encoding) -> None:
    """Refuse a tokenizer whose largest id does not fit in ``uint16`` (the token files' two bytes per id)."""
    limit = np.iinfo(TOKEN_DTYPE).max + 1
    if encoding.n_vocab > limit:
        raise ValueError(
            f"tokenizer: {encoding.name!r} has {encoding.n_vocab:,} ids, but token files store uint16 ids "
            f"(at most {limit:,}); use a tokenizer with a vocabulary of at most {limit:,} tokens"
        )


def _last_safe_break(window: bytes) -> int:
    """Index after the last ``\\n`` in ``window`` between two printable, non-space ASCII bytes; -1 if none."""
    i = window.rfind(b"\n", 1, len(window) - 1)
    while i > 0:
        if 0x21 <= window[i - 1] <= 0x7E and 0x21 <= window[i + 1] <= 0x7E:
            return i + 1
        i = window.rfind(b"\n", 1, i)
    return -1


def _scan(doc: int, path: Path, chunk_bytes: int) -> tuple[list[Chunk], str, int]:
    """Cut document ``doc`` into chunks of at least ``chunk_bytes`` at safe line breaks; also its sha256 and size.

    Reads the file once, in blocks, so a document larger than memory is never held whole.
    """
    digest = hashlib.sha256()
    chunks, start, offset, cut, tail = [], 0, 0, 0, b""
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(min(chunk_bytes, 1 << 20)), b""):
                digest.update(block)
                # The last two bytes of the previous block come along: a break needs a byte on each side.
                window, window_start = tail + block, offset - len(tail)
                offset += len(block)
                found = _last_safe_break(window)
                if found > 0:
                    cut = window_start + found  # the first byte after the line break
                if cut - start >= chunk_bytes:
                    chunks.append(Chunk(doc, str(path), start, cut, last=False))
                    start = cut
                tail = window[-2:]
    except OSError as exc:
        raise OSError(f"{path}: cannot read ({exc.strerror or exc})") from None
    chunks.append(Chunk(doc, str(path), start, offset, last=True))
    return chunks, digest.hexdigest(), offset


_worker_encoding: tiktoken.Encoding | None = None


def _init_worker(encoding: tiktoken.Encoding) -> None:
    """Give a worker process its tokenizer once, not with every chunk."""
    global _worker_encoding
    _worker_encoding = encoding


def _tokenize_chunk(chunk: Chunk) -> np.ndarray:
    """Read ``chunk`` from disk, decode it as UTF-8 and return its ids as ``uint16`` (``eot`` after the last)."""
    try:
        with open(chunk.path, "rb") as f:
            f.seek(chunk.start)
            data = f.read(chunk.end - chunk.start)
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{chunk.path}: not UTF-8 text (byte {chunk.start + exc.start} is {data[exc.start]:#04x}); "
            "convert it to UTF-8 first"
        ) from None
    except OSError as exc:
        raise OSError(f"{chunk.path}: cannot read ({exc.strerror or exc})") from None
    ids = _worker_encoding.encode_ordinary(text)
    if chunk.last:
        ids.append(_worker_encoding.eot_token)
    return np.asarray(ids, dtype=TOKEN_DTYPE)


def _chunks_in_order(chunks: Iterator[Chunk], encoding: tiktoken.Encoding, workers: int) -> Iterator[tuple]:
    """Yield ``(chunk, ids)`` in corpus order; ``workers`` processes tokenize, ``4 * workers`` chunks ahead."""
    if workers == 1:
        _init_worker(encoding)
        for chunk in chunks:
            yield chunk, _tokenize_chunk(chunk)
        return
    # Forked workers start at once (spawned ones would import torch again); they only run tiktoken and numpy.
    with get_context("fork" if "fork" in get_all_start_methods() else "spawn").Pool(
        workers, initializer=_init_worker, initargs=(encoding,)
    ) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(_tokenize_chunk, (chunk,))))
            if len(pending) >= 4 * workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


def split_documents(n_documents: int, val_fraction: float, seed: int) -> list[str]:
    """Which split each document goes to: ``round(val_fraction * n)`` of them, chosen by ``seed``, to ``"val"``.

    At least one document goes to validation when ``val_fraction > 0`` (and at least one stays for training),
    so a corpus of n documents needs n >= 2. The choice depends only on n, the fraction and the seed.
    """
    check_number("val_fraction", val_fraction, 0.0, 1.0)
    n_val = round(val_fraction * n_documents)
    if val_fraction > 0:
        if n_documents < 2:
            raise ValueError(
                f"val_fraction: splitting by document needs at least 2 documents, got {n_documents}; "
                "give more files (or cut the text into several), or use val_fraction=0"
            )
        n_val = min(max(n_val, 1), n_documents - 1)
    val = set(random.Random(seed).sample(range(n_documents), n_val))
    return ["val" if i in val else "train" for i in range(n_documents)]


def prepare_token_files(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    tokenizer: str | tiktoken.Encoding = "gpt2",
    val_fraction: float = 0.1,
    seed: int = 0,
    workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize the documents in ``inputs`` into ``out_dir/train.bin``, ``val.bin`` and ``meta.json``.

    ``inputs``: files and folders (see :func:`find_documents`); ``val_fraction`` of the documents (chosen by
    ``seed``, :func:`split_documents`) go to ``val.bin``. ``workers`` processes tokenize in parallel (default:
    all CPUs). Each file is written whole or not at all (:func:`~minigpt_lib.utils.atomic_write`), ``meta.json``
    last. Returns the metadata that ``meta.json`` holds.
    """
    encoding = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    check_token_dtype(encoding)
    check_positive_int("chunk_bytes", chunk_bytes)
    workers = check_positive_int("workers", workers) if workers is not None else os.cpu_count() or 1
    documents = find_documents(inputs)
    splits = split_documents(len(documents), val_fraction, seed)
    out_dir = Path(out_dir)
    remove_stale_temporaries(out_dir)  # left by a run that was killed while writing
    total_bytes = sum(path.stat().st_size for path in documents)
    sources = [{"path": str(path), "split": split} for path, split in zip(documents, splits, strict=True)]

    def chunks() -> Iterator[Chunk]:
        for i, path in enumerate(documents):
            doc_chunks, sources[i]["sha256"], sources[i]["bytes"] = _scan(i, path, chunk_bytes)
            yield from doc_chunks

    counts = {split: 0 for split in SPLITS}
    doc_tokens = [0] * len(documents)
    with (
        atomic_write(out_dir / "train.bin") as train_tmp,
        atomic_write(out_dir / "val.bin") as val_tmp,
        open(train_tmp, "wb") as train_file,
        open(val_tmp, "wb") as val_file,
        tqdm(total=total_bytes, unit="B", unit_scale=True, disable=not progress, desc="tokenizing") as bar,
    ):
        files = {"train": train_file, "val": val_file}
        for chunk, ids in _chunks_in_order(chunks(), encoding, workers):
            ids.tofile(files[splits[chunk.doc]])
            counts[splits[chunk.doc]] += len(ids)
            doc_tokens[chunk.doc] += len(ids)
            bar.update(chunk.end - chunk.start)
    for source, n_tokens in zip(sources, doc_tokens, strict=True):
        source["tokens"] = n_tokens
    meta = {
        "format": FORMAT,
        "tokenizer": encoding.name,
        "vocab_size": encoding.n_vocab,
        "eot_token": encoding.eot_token,
        "dtype": "uint16",
        "val_fraction": val_fraction,
        "seed": seed,
        "train": {"file": "train.bin", "tokens": counts["train"], "documents": splits.count("train")},
        "val": {"file": "val.bin", "tokens": counts["val"], "documents": splits.count("val")},
        "sources": sources,
    }
    with atomic_write(out_dir / META_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


# --------------------------------------------------------------------------------------------------
# Reading token files back


def _field(meta: dict, path: Path, name: str, kind: type | tuple, check=None, expected: str = "") -> Any:
    """``meta[name]`` (``"train.tokens"`` looks inside ``meta["train"]``), refused unless of ``kind``."""
    value: Any = meta
    for key in name.split("."):
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise ValueError(f"{path}: field {name!r} is missing")
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind) or (check and not check(value)):
        want = expected or (kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind))
        raise ValueError(f"{path}: field {name!r}: expected {want}, got {value!r}")
    return value


def read_meta(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``data_dir/meta.json`` written by :func:`prepare_token_files`, field by field.

    Also checks that each ``.bin`` file holds exactly the number of tokens the metadata promises, so a
    cut-short or foreign file is refused here rather than read as wrong tokens.
    """
    data_dir = Path(data_dir)
    path = data_dir / META_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; create token files with 'python -m minigpt_lib prepare FILE... --out DIR'"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    _field(meta, path, "format", str, lambda v: v == FORMAT, repr(FORMAT))
    _field(meta, path, "tokenizer", str)
    _field(meta, path, "vocab_size", int, lambda v: 0 < v <= 65536, "an integer in [1, 65536]")
    _field(meta, path, "eot_token", int, lambda v: 0 <= v < meta["vocab_size"], "an id below vocab_size")
    _field(meta, path, "dtype", str, lambda v: v == "uint16", "'uint16'")
    for i in range(len(_field(meta, path, "sources", list))):
        _field(meta, path, f"sources.{i}.path", str)
        _field(meta, path, f"sources.{i}.split", str, lambda v: v in SPLITS, "'train' or 'val'")
        _field(meta, path, f"sources.{i}.sha256", str, lambda v: re.fullmatch("[0-9a-f]{64}", v), "64 hex digits")
        _field(meta, path, f"sources.{i}.bytes", int, lambda v: v >= 0, "a non-negative integer")
        _field(meta, path, f"sources.{i}.tokens", int, lambda v: v >= 1, "a positive integer")
    for split in SPLITS:
        _field(meta, path, split, dict, expected="an object")
        name = f"{split}.bin"
        _field(meta, path, f"{split}.file", str, lambda v, name=name: v == name, repr(name))
        tokens = _field(meta, path, f"{split}.tokens", int, lambda v: v >= 0, "a non-negative integer")
        _field(meta, path, f"{split}.documents", int, lambda v: v >= 0, "a non-negative integer")
        bin_path = data_dir / f"{split}.bin"
        if not bin_path.is_file():
            raise FileNotFoundError(f"{bin_path}: no such file (listed in {path})")
        size = bin_path.stat().st_size
        if size != tokens * np.dtype(TOKEN_DTYPE).itemsize:
            raise ValueError(
                f"{bin_path}: holds {size:,} bytes, but {path} promises {tokens:,} uint16 tokens "
                f"({tokens * 2:,} bytes); prepare the token files again"
            )
    return meta


def load_tokens(data_dir: str | os.PathLike[str], split: str) -> np.memmap:
    """The ``split`` (``"train"`` or ``"val"``) token ids of ``data_dir`` as a read-only memory map.

    Nothing is read until used: the operating system pages in the parts a batch touches.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    meta = read_meta(data_dir)
    if meta[split]["tokens"] == 0:
        raise ValueError(f"{Path(data_dir) / f'{split}.bin'}: holds no tokens")
    return np.memmap(Path(data_dir) / f"{split}.bin", dtype=TOKEN_DTYPE, mode="r")


def tokens_per_byte(meta: dict[str, Any]) -> float:
    """Tokens per byte of source text (separators included): how much a byte of this corpus costs to train on."""
    n_bytes = sum(source["bytes"] for source in meta["sources"])
    return (meta["train"]["tokens"] + meta["val"]["tokens"]) / n_bytes if n_bytes else math.nan
