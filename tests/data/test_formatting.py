"""Chat formatting: response-only labels, left truncation, padding; the DataModule's subsample."""
from __future__ import annotations

import pytest

from qtha.backbone import build_tiny_tokenizer
from qtha.config import ConfigError, DataConfig
from qtha.data import load_splits
from qtha.data.formatting import IGNORE_INDEX, collate, encode_chat, split_prompt_response
from qtha.data.module import ChatDataModule, subsample

MESSAGES = [{"role": "user", "content": "小明有 12 个苹果，吃了 5 个。还剩几个？"},
            {"role": "assistant", "content": "12 - 5 = 7。答案是 \\boxed{7}。"}]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_no_prompt_token_has_a_label_and_response_is_fully_labelled(tok):
    enc = encode_chat(tok, MESSAGES, max_length=512)
    prompt, response = split_prompt_response(tok, MESSAGES)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert all(label == IGNORE_INDEX for label in enc.labels[:n_prompt])
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert tok.decode(enc.labels[n_prompt:]).startswith(MESSAGES[1]["content"])
    assert not enc.truncated


def test_left_truncation_keeps_the_response(tok):
    full = encode_chat(tok, MESSAGES, max_length=512)
    short = encode_chat(tok, MESSAGES, max_length=40)
    assert short.truncated and len(short.input_ids) == 40
    assert short.input_ids == full.input_ids[-40:] and short.labels == full.labels[-40:]


def test_example_must_end_with_assistant(tok):
    with pytest.raises(ValueError, match="end with an assistant message"):
        encode_chat(tok, MESSAGES[:1], max_length=64)


def test_collate_pads_right_and_masks(tok):
    a = encode_chat(tok, MESSAGES, 512)
    b = encode_chat(tok, [MESSAGES[0], {"role": "assistant", "content": "7"}], 512)
    batch = collate([a, b], pad_id=tok.pad_token_id)
    n_b = len(b.input_ids)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][1, n_b:].sum() == 0 and batch["attention_mask"][1, :n_b].all()
    assert (batch["labels"][1, n_b:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n_b:] == tok.pad_token_id).all()


def test_subsample_is_nested_and_seeded():
    pool = list(range(100))
    assert subsample(pool, 30, 1) == subsample(pool, 60, 1)[:30]
    assert subsample(pool, 30, 1) != subsample(pool, 30, 2)
    with pytest.raises(ConfigError, match=r"data.size=101 is outside the training pool; allowed: 1..100"):
        subsample(pool, 101, 1)


def test_datamodule_rows_disjoint_and_summarised(tok):
    cfg = DataConfig(name="synthetic_math", size=40, test_size=8, pool_size=120, max_length=96)
    dm = ChatDataModule(cfg, tok, seed=3, batch_size=4)
    dm.setup()
    train_q = {r["messages"][0]["content"] for r in dm.train_rows}
    test_q = {r["messages"][0]["content"] for r in dm.test_rows}
    assert len(train_q) == 40 and len(test_q) == 8 and not train_q & test_q
    s = dm.summary()
    assert s["train"]["rows"] == 40 and s["test"]["rows"] == 8
    assert 0 < s["train"]["response_tokens"] < s["train"]["tokens"]
    assert 0.0 <= s["train"]["truncation_rate"] <= 1.0
    assert len(list(dm.train_dataloader())) == 10 and len(list(dm.val_dataloader())) == 2


def test_data_order_is_deterministic_for_a_seed(tok):
    cfg = DataConfig(name="synthetic_math", size=24, test_size=4, pool_size=80, max_length=96)

    def order(seed: int) -> list[list[int]]:
        dm = ChatDataModule(cfg, tok, seed=seed, batch_size=4)
        dm.setup()
        return [b["input_ids"][:, :8].tolist() for b in dm.train_dataloader()]

    assert order(5) == order(5)
    assert order(5) != order(6)


def test_unknown_dataset_is_one_line():
    with pytest.raises(ConfigError, match="data.name='nope' is unknown; allowed: synthetic_math"):
        load_splits(DataConfig(name="nope"))
