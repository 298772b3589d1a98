"""Fine-tuning: the date task, exact match, training steps on masked batches, a whole run with resumption."""

import json

import pytest
import torch

from minigpt_lib.finetune import (
    ADAPTER_NAME,
    STATE_NAME,
    answers,
    batches,
    chat_prompt,
    date_examples,
    exact_match,
    load_finetuned,
    response_loss,
    run_finetune,
    train_epoch,
)
from minigpt_lib.instruct import InstructionExample, encode_example
from minigpt_lib.llama import LlamaModel
from minigpt_lib.lora import apply_lora, lora_layers
from minigpt_lib.train import make_adamw

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"vocab_size": 260, "context_length": 256, "emb_dim": 32, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2,
        "hidden_dim": 64, "rope_base": 10000.0, "norm_eps": 1e-5, "tie_weights": True}
END = 256


class ByteTokenizer:
    """Bytes as token ids, 256 as the end token: enough to run the fine-tuning code on a tiny model."""

    eos_id = END

    def encode(self, text):
        return list(text.replace("<|im_end|>", "\0").encode())

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode(errors="replace")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return LlamaModel(TINY)


def test_date_examples_are_deterministic_distinct_and_correct():
    examples = date_examples(50, seed=3)
    assert examples == date_examples(50, seed=3) and examples != date_examples(50, seed=4)
    assert len({e.input for e in examples}) == 50
    for e in examples:
        year, month, day = map(int, e.output.split("-"))
        assert str(year) in e.input and str(day) in e.input and len(e.output) == 10


def test_chat_prompt_is_a_user_turn_ending_where_the_answer_begins():
    text = chat_prompt(InstructionExample("Do it.", "on this", "done"))
    assert "<|im_start|>user\nDo it.\n\non this<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_batches_cover_every_pair_once_in_a_seeded_order():
    pairs = [([i], [i + 100]) for i in range(10)]
    seen = [row[0].item() for b in batches(pairs, 4, pad_id=0, seed=1) for row in b.inputs]
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    assert seen == [row[0].item() for b in batches(pairs, 4, pad_id=0, seed=1) for row in b.inputs]


def test_answers_group_equal_lengths_and_match_one_by_one():
    model = tiny_model()
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10, 11]]
    together = answers(model, prompts, END, max_new_tokens=5)
    alone = [answers(model, [p], END, max_new_tokens=5)[0] for p in prompts]
    assert together == alone


def test_training_on_masked_batches_learns_the_response():
    tokenizer, model = ByteTokenizer(), tiny_model()
    examples = [InstructionExample("Say", "", "ok")] * 4
    pairs = [encode_example(e, tokenizer.encode, END, chat_prompt) for e in examples]
    apply_lora(model, ["W_query", "W_value", "up"], rank=4, alpha=8)
    before = response_loss(model, pairs, 2, 0)
    optimizer = make_adamw(model, lr=3e-2, weight_decay=0.0)
    for epoch in range(15):
        train_epoch(model, optimizer, pairs, 2, 0, seed=epoch)
    assert response_loss(model, pairs, 2, 0) < before / 4
    accuracy, texts = exact_match(model, examples[:1], tokenizer.encode, tokenizer.decode, END)
    assert (accuracy, texts) == (1.0, ["ok"])


def _settings(**changes):
    return {"epochs": 1, "lr": 1e-2, "batch_size": 2, "full": False, "lora_rank": 2, "lora_alpha": 4.0,
            "val_fraction": 0.25, "seed": 1, "base_model": "tiny", **changes}


def test_run_writes_an_adapter_and_resumes_to_the_same_result(tmp_path):
    examples = date_examples(8, seed=5)
    straight = run_finetune(tiny_model(), ByteTokenizer(), examples, tmp_path / "a", settings=_settings(epochs=2),
                            progress=False, log=lambda _: None)
    run_finetune(tiny_model(), ByteTokenizer(), examples, tmp_path / "b", settings=_settings(epochs=1),
                 progress=False, log=lambda _: None)
    assert json.loads((tmp_path / "b" / STATE_NAME).read_text())["epochs_done"] == 1
    resumed = run_finetune(tiny_model(), ByteTokenizer(), examples, tmp_path / "b", settings=_settings(epochs=2),
                           resume=True, progress=False, log=lambda _: None)
    for name, layer in lora_layers(straight).items():
        torch.testing.assert_close(lora_layers(resumed)[name].lora_B, layer.lora_B)
    loaded = load_finetuned(tiny_model(), tmp_path / "b", base_model="tiny")
    x = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(x), resumed.eval()(x))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ADAPTER_NAME, STATE_NAME, "optimizer.safetensors"]


def test_full_fine_tuning_writes_the_whole_model(tmp_path):
    model = run_finetune(tiny_model(), ByteTokenizer(), date_examples(4, seed=5), tmp_path,
                         settings=_settings(full=True), progress=False, log=lambda _: None)
    loaded = load_finetuned(tiny_model(), tmp_path, base_model="tiny")
    x = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_resume_with_other_settings_or_nothing_saved_is_refused(tmp_path):
    examples = date_examples(4, seed=5)
    with pytest.raises(FileNotFoundError, match="--resume"):
        run_finetune(tiny_model(), ByteTokenizer(), examples, tmp_path, settings=_settings(), resume=True)
    run_finetune(tiny_model(), ByteTokenizer(), examples, tmp_path, settings=_settings(), progress=False,
                 log=lambda _: None)
    with pytest.raises(ValueError, match=r"settings differ .*'lr': \(0.01, 0.5\)"):
        run_finetune(tiny_model(), ByteTokenizer(), examples, tmp_path, settings=_settings(lr=0.5, epochs=2),
                     resume=True)
    with pytest.raises(FileNotFoundError, match="holds neither"):
        load_finetuned(tiny_model(), tmp_path / "empty", base_model="tiny")


def test_train_steps_loss_is_the_masked_loss_on_padded_batches():
    from minigpt_lib.instruct import collate, masked_cross_entropy
    from minigpt_lib.train import NextTokenLoss

    model = tiny_model()
    batch = collate([([1, 2, 3], [4, 5]), ([6], [7, 8, 9, 10])], pad_id=0)
    with torch.no_grad():
        expected = masked_cross_entropy(model(batch.inputs), batch.targets)
        torch.testing.assert_close(NextTokenLoss(model)(batch.inputs, batch.targets), expected)
