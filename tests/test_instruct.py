"""Instruction data: validation errors, the prompt template, the split, the collate and the masked loss."""

import json

import pytest
import torch
import torch.nn.functional as F

from minigpt_lib.instruct import (
    IGNORE_INDEX,
    InstructionExample,
    alpaca_prompt,
    collate,
    encode_example,
    instruction_data_path,
    load_instruction_data,
    masked_cross_entropy,
    split_examples,
)

GOOD = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}


def _write(tmp_path, content):
    path = tmp_path / "data.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_loads_the_sample_dataset():
    examples = load_instruction_data()
    assert len(examples) == 1100
    assert all(isinstance(e, InstructionExample) for e in examples)
    assert instruction_data_path().name == "instruction-data.json"


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([GOOD, {"instruction": "x", "input": ""}], r"record 1: field 'output' is missing"),
        ([GOOD, GOOD, {**GOOD, "input": 7}], r"record 2: field 'input' must be a string, got int"),
        ([{**GOOD, "instruction": None}], r"record 0: field 'instruction' must be a string, got NoneType"),
        ([GOOD, "just text"], r"record 1: expected an object"),
        ({"instruction": "x"}, r"expected a JSON list of records, got dict"),
        ([], r"the list of records is empty"),
    ],
)
def test_bad_records_name_file_record_and_field(tmp_path, records, message):
    path = _write(tmp_path, records)
    with pytest.raises(ValueError, match=message) as info:
        load_instruction_data(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_empty_file_and_invalid_json_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"data.json: the file is empty"):
        load_instruction_data(_write(tmp_path, "  \n"))
    with pytest.raises(ValueError, match=r"data.json: invalid JSON at line 2, column 1"):
        load_instruction_data(_write(tmp_path, '[{"instruction": "x",\n}]'))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_instruction_data(tmp_path / "absent.json")


def test_alpaca_prompt_leaves_out_an_empty_input():
    with_input = alpaca_prompt(InstructionExample("Add.", "2 and 3", "5"))
    without = alpaca_prompt(InstructionExample("Say hi.", "", "Hi"))
    assert "### Input:\n2 and 3" in with_input and "### Input" not in without
    assert with_input.endswith("### Response:\n") and without.endswith("### Response:\n")


def test_split_is_deterministic_and_complete():
    examples = [InstructionExample(str(i), "", "") for i in range(100)]
    train, val, test = split_examples(examples, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert sorted(train + val + test, key=lambda e: int(e.instruction)) == examples
    assert split_examples(examples, 0.1, 0.2, seed=1) == (train, val, test)
    with pytest.raises(ValueError, match="val_fraction, test_fraction"):
        split_examples(examples, 0.6, 0.5)


def test_encode_example_appends_the_end_token():
    prompt, response = encode_example(InstructionExample("a", "", "bc"), lambda s: [ord(c) for c in s], 0,
                                      prompt=lambda e: e.instruction)
    assert (prompt, response) == ([97], [98, 99, 0])


def test_collate_pads_masks_and_ignores_prompt_targets():
    batch = collate([([1, 2, 3], [4, 5]), ([6], [7, 8])], pad_id=0)
    assert batch.inputs.tolist() == [[1, 2, 3, 4], [6, 7, 8, 0]]
    assert batch.targets.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 4, 5], [7, 8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch.padding_mask.tolist() == [[True] * 4, [True, True, True, False]]


def test_collate_cuts_to_max_length_and_refuses_an_empty_batch():
    batch = collate([([1, 2], [3, 4, 5, 6])], pad_id=0, max_length=3)
    assert batch.inputs.tolist() == [[1, 2, 3]] and batch.targets.tolist() == [[IGNORE_INDEX, 3, 4]]
    with pytest.raises(ValueError, match="pairs"):
        collate([], pad_id=0)


def test_padded_batch_loss_is_the_mean_over_response_tokens_of_unpadded_examples():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(20, 20)  # a stand-in "model": logits from the input token alone
    pairs = [([1, 2, 3], [4, 5]), ([6], [7, 8, 9, 10]), ([11, 12], [13])]
    batch = collate(pairs, pad_id=0)
    padded = masked_cross_entropy(emb(batch.inputs), batch.targets)
    per_token = []
    for prompt, response in pairs:
        seq = torch.tensor(prompt + response)
        losses = F.cross_entropy(emb(seq[:-1]), seq[1:], reduction="none")
        per_token.append(losses[len(prompt) - 1:])  # predictions of response tokens only
    torch.testing.assert_close(padded, torch.cat(per_token).mean())


def test_masked_loss_refuses_a_batch_with_nothing_to_learn():
    with pytest.raises(ValueError, match="no response token"):
        masked_cross_entropy(torch.zeros(1, 2, 5), torch.full((1, 2), IGNORE_INDEX))
