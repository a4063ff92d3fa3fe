"""The DataModule: nested seeded subsample, fixed disjoint test rows, summary, evaluation-only sets."""
from __future__ import annotations

import pytest

from qtha.backbone import build_tiny_tokenizer
from qtha.config import DataConfig
from qtha.errors import ConfigError
from qtha.data import check_data, load_splits
from qtha.data.module import ChatDataModule, subsample


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def shared_cfg(shared_data, name: str, folder: str, **kw) -> DataConfig:
    return DataConfig(name=name, path=str(shared_data / folder), **kw)


def test_subsample_is_nested_and_seeded():
    pool = list(range(100))
    assert subsample(pool, 30, 1) == subsample(pool, 60, 1)[:30]
    assert subsample(pool, 30, 1) != subsample(pool, 30, 2)
    with pytest.raises(ConfigError, match=r"data.size=101 is outside the training pool of data=x \(100 rows\); "
                                          r"allowed: 1..100"):
        subsample(pool, 101, 1, "x")


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
    assert s["train"]["assistant_turns"] == s["train"]["target_turns"] == 40
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
    with pytest.raises(ConfigError, match="data.name='nope' is unknown; allowed: ch_r1_math, cmath, cpsycound, "
                                          "gsm8k, jsonl, r1_distill_sft, synthetic_math"):
        load_splits(DataConfig(name="nope"))


def test_cpsycound_sizes_are_nested_and_the_test_set_fixed(shared_data, tok):
    """300 ⊂ 3000 in the paper's terms: a larger data.size extends a smaller one; seeds share the test."""
    def rows(size: int, seed: int) -> tuple[list[str], list[str]]:
        dm = ChatDataModule(shared_cfg(shared_data, "cpsycound", "cpsycound", size=size, test_size=16,
                                       max_length=256), tok, seed=seed, batch_size=4)
        dm.setup()
        return [r["id"] for r in dm.train_rows], [r["id"] for r in dm.test_rows]

    small, test_a = rows(8, seed=1)
    large, test_b = rows(24, seed=1)
    other, test_c = rows(8, seed=2)
    assert large[:8] == small and small != other
    assert test_a == test_b == test_c and not set(large) & set(test_a)


def test_cpsycound_summary_counts_turns_and_truncation(shared_data, tok):
    cfg = shared_cfg(shared_data, "cpsycound", "cpsycound", size=6, test_size=4, max_length=512)
    dm = ChatDataModule(cfg, tok, seed=0, batch_size=2)
    dm.setup()
    s = dm.summary()["train"]
    assert s["rows"] == 6 and s["truncation_rate"] == 1.0  # byte-level tokens: dialogues are ~2,300 long
    assert s["assistant_turns"] == sum(sum(m["role"] == "assistant" for m in r["messages"]) for r in dm.train_rows)
    assert 6 <= s["target_turns"] < s["assistant_turns"]
    assert all(len(e.input_ids) == 512 for e in dm.train_set)


def test_evaluation_only_set_sets_up_for_evaluation(shared_data, tok):
    cfg = shared_cfg(shared_data, "cmath", "cmath", test_size=8, max_length=128)
    dm = ChatDataModule(cfg, tok, seed=0, batch_size=4)
    dm.setup()
    assert dm.train_rows == [] and len(dm.test_rows) == 8 and len(list(dm.val_dataloader())) == 2


def test_training_on_an_evaluation_only_set_fails_before_any_model_loads(shared_data):
    from qtha.compose import compose_checked

    with pytest.raises(ConfigError) as err:
        compose_checked(["data=cmath", f"data.path={shared_data / 'cmath'}", "model=tiny_llama"])
    text = str(err.value)
    assert "data=cmath is an evaluation-only set" in text and "trainer.max_steps=0" in text and "\n" not in text
    assert compose_checked(["data=cmath", f"data.path={shared_data / 'cmath'}", "model=tiny_llama", "adapter=none"])


def test_the_selection_split_is_carved_from_the_pool_the_same_for_every_seed_and_size(tok):
    """data.val_size: held out of the training pool by data_seed, never trained on, a second validation loader."""
    def module(seed: int, size: int) -> ChatDataModule:
        dm = ChatDataModule(DataConfig(name="synthetic_math", size=size, test_size=4, pool_size=120, val_size=20,
                                       max_length=96), tok, seed=seed, batch_size=4)
        dm.setup()
        return dm

    a, b, c = module(1, 40), module(2, 40), module(1, 80)
    question = lambda rows: {r["messages"][0]["content"] for r in rows}  # noqa: E731
    assert len(a.heldout_rows) == 20 and question(a.heldout_rows) == question(b.heldout_rows) == question(c.heldout_rows)
    for dm in (a, b, c):
        assert not question(dm.heldout_rows) & question(dm.train_rows)
        assert not question(dm.heldout_rows) & question(dm.test_rows)
    assert question(a.train_rows) <= question(c.train_rows)            # sizes stay nested
    test, heldout = a.val_dataloader()
    assert len(list(heldout)) == 5 and a.summary()["heldout"]["rows"] == 20
    with pytest.raises(ConfigError, match=r"data.size=101 is outside the training pool of data=synthetic_math "
                                          r"\(120 rows less data.val_size=20\); allowed: 1..100"):
        check_data(DataConfig(name="synthetic_math", size=101, pool_size=120, val_size=20), allow_hub=False)


def _padding_share(dm: ChatDataModule) -> float:
    batches = list(dm.train_dataloader())
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1 - real / sum(b["attention_mask"].numel() for b in batches)


def test_length_batching_trains_the_same_rows_with_less_padding(tok):
    cfg = DataConfig(name="synthetic_math", size=64, test_size=4, pool_size=120, max_length=2048)
    dms = {}
    for batching in ("random", "length"):
        dms[batching] = ChatDataModule(DataConfig(**{**cfg.__dict__, "batching": batching}), tok, seed=3, batch_size=4)
        dms[batching].setup()
    rows = {k: sorted(i for b in dm.train_dataloader() for i in b["index"].tolist()) for k, dm in dms.items()}
    assert rows["random"] == rows["length"] == list(range(64))
    assert _padding_share(dms["length"]) < _padding_share(dms["random"]) / 2


@pytest.mark.parametrize("key, value, message", [
    ("batching", "sorted", "data.batching='sorted' is not allowed; allowed: random, length"),
    ("bucket_batches", 0, "data.bucket_batches=0 is not allowed; allowed: an int >= 1"),
])
def test_bad_batching_is_one_line(key, value, message):
    cfg = DataConfig(name="synthetic_math", **{key: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        check_data(cfg, allow_hub=False)
    assert "\n" not in str(err.value)
