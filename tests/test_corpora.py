"""Tests for minigpt_lib.corpora: named corpora, paths, real downloads from a local HTTP server."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from cli_runner import run_cli

from minigpt_lib import corpora
from minigpt_lib.corpora import CORPORA, Corpus, DownloadError, data_dir, download_file, load_text
from minigpt_lib.utils import cache_dir

BODY = b"A small public-domain text, served by the test.\n" * 20
SHA = hashlib.sha256(BODY).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves BODY correctly, altered, cut short (Content-Length too large) or as a server error."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        Handler.requests.append(self.path)
        if self.path == "/error":
            self.send_error(500, "broken on purpose")
            return
        body = BODY.replace(b"small", b"SMALL") if self.path == "/tampered" else BODY
        self.send_response(200)
        self.send_header(
            "Content-Length", str(len(body) + (100 if self.path == "/truncated" else 0))
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MINIGPT_DATA_DIR", str(folder))
    return folder


def register(monkeypatch, url):
    monkeypatch.setitem(CORPORA, "tiny", Corpus("tiny.txt", url, SHA, "test text"))


def test_the_verdict_from_the_shared_data_folder():
    text = load_text("the-verdict")
    assert len(text) == 20479
    assert text.startswith("I HAD always thought Jack Gisburn")
    assert corpora.sha256_of(data_dir() / "the-verdict.txt") == CORPORA["the-verdict"].sha256


def test_tiny_shakespeare_from_the_shared_data_folder():
    text = load_text("tinyshakespeare")
    assert len(text.encode("utf-8")) == 1_115_394
    assert text.startswith("First Citizen:")


def test_good_download_is_checked_cached_and_reused(server, cache, monkeypatch):
    register(monkeypatch, f"{server}/good")
    Handler.requests.clear()
    assert load_text("tiny") == BODY.decode()
    assert [p.name for p in cache.iterdir()] == ["tiny.txt"]
    assert load_text("tiny") == BODY.decode()
    assert Handler.requests == ["/good"]  # the second call read the cache


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("tampered", "sha256 mismatch"),
        ("truncated", f"stopped after {len(BODY)} of {len(BODY) + 100} bytes"),
        ("error", "500"),
    ],
)
def test_failed_download_leaves_nothing_behind(server, cache, monkeypatch, route, reason):
    url = f"{server}/{route}"
    register(monkeypatch, url)
    with pytest.raises(DownloadError) as info:
        load_text("tiny")
    message = str(info.value)
    assert reason in message
    assert url in message and str(cache) in message and "save it as" in message
    assert list(cache.iterdir()) == []


def test_unreachable_server_is_a_download_error(tmp_path):
    closed_port = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        download_file(closed_port, SHA, tmp_path / "x.txt", timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_cached_file_with_wrong_checksum_is_refused_not_deleted(cache, monkeypatch, server):
    register(monkeypatch, f"{server}/good")
    cache.mkdir()
    (cache / "tiny.txt").write_text("someone else's text")
    with pytest.raises(ValueError, match="Move or delete it"):
        load_text("tiny")
    assert (cache / "tiny.txt").read_text() == "someone else's text"


def test_paths_and_unknown_names(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("my own text", encoding="utf-8")
    assert load_text(path) == load_text(str(path)) == "my own text"
    with pytest.raises(FileNotFoundError, match="known corpus names: the-verdict"):
        load_text("no-such-corpus")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_text(tmp_path)
    with pytest.raises(TypeError, match="name_or_path"):
        load_text(42)


def test_data_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_DATA_DIR", str(tmp_path / "x"))
    assert data_dir() == tmp_path / "x"
    monkeypatch.delenv("MINIGPT_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "minigpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dir() == Path.home() / ".cache" / "minigpt"


def test_data_dir_is_the_shared_cache_folder_helper(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIGPT_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data_dir() == cache_dir("MINIGPT_DATA_DIR") == tmp_path / "minigpt"


def test_sha256_in_upper_case_is_the_same_checksum(server, cache, monkeypatch):
    monkeypatch.setitem(CORPORA, "tiny", Corpus("tiny.txt", f"{server}/good", SHA.upper(), "test text"))
    assert load_text("tiny") == BODY.decode()  # downloaded and accepted
    assert load_text("tiny") == BODY.decode()  # the cached copy is accepted too
    assert download_file(f"{server}/good", SHA.upper(), cache / "again.txt").read_bytes() == BODY


@pytest.mark.parametrize("bad", ["abc", SHA[:-1], SHA + "0", "g" * 64, None])
def test_malformed_sha256_is_refused_before_downloading(server, tmp_path, bad):
    Handler.requests.clear()
    with pytest.raises(ValueError, match="sha256: expected 64 hexadecimal digits"):
        download_file(f"{server}/good", bad, tmp_path / "x.txt")
    assert Handler.requests == [] and list(tmp_path.iterdir()) == []


def test_tampered_download_is_refused_even_with_the_checksum_in_upper_case(server, cache, monkeypatch):
    monkeypatch.setitem(CORPORA, "tiny", Corpus("tiny.txt", f"{server}/tampered", SHA.upper(), "test text"))
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        load_text("tiny")
    assert list(cache.iterdir()) == []


def test_unknown_corpus_name_in_corpus_path():
    with pytest.raises(ValueError, match="name: unknown corpus 'nope'; known corpus names: the-verdict"):
        corpora.corpus_path("nope")


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"byte 0 \(b'\\x89'\) is not valid utf-8"),  # an image
        ("café".encode("latin-1"), r"byte 3 \(b'\\xe9'\) is not valid utf-8"),  # Latin-1 text
        ("hello".encode("utf-16"), r"byte 0 \(b'\\xff'\) is not valid utf-8"),  # UTF-16 with its byte-order mark
        ("hello".encode("utf-16-le"), "character 1 is a NUL"),  # UTF-16 without a mark decodes, but to NULs
        (b"text\x00\x00\x00binary tail", "character 4 is a NUL"),
    ],
)
def test_non_text_files_are_named_with_what_was_expected(tmp_path, content, detail):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}: expected a text file in utf-8, but {detail}") as info:
        load_text(path)
    assert "\n" not in str(info.value) and "convert it to UTF-8" in str(info.value)


def test_other_encodings_are_read_when_asked_for(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café".encode("latin-1"))
    assert load_text(path, encoding="latin-1") == "café"


def test_a_binary_training_file_is_one_line_on_the_command_line(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 4)
    result = run_cli("train", str(path), "--out", str(tmp_path / "run"), "--max-steps", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: expected a text file in utf-8, but byte 128 (b'\\x80') is not valid utf-8: "
        "a binary file, or text in another encoding? (convert it to UTF-8)"
    ]
    assert not (tmp_path / "run").exists()
