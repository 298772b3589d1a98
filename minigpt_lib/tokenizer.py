"""Text to token ids and back: GPT-2's byte-pair encoding (via tiktoken) and a character-level tokenizer."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import tiktoken
import torch


class Tokenizer(Protocol):
    """What the rest of the package needs from a tokenizer (tiktoken's ``Encoding`` fits)."""

    n_vocab: int

    def encode(self, text: str, *, allowed_special: Any = ...) -> list[int]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...


@functools.cache
def get_tokenizer(name: str = "gpt2") -> tiktoken.Encoding:
    """Load a tiktoken encoding once and reuse it; ``"gpt2"`` is the 50,257-token GPT-2 BPE.

    tiktoken downloads its files on first use unless ``TIKTOKEN_CACHE_DIR`` names a folder that has them.
    """
    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        raise
    except Exception as exc:  # tiktoken raises connection, HTTP or OS errors when it cannot fetch its files
        folder = os.environ.get("TIKTOKEN_CACHE_DIR")
        where = f"TIKTOKEN_CACHE_DIR={folder!r} does not hold them" if folder else "TIKTOKEN_CACHE_DIR is not set"
        raise RuntimeError(
            f"could not load the {name!r} tokenizer files ({type(exc).__name__}: {exc}); {where}. "
            "Without internet, set TIKTOKEN_CACHE_DIR to a folder with tiktoken's cached files "
            "(in this project: ../shared/tiktoken_cache) before starting Python."
        ) from exc


def text_to_token_ids(text: str, tokenizer: Tokenizer | None = None) -> torch.Tensor:
    """Encode ``text`` as a batch of one: a long tensor of shape ``(1, tokens)``."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    tokenizer = tokenizer or get_tokenizer()
    ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(ids, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor | Sequence[int], tokenizer: Tokenizer | None = None) -> str:
    """Decode token ids, given as ``(1, tokens)``, ``(tokens,)`` or a list, back to text."""
    tokenizer = tokenizer or get_tokenizer()
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() == 2 and token_ids.shape[0] == 1:
            token_ids = token_ids[0]
        if token_ids.dim() != 1:
            raise ValueError(f"token_ids: expected shape (1, tokens) or (tokens,), got {tuple(token_ids.shape)}")
        token_ids = token_ids.tolist()
    return tokenizer.decode(list(token_ids))


class CharTokenizer:
    """One token per character, with the vocabulary taken from a training text (as in char-level GPTs).

    Tiny vocabulary, long sequences: the opposite trade-off to BPE.
    """

    def __init__(self, chars: Iterable[str]) -> None:
        distinct = set(chars)
        bad = [c for c in distinct if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"chars: expected single characters, got {bad[0]!r}")
        if not distinct:
            raise ValueError("chars: expected at least one character, got none")
        self.chars = sorted(distinct)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from every distinct character of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        if not text:
            raise ValueError(
                "text: is empty, but a character-level tokenizer takes its vocabulary from the training text, "
                "so the text needs at least one character"
            )
        return cls(text)

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    def encode(self, text: str, *, allowed_special: Any = None) -> list[int]:
        """Map each character to its id; ``allowed_special`` is accepted for tiktoken compatibility."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise ValueError(
                f"text: character {exc.args[0]!r} is not in this tokenizer's {self.n_vocab}-character vocabulary"
            ) from None

    def decode(self, tokens: Sequence[int]) -> str:
        """Map ids back to characters."""
        tokens = list(tokens)
        bad = [i for i in tokens if not isinstance(i, int) or not 0 <= i < self.n_vocab]
        if bad:
            raise ValueError(f"tokens: expected ids in [0, {self.n_vocab - 1}], got {bad[:5]!r}")
        return "".join(self.chars[i] for i in tokens)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description, for checkpoints."""
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        """Rebuild a tokenizer saved with :meth:`to_dict`.

        The characters must be exactly as saved (distinct, sorted): any other order would give every id
        another character, and the model's text would come out silently scrambled.
        """
        if not isinstance(data, dict) or data.get("type") != "char":
            raise ValueError(f"tokenizer: expected {{'type': 'char', 'chars': ...}}, got {data!r:.80}")
        chars = data.get("chars")
        if not isinstance(chars, str) or not chars or list(chars) != sorted(set(chars)):
            raise ValueError(
                f"tokenizer['chars']: expected the non-empty string of distinct, sorted characters that to_dict "
                f"writes, got {chars!r:.80}"
            )
        return cls(chars)
