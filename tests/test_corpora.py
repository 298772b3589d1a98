"""Tests for minigpt_lib.corpora: named corpora, paths, real downloads from a local HTTP server."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from minigpt_lib import corpora
from minigpt_lib.corpora import CORPORA, Corpus, DownloadError, data_dir, download_file, load_text

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
