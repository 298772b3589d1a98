"""Tests for minigpt_lib.data: sliding windows, next-token targets, batching and validation."""

import pytest
import torch

from minigpt_lib.corpora import load_text
from minigpt_lib.data import GPTDataset, create_dataloader, train_val_split
from minigpt_lib.tokenizer import CharTokenizer, get_tokenizer


def book_windows(ids, max_length, stride):
    """The chapter-2 loop of Raschka's book, written out as the reference."""
    starts = range(0, len(ids) - max_length, stride)
    return [ids[i : i + max_length] for i in starts], [
        ids[i + 1 : i + max_length + 1] for i in starts
    ]


def test_windows_and_targets_exact_values():
    ds = GPTDataset(list(range(10)), max_length=4, stride=2)
    assert len(ds) == 3
    assert [ds[i][0].tolist() for i in range(3)] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert [ds[i][1].tolist() for i in range(3)] == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8]]
    assert ds[0][0].dtype == torch.long


@pytest.mark.parametrize(
    ("n", "max_length", "stride"),
    [(5, 4, 1), (10, 4, 4), (11, 4, 4), (17, 3, 5), (9, 8, 1), (40, 6, 2)],
)
def test_windows_match_the_book_loop(n, max_length, stride):
    ids = [(7 * i + 3) % 50 for i in range(n)]
    ds = GPTDataset(ids, max_length=max_length, stride=stride)
    inputs, targets = book_windows(ids, max_length, stride)
    assert [ds[i][0].tolist() for i in range(len(ds))] == inputs
    assert [ds[i][1].tolist() for i in range(len(ds))] == targets


def test_text_is_tokenized_with_gpt2_and_endoftext_allowed():
    ds = GPTDataset("Every effort moves you<|endoftext|>", get_tokenizer(), max_length=4, stride=1)
    assert ds.token_ids.tolist() == [6109, 3626, 6100, 345, 50256]
    assert ds[0][1].tolist() == [3626, 6100, 345, 50256]


def test_first_batches_of_the_verdict_are_the_books():
    text = load_text("the-verdict")
    loader = create_dataloader(text, batch_size=1, max_length=4, stride=1, shuffle=False)
    first, second = list(zip(range(2), loader, strict=False))
    assert first[1][0].tolist() == [[40, 367, 2885, 1464]]
    assert first[1][1].tolist() == [[367, 2885, 1464, 1807]]
    assert second[1][0].tolist() == [[367, 2885, 1464, 1807]]
    inputs, targets = next(
        iter(create_dataloader(text, batch_size=8, max_length=4, stride=4, shuffle=False))
    )
    assert inputs.shape == targets.shape == (8, 4)
    assert inputs[:, 0].tolist() == [40, 1807, 10899, 15632, 922, 568, 1049, 284]
    torch.testing.assert_close(inputs[:, 1:], targets[:, :-1])


def test_shuffled_batches_follow_the_global_seed():
    text = load_text("the-verdict")

    def first_batches(seed):
        torch.manual_seed(seed)
        loader = create_dataloader(text, batch_size=2, max_length=4, stride=4)
        return [batch[0].tolist() for _, batch in zip(range(3), loader, strict=False)]

    assert first_batches(123) == first_batches(123)
    assert first_batches(123)[0] == [[326, 7284, 35924, 262], [460, 1560, 345, 287]]
    assert first_batches(123) != first_batches(124)


def test_char_tokenizer_windows():
    text = "hello world, hello GPT"
    tok = CharTokenizer.from_text(text)
    ds = GPTDataset(text, tok, max_length=5, stride=5)
    assert ds.token_ids.tolist() == tok.encode(text)
    assert tok.decode(ds[1][0].tolist()) == " worl"
    assert tok.decode(ds[1][1].tolist()) == "world"
    loader = create_dataloader(
        text, batch_size=2, max_length=5, stride=5, shuffle=False, tokenizer=tok
    )
    assert next(iter(loader))[0].shape == (2, 5)


def test_too_short_text_says_how_many_tokens_are_needed():
    with pytest.raises(ValueError, match=r"4 tokens .* max_length \+ 1 = 5"):
        GPTDataset("Every effort moves you", get_tokenizer(), max_length=4, stride=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"max_length": -3}, ValueError, "max_length"),
        ({"max_length": "4"}, TypeError, "max_length"),
        ({"stride": 0}, ValueError, "stride"),
        ({"stride": True}, TypeError, "stride"),
    ],
)
def test_bad_sizes_name_the_argument(kwargs, error, name):
    args = {"batch_size": 1, "max_length": 2, "stride": 1, **kwargs}
    with pytest.raises(error, match=name):
        create_dataloader("abcdefghij", tokenizer=CharTokenizer.from_text("abcdefghij"), **args)


def test_loader_that_would_be_empty_is_refused():
    tok = CharTokenizer.from_text("abcdefghij")
    with pytest.raises(ValueError, match=r"2 window\(s\), fewer than batch_size=3"):
        create_dataloader("abcdefghij", batch_size=3, max_length=4, stride=4, tokenizer=tok)
    loader = create_dataloader(
        "abcdefghij", batch_size=3, max_length=4, stride=4, drop_last=False, tokenizer=tok
    )
    assert len(loader) == 1


def test_train_val_split():
    train, val = train_val_split("abcdefghij", 0.9)
    assert (train, val) == ("abcdefghi", "j")
    with pytest.raises(ValueError, match="train_ratio"):
        train_val_split("abc", 1.0)
    with pytest.raises(TypeError, match="text"):
        train_val_split(["abc"], 0.5)
