"""Tests for minigpt_lib.tokenizer: GPT-2 BPE via tiktoken, the tensor helpers and CharTokenizer."""

import json

import pytest
import tiktoken
import torch

from minigpt_lib.tokenizer import CharTokenizer, get_tokenizer, text_to_token_ids, token_ids_to_text


def test_gpt2_encoding():
    tokenizer = get_tokenizer()
    assert tokenizer.n_vocab == 50257
    assert tokenizer.encode("Hello, I am") == [15496, 11, 314, 716]
    assert tokenizer.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    assert tokenizer.encode("Every day holds a") == [6109, 1110, 6622, 257]


def test_tokenizer_is_loaded_once():
    assert get_tokenizer() is get_tokenizer("gpt2")


def test_unknown_encoding_name_is_not_disguised():
    with pytest.raises(ValueError, match="no-such-encoding"):
        get_tokenizer("no-such-encoding")


def test_text_to_token_ids_is_a_batch_of_one():
    ids = text_to_token_ids("Hello, I am")
    assert ids.dtype == torch.long
    assert ids.shape == (1, 4)
    assert ids.tolist() == [[15496, 11, 314, 716]]


@pytest.mark.parametrize("text", ["Hello, I am", "  spaces\tand\nnewlines  ", "naïve café ☕ 日本", ""])
def test_round_trip(text):
    ids = text_to_token_ids(text)
    assert ids.shape == (1, len(get_tokenizer().encode(text)))
    assert token_ids_to_text(ids) == text


def test_token_ids_to_text_accepts_1d_2d_and_lists():
    ids = [15496, 11, 314, 716]
    assert token_ids_to_text(torch.tensor([ids])) == "Hello, I am"
    assert token_ids_to_text(torch.tensor(ids)) == "Hello, I am"
    assert token_ids_to_text(ids) == "Hello, I am"
    with pytest.raises(ValueError, match=r"token_ids: expected shape \(1, tokens\) or \(tokens,\), got \(2, 2\)"):
        token_ids_to_text(torch.tensor([[1, 2], [3, 4]]))


def test_end_of_text_is_allowed():
    ids = text_to_token_ids("Hi.<|endoftext|>Bye")
    assert 50256 in ids[0].tolist()
    assert ids[0].tolist().count(50256) == 1
    assert token_ids_to_text(ids) == "Hi.<|endoftext|>Bye"
    assert text_to_token_ids("<|endoftext|>").tolist() == [[50256]]


def test_text_must_be_a_string():
    with pytest.raises(TypeError, match="text: expected a str, got list"):
        text_to_token_ids(["Hello"])


def test_missing_tokenizer_files_name_the_cache_variable(monkeypatch):
    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent/cache")
    get_tokenizer.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"TIKTOKEN_CACHE_DIR='/nonexistent/cache' does not hold them") as info:
            get_tokenizer("gpt2")
        assert "ConnectionError: no network" in str(info.value)
        assert isinstance(info.value.__cause__, ConnectionError)
        monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
        with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR is not set"):
            get_tokenizer("gpt2")
    finally:
        get_tokenizer.cache_clear()  # failed loads are not cached; the next call loads the real files again
        monkeypatch.undo()
    assert get_tokenizer().encode("Hello, I am") == [15496, 11, 314, 716]


def test_char_tokenizer_round_trip():
    text = "hello world, hello!"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    assert tok.n_vocab == len(set(text)) == 10
    ids = tok.encode(text)
    assert len(ids) == len(text) and all(0 <= i < tok.n_vocab for i in ids)
    assert ids[:2] == [tok.chars.index("h"), tok.chars.index("e")]
    assert tok.decode(ids) == text
    assert tok.encode("", allowed_special={"<|endoftext|>"}) == []


def test_char_tokenizer_works_with_the_tensor_helpers():
    tok = CharTokenizer.from_text("abc ")
    ids = text_to_token_ids("cab a", tok)
    assert ids.tolist() == [[3, 1, 2, 0, 1]]
    assert token_ids_to_text(ids, tok) == "cab a"


def test_char_tokenizer_unknown_character():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"text: character 'z' is not in this tokenizer's 3-character vocabulary"):
        tok.encode("abz")


def test_char_tokenizer_bad_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, 2\], got \[3, -1\]"):
        tok.decode([0, 3, -1])


def test_char_tokenizer_needs_single_characters():
    with pytest.raises(ValueError, match="chars: expected at least one character, got none"):
        CharTokenizer("")
    with pytest.raises(ValueError, match="chars: expected single characters, got 'ab'"):
        CharTokenizer(["ab", "c"])
    with pytest.raises(ValueError, match="chars: expected single characters, got 7"):
        CharTokenizer([7])


@pytest.mark.parametrize("text", ["", None, b"abc"])
def test_char_tokenizer_from_an_empty_or_non_text_says_what_is_needed(text):
    if text == "":
        error, message = ValueError, "text: is empty, but a character-level tokenizer takes its vocabulary"
    else:
        error, message = TypeError, "text: expected a str"
    with pytest.raises(error, match=message):
        CharTokenizer.from_text(text)


def test_char_tokenizer_serialization():
    tok = CharTokenizer.from_text("the quick brown fox\n")
    data = json.loads(json.dumps(tok.to_dict()))
    assert data == {"type": "char", "chars": "".join(sorted(set("the quick brown fox\n")))}
    restored = CharTokenizer.from_dict(data)
    assert restored.chars == tok.chars
    assert restored.encode("quick fox") == tok.encode("quick fox")


@pytest.mark.parametrize(
    "data",
    [
        {"type": "char", "chars": "ba"},  # not sorted: every id would decode to another character
        {"type": "char", "chars": "aab"},  # duplicates shift the ids too
        {"type": "char", "chars": ""},
        {"type": "char", "chars": ["a", "b"]},
        {"type": "char"},
    ],
)
def test_char_tokenizer_from_dict_refuses_what_to_dict_never_writes(data):
    with pytest.raises(ValueError, match=r"tokenizer\['chars'\]: expected the non-empty string of distinct, sorted"):
        CharTokenizer.from_dict(data)


@pytest.mark.parametrize("data", [None, [], {"type": "tiktoken", "chars": "ab"}])
def test_char_tokenizer_from_dict_needs_the_char_type(data):
    with pytest.raises(ValueError, match=r"tokenizer: expected \{'type': 'char', 'chars': ...\}"):
        CharTokenizer.from_dict(data)
