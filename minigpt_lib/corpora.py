"""Training texts: the sample corpus by name (downloaded once, sha256-checked) or a file by path.

Files live in :func:`data_dir` (``$MINIGPT_DATA_DIR``, else a per-user cache folder). A download
goes to a temporary file in that folder and is renamed into place only after its checksum matches
(:func:`~minigpt_lib.utils.atomic_write`), so a failed, cut-short or tampered download never leaves
a file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .utils import atomic_write, cache_dir


@dataclass(frozen=True)
class Corpus:
    """Where a named text comes from and the sha256 it must have."""

    filename: str
    url: str
    sha256: str
    description: str


#: Texts known by name; tests point ``url`` at a local server.
CORPORA: dict[str, Corpus] = {
    "the-verdict": Corpus(
        filename="the-verdict.txt",
        url=(
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
            "ch02/01_main-chapter-code/the-verdict.txt"
        ),
        sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        description='Edith Wharton, "The Verdict" (1908), public domain; 20,479 bytes',
    ),
    "tinyshakespeare": Corpus(
        filename="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        description="Tiny Shakespeare: about 40,000 lines of Shakespeare's plays, public domain; 1,115,394 bytes",
    ),
}


class DownloadError(RuntimeError):
    """A corpus could not be fetched, or what arrived was not the expected file."""


def data_dir() -> Path:
    """The folder that holds downloaded corpora: ``$MINIGPT_DATA_DIR``, else ``~/.cache/minigpt``.

    ``$XDG_CACHE_HOME`` replaces ``~/.cache`` when set, as on most Linux desktops.
    """
    return cache_dir("MINIGPT_DATA_DIR")


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks so large files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, out, timeout: float) -> str:
    """Stream ``url`` into the open binary file ``out``; return the sha256 of the bytes received.

    Raises :class:`DownloadError` when the server sends fewer bytes than its Content-Length
    promised.
    """
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected = response.headers.get("Content-Length")
        for chunk in iter(lambda: response.read(1 << 16), b""):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
    if expected is not None and received != int(expected):
        raise DownloadError(f"the transfer stopped after {received} of {int(expected)} bytes")
    return digest.hexdigest()


def _check_sha256(sha256: object) -> str:
    """``sha256`` in lower case, if it is 64 hexadecimal digits (either case, as sites print both)."""
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256: expected 64 hexadecimal digits, got {sha256!r:.80}")
    return sha256.lower()


def download_file(
    url: str, sha256: str, dest: str | os.PathLike[str], timeout: float = 30.0
) -> Path:
    """Download ``url`` to ``dest`` and keep it only if its sha256 equals ``sha256``.

    The bytes go to a temporary file beside ``dest`` that is renamed onto ``dest`` after the check
    (:func:`~minigpt_lib.utils.atomic_write`), so ``dest`` is either absent or complete.
    """
    sha256 = _check_sha256(sha256)
    dest = Path(dest)
    try:
        with atomic_write(dest) as tmp:
            with open(tmp, "wb") as out:
                got = _fetch(url, out, timeout)
            if got != sha256:
                raise DownloadError(f"sha256 mismatch: received {got}, expected {sha256}")
            os.chmod(tmp, 0o644)  # temporary files are owner-only; a cached text may be shared
    # URLError, HTTPError and timeouts are OSErrors; a malformed URL is a ValueError
    except (DownloadError, OSError, ValueError, http.client.HTTPException) as exc:
        raise DownloadError(
            f"could not download {url} into {dest.parent}: {exc}. Without network access, fetch "
            f"the file elsewhere and save it as {dest} (or set MINIGPT_DATA_DIR to a folder that "
            f"holds {dest.name})"
        ) from exc
    return dest


def corpus_path(name: str) -> Path:
    """Local path of the named corpus, downloading it first if it is not in :func:`data_dir` yet.

    A file already there must have the registered sha256; a different one is refused, not
    overwritten.
    """
    if name not in CORPORA:
        raise ValueError(f"name: unknown corpus {name!r}; known corpus names: {', '.join(sorted(CORPORA))}")
    corpus = CORPORA[name]
    path = data_dir() / corpus.filename
    if not path.exists():
        return download_file(corpus.url, corpus.sha256, path)
    found = sha256_of(path)
    if found != _check_sha256(corpus.sha256):
        raise ValueError(
            f"{path} has sha256 {found}, but corpus {name!r} must have {corpus.sha256}: the file "
            f"is damaged or a different text. Move or delete it to download a fresh copy from "
            f"{corpus.url}"
        )
    return path


def load_text(name_or_path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    """Return the text of a known corpus (``"the-verdict"``) or of a text file at a path.

    Names are looked up before paths; the corpus is downloaded and checked on first use. A file that
    is not text in ``encoding`` (a binary file, UTF-16) is refused with its name, never decoded into
    characters a model would silently learn.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path: expected a corpus name or a path, got {type(name_or_path).__name__}"
        )
    if isinstance(name_or_path, str) and name_or_path in CORPORA:
        path = corpus_path(name_or_path)
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            what = (
                "is a folder, not a text file"
                if path.is_dir()
                else "is neither a known corpus nor a file"
            )
            raise FileNotFoundError(
                f"name_or_path: {str(name_or_path)!r} {what}; "
                f"known corpus names: {', '.join(sorted(CORPORA))}"
            )
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: expected a text file in {encoding}, but byte {exc.start} "
            f"({exc.object[exc.start : exc.start + 1]!r}) is not valid {encoding}: a binary file, or text "
            "in another encoding? (convert it to UTF-8)"
        ) from None
    if "\x00" in text:
        raise ValueError(
            f"{path}: expected a text file in {encoding}, but character {text.index(chr(0))} is a NUL: "
            "a binary file, or text in UTF-16? (convert it to UTF-8)"
        )
    return text
