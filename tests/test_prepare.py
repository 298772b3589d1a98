"""Tests for token files: prepare (in process and from the command line), meta.json checks, memmap batches."""

import json

import numpy as np
import pytest
import tiktoken
from cli_runner import run_cli

from minigpt_lib.prepare import (
    find_documents,
    load_tokens,
    prepare_token_files,
    read_meta,
    split_documents,
)
from minigpt_lib.tokenizer import get_tokenizer

EOT = 50256
WORDS = ["the", "Verdict", "émigré", "naïve", "1908", "!!", "can't", "we'll", "  ", "日本語", "café", "—"]
WORDS.append("<|endoftext|>")  # literal text, encoded as ordinary text, not as the separator


def make_document(rng: np.random.Generator, n_lines: int) -> str:
    """Lines of random words with the separators that trip tokenizers: blank lines, CRLF, tabs, trailing spaces."""
    lines = []
    for _ in range(n_lines):
        words = rng.choice(WORDS, size=rng.integers(0, 12))
        ending = rng.choice(["\n", "\n", "\n\n", "\r\n", " \n", "\t\n", "\n\n\n"])
        lines.append(" ".join(words) + ending)
    return "".join(lines)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder of 12 documents (one in a subfolder, one hidden and one .json that are skipped) and a loose file."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    (root / "books" / "nested").mkdir(parents=True)
    for i in range(11):
        folder = root / "books" / ("nested" if i == 3 else "")
        (folder / f"doc{i:02d}.txt").write_text(make_document(rng, int(rng.integers(1, 60))), encoding="utf-8")
    (root / "books" / ".hidden.txt").write_text("not a document", encoding="utf-8")
    (root / "books" / "data.json").write_text("{}", encoding="utf-8")
    (root / "extra.md").write_text(make_document(rng, 5), encoding="utf-8")
    return root


def expected_ids(path) -> list[int]:
    return get_tokenizer("gpt2").encode_ordinary(path.read_bytes().decode("utf-8")) + [EOT]  # no newline translation


def test_find_documents_lists_text_files_sorted_skipping_hidden(corpus):
    found = find_documents([corpus / "books", corpus / "extra.md"])
    names = [p.name for p in found]
    assert names == [f"doc{i:02d}.txt" for i in range(11) if i != 3] + ["doc03.txt", "extra.md"]


@pytest.mark.parametrize("workers", [1, 2])
def test_token_files_hold_tiktoken_ids_plus_one_separator_per_document(corpus, tmp_path, workers):
    meta = prepare_token_files(
        [corpus / "books", corpus / "extra.md"], tmp_path, val_fraction=0.25, workers=workers, progress=False
    )
    documents = find_documents([corpus / "books", corpus / "extra.md"])
    splits = split_documents(len(documents), 0.25, 0)
    for split in ("train", "val"):
        ids = np.fromfile(tmp_path / f"{split}.bin", dtype=np.uint16)
        wanted = [i for path, s in zip(documents, splits, strict=True) if s == split for i in expected_ids(path)]
        np.testing.assert_array_equal(ids, wanted)
        assert meta[split]["tokens"] == len(wanted) == (tmp_path / f"{split}.bin").stat().st_size // 2
        assert meta[split]["documents"] == splits.count(split)
    assert meta["val"]["documents"] == 3  # round(0.25 * 12)
    assert [s["tokens"] for s in meta["sources"]] == [len(expected_ids(p)) for p in documents]
    assert meta["tokenizer"] == "gpt2" and meta["eot_token"] == EOT and meta["dtype"] == "uint16"
    assert read_meta(tmp_path) == json.loads((tmp_path / "meta.json").read_text())


def test_split_is_by_document_deterministic_and_seeded():
    assert split_documents(10, 0.3, seed=1) == split_documents(10, 0.3, seed=1)
    assert split_documents(10, 0.3, seed=1) != split_documents(10, 0.3, seed=2)
    assert split_documents(10, 0.3, seed=1).count("val") == 3
    assert split_documents(2, 0.01, seed=0).count("val") == 1  # at least one
    assert split_documents(2, 0.99, seed=0).count("train") == 1  # and one left to train on
    assert split_documents(1, 0.0, seed=0) == ["train"]


def test_meta_records_sources_with_their_sha256(corpus, tmp_path):
    import hashlib

    meta = prepare_token_files([corpus / "extra.md", corpus / "books"], tmp_path, workers=1, progress=False)
    first = meta["sources"][0]
    data = (corpus / "extra.md").read_bytes()
    assert first["path"] == str(corpus / "extra.md") and first["bytes"] == len(data)
    assert first["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("chunk_bytes", [16, 100, 1000])
def test_a_document_read_in_chunks_gives_exactly_the_whole_documents_ids(tmp_path, chunk_bytes):
    rng = np.random.default_rng(chunk_bytes)
    text = make_document(rng, 300) + "one line with no break at all " * 50
    (tmp_path / "big.txt").write_text(text, encoding="utf-8")
    meta = prepare_token_files([tmp_path / "big.txt"], tmp_path / "out", val_fraction=0.0, chunk_bytes=chunk_bytes,
                               workers=2, progress=False)  # fmt: skip
    ids = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16)
    np.testing.assert_array_equal(ids, expected_ids(tmp_path / "big.txt"))
    assert meta["val"]["tokens"] == 0


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt: no such file or folder"):
        prepare_token_files([tmp_path / "missing.txt"], tmp_path / "out", progress=False)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("fine\n")
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 text \(byte 3 is 0xe9\)"):
        prepare_token_files([tmp_path / "ok.txt", tmp_path / "latin1.txt"], tmp_path / "out", progress=False,
                            workers=1)  # fmt: skip
    assert not (tmp_path / "out" / "train.bin").exists()  # nothing half-written is left behind
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: folder holds no text files"):
        prepare_token_files([tmp_path / "empty"], tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="needs at least 2 documents, got 1"):
        prepare_token_files([tmp_path / "ok.txt"], tmp_path / "out", progress=False)


def test_a_tokenizer_with_ids_beyond_uint16_is_refused(tmp_path):
    gpt2 = get_tokenizer("gpt2")
    big = tiktoken.Encoding(
        "big", pat_str=gpt2._pat_str, mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 70_000},
    )  # fmt: skip
    (tmp_path / "a.txt").write_text("text\n")
    with pytest.raises(ValueError, match="'big' has 70,001 ids, but token files store uint16 ids"):
        prepare_token_files([tmp_path / "a.txt"], tmp_path / "out", tokenizer=big, val_fraction=0, progress=False)


@pytest.fixture()
def prepared(corpus, tmp_path):
    prepare_token_files([corpus / "books"], tmp_path, val_fraction=0.2, workers=1, progress=False)
    return tmp_path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format", "other/1", "field 'format': expected 'minigpt-token-files/1', got 'other/1'"),
        ("vocab_size", 70_000, r"field 'vocab_size': expected an integer in \[1, 65536\], got 70000"),
        ("train.tokens", -1, "field 'train.tokens': expected a non-negative integer, got -1"),
        ("sources.2.sha256", "xyz", "field 'sources.2.sha256': expected 64 hex digits, got 'xyz'"),
        ("val", None, "field 'val': expected an object, got None"),
        ("dtype", True, "field 'dtype': expected 'uint16', got True"),
    ],
)
def test_read_meta_names_the_file_and_the_wrong_field(prepared, field, value, message):
    meta = json.loads((prepared / "meta.json").read_text())
    *parents, last = field.split(".")
    node = meta
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    (prepared / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"meta.json: {message}"):
        read_meta(prepared)


def test_read_meta_refuses_a_missing_field_and_a_cut_short_token_file(prepared):
    meta = json.loads((prepared / "meta.json").read_text())
    del meta["train"]["documents"]
    (prepared / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="meta.json: field 'train.documents' is missing"):
        read_meta(prepared)
    meta["train"]["documents"] = 1
    (prepared / "meta.json").write_text(json.dumps(meta))
    data = (prepared / "val.bin").read_bytes()
    (prepared / "val.bin").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="val.bin: holds .* bytes, but .*meta.json promises"):
        load_tokens(prepared, "val")


# --------------------------------------------------------------------------------------------------
# Command line


def test_cli_prepare_writes_the_same_files(corpus, tmp_path):
    result = run_cli("prepare", str(corpus / "books"), str(corpus / "extra.md"), "--out", str(tmp_path / "cli"),
                     "--val-fraction", "0.25", "--workers", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    prepare_token_files([corpus / "books", corpus / "extra.md"], tmp_path / "api", val_fraction=0.25,
                        workers=1, progress=False)  # fmt: skip
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()
    assert "train: " in result.stdout and "tokens" in result.stdout


def test_cli_prepare_errors_are_one_line_naming_the_file(tmp_path):
    result = run_cli("prepare", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "nope.txt: no such file or folder" in result.stderr


def test_a_killed_runs_temporary_files_are_cleared(corpus, tmp_path):
    (tmp_path / ".train.bin.abc123.partial").write_bytes(b"half a file")
    prepare_token_files([corpus / "books"], tmp_path, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "train.bin", "val.bin"]
