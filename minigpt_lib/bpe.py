"""Byte-level BPE with a vocabulary and merges read from a model file: the tokenizer of SmolLM2 (and Llama 3, Qwen...).

Same algorithm as GPT-2's tokenizer (chapter 1): text is split into pieces (words, single digits,
punctuation runs, whitespace), each piece's UTF-8 bytes are mapped to printable characters, and merges are
applied in rank order. Only the tables differ: 49,152 tokens and 48,900 merges learned on SmolLM2's data,
plus special tokens such as ``<|im_start|>`` that mark the turns of a chat. The merging itself runs in
Hugging Face's ``tokenizers`` library (Rust), built here from the tables rather than from a ``tokenizer.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers


class ByteLevelBPETokenizer:
    """Encode text to token ids and back with a byte-level BPE vocabulary; special tokens are matched in the text.

    ``encode(str) -> list[int]`` and ``decode(list[int]) -> str`` like tiktoken's encodings, so
    :func:`minigpt_lib.tokenizer.text_to_token_ids` and :func:`minigpt_lib.generate.complete` accept it.
    """

    def __init__(self, backend: Tokenizer, eos_token: str) -> None:
        self._backend = backend
        self.n_vocab = backend.get_vocab_size(with_added_tokens=True)
        self.special_tokens = {
            token.content: token_id for token_id, token in backend.get_added_tokens_decoder().items() if token.special
        }
        if eos_token not in self.special_tokens:
            raise ValueError(f"eos_token: {eos_token!r} is not one of the special tokens {list(self.special_tokens)}")
        self.eos_token = eos_token
        self.eos_id = self.special_tokens[eos_token]

    @classmethod
    def from_tables(
        cls, tokens: Sequence[str], merges: Sequence[str], special: Sequence[str], eos_token: str
    ) -> ByteLevelBPETokenizer:
        """Build from the vocabulary (id order), the merges (``"Ġ t"``, best first) and the special tokens.

        That is how a GGUF file stores a tokenizer (``tokenizer.ggml.tokens``, ``tokenizer.ggml.merges``,
        token types); SmolLM2 splits digits one by one before the usual GPT-2 splitting (llama.cpp's "smollm").
        """
        vocab = {token: i for i, token in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise ValueError(f"tokens: expected {len(tokens)} distinct tokens, got {len(vocab)} distinct")
        pairs = []
        for merge in merges:
            parts = merge.split(" ")
            if len(parts) != 2 or parts[0] + parts[1] not in vocab:
                raise ValueError(f"merges: expected 'left right' whose join is a token, got {merge!r}")
            pairs.append((parts[0], parts[1]))
        backend = Tokenizer(models.BPE(vocab, pairs))
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special])
        return cls(backend, eos_token)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], eos_token: str) -> ByteLevelBPETokenizer:
        """Load a Hugging Face ``tokenizer.json`` (the form the model's Hub repository publishes)."""
        return cls(Tokenizer.from_file(os.fspath(path)), eos_token)

    def encode(self, text: str, *, allowed_special: Any = "all") -> list[int]:
        """Token ids of ``text``; special tokens written in it (``<|im_end|>``) become their single id.

        ``allowed_special`` exists for tiktoken's signature: special tokens are always recognized, as in
        ``transformers``, because chat prompts are written with them.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens`` (special tokens included); bytes that do not form whole UTF-8 characters give '�'."""
        tokens = [int(t) for t in tokens]
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"tokens: expected ids in [0, {self.n_vocab - 1}], got {bad[:5]}")
        return self._backend.decode(tokens, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int:
        """The id of one vocabulary entry, e.g. ``"<|im_end|>"``."""
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"token: {token!r} is not in the vocabulary")
        return token_id
