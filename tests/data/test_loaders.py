"""Dataset loaders: the shared real slices, case files, hub fall-back, splits and one-line errors.

Rows written under ``tmp_path`` here are SYNTHETIC fixtures made up for the tests (marked
"synthetic" in their text); the real data are only the slices in ``../shared/data``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conftest import sampled
from qtha.compose import compose_checked
from qtha.config import DataConfig
from qtha.errors import ConfigError
from qtha.data import ch_r1_math, check_data, load_splits
from qtha.data.cpsycound import parse_case

HUB_SETS = ["cpsycound", "r1_distill_sft", "ch_r1_math", "gsm8k", "cmath"]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        compose_checked(overrides)
    assert "\n" not in str(err.value)
    return str(err.value)


# --------------------------------------------------------------------------- shared slices
def test_cpsycound_slice_maps_every_dialogue(shared_data):
    pool, test = load_splits(DataConfig(name="cpsycound", path=str(shared_data / "cpsycound")))
    train_rows, test_rows = read(shared_data / "cpsycound/train.jsonl"), read(shared_data / "cpsycound/test.jsonl")
    assert len(test) == len(test_rows) == 300
    # case_2274 and case_2301 repeat test dialogue case_1762 verbatim: left out of the pool
    assert len(train_rows) == 2784 and len(pool) == 2782
    assert [e["id"] for e in pool] == [r["id"] for r in train_rows if r["id"] not in ("case_2274", "case_2301")]
    assert [e["id"] for e in test] == [r["id"] for r in test_rows]
    by_id = {r["id"]: r for r in train_rows}
    for e in pool:
        source = by_id[e["id"]]["messages"]
        n = len(source)
        while source[n - 1]["role"] == "user":  # trailing client turns have nothing to answer them
            n -= 1
        assert e["messages"] == source[:n] and e["lang"] == "zh" and "answer" not in e
        assert e["messages"][0]["role"] == "user" and e["messages"][-1]["role"] == "assistant"
    ends_with_user = sum(r["ends_with"] == "user" for r in train_rows)
    assert ends_with_user == 643 and sum(len(e["messages"]) for e in pool) < sum(len(r["messages"]) for r in train_rows)


def test_gsm8k_slice_keeps_the_worked_solution_and_the_official_answer(shared_data):
    pool, test = load_splits(DataConfig(name="gsm8k", path=str(shared_data / "gsm8k")))
    rows = read(shared_data / "gsm8k/train.jsonl") + read(shared_data / "gsm8k/test.jsonl")
    assert (len(pool), len(test)) == (3000, 300)
    for e, r in zip(pool + test, rows, strict=True):
        assert e["messages"] == [{"role": "user", "content": r["question"]},
                                 {"role": "assistant", "content": r["answer"]}]
        assert e["answer"] == r["final_answer"] and e["lang"] == "en" and e["id"] == r["id"]


def test_cmath_is_an_evaluation_set(shared_data):
    pool, test = load_splits(DataConfig(name="cmath", path=str(shared_data / "cmath")))
    rows = read(shared_data / "cmath/test.jsonl")
    assert pool == [] and len(test) == 300
    assert [(e["messages"][0]["content"], e["answer"], e["lang"]) for e in test] == \
        [(r["input"], r["golden"], "zh") for r in rows]
    assert all(e["messages"][1]["content"] == e["answer"] for e in test)


@pytest.mark.parametrize("name", ["cpsycound", "gsm8k"])
def test_test_split_is_disjoint_from_the_pool(shared_data, name):
    pool, test = load_splits(DataConfig(name=name, path=str(shared_data / name)))
    assert not {e["id"] for e in pool} & {e["id"] for e in test}
    conversation = lambda e: json.dumps(e["messages"], ensure_ascii=False)  # noqa: E731
    assert not {conversation(e) for e in pool} & {conversation(e) for e in test}


def test_default_configs_find_the_shared_slices_offline(shared_data):
    for name, rows in (("cpsycound", 2782), ("gsm8k", 3000), ("cmath", 0)):
        cfg = compose_checked([f"data={name}", *(["adapter=none"] if name == "cmath" else [])]).data
        assert Path(cfg.path).resolve() == (shared_data / name).resolve()
        assert len(load_splits(cfg)[0]) == rows


def test_qtha_data_dir_moves_every_default_path(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    synthetic = {"question": "Synthetic: 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}
    write_jsonl(tmp_path / "gsm8k/train.jsonl", [synthetic] * 3)
    write_jsonl(tmp_path / "gsm8k/test.jsonl", [{**synthetic, "question": "Synthetic: 1 + 1?"}])
    monkeypatch.setenv("QTHA_DATA_DIR", str(tmp_path))
    cfg = compose_checked(["data=gsm8k", "data.size=3", "data.test_size=1"]).data
    assert cfg.path == f"{tmp_path}/gsm8k" and [len(s) for s in load_splits(cfg)] == [3, 1]


def test_data_size_beyond_the_pool_fails_before_any_model(shared_data):
    assert one_line_error(["data=gsm8k", "data.size=3001"]) == \
        "data.size=3001 is outside the training pool of data=gsm8k (3000 rows); allowed: 1..3000"
    assert "data=cpsycound (2782 rows)" in one_line_error(["data=cpsycound", "data.size=3000"])
    assert "data=synthetic_math (100 rows)" in one_line_error(["data.pool_size=100", "data.size=300"])


# --------------------------------------------------------------------------- CPsyCounD case files
CASE = (  # synthetic dialogue in the layout of the GitHub case_<n>.txt files
    "来访者：我最近总是失眠。（synthetic）\r\n\r\n"
    "心理咨询师：能说说失眠是从什么时候开始的吗？\r\n\r\n"
    "来访者：大概一个月前。\r\n\r\n\r\n"
    "心理咨询师：我们先试着放松一下。\r\n\r\n"
    "（放松训练过程中）\r\n\r\n"
    "心理咨询师:感觉怎么样？\n"
    "1. 呼吸是否平稳\n"
    "2. 肩膀是否放松\n\n"
    "来访者：好多了。\n\n"
    "来访者：\n"
)


def test_case_file_is_parsed_like_the_shared_slice(tmp_path):
    path = tmp_path / "case_7.txt"
    path.write_bytes(CASE.encode("utf-8"))
    row = parse_case(path)
    assert row.data["id"] == "case_7"
    assert row.data["messages"] == [
        {"role": "user", "content": "我最近总是失眠。（synthetic）"},
        {"role": "assistant", "content": "能说说失眠是从什么时候开始的吗？"},
        {"role": "user", "content": "大概一个月前。"},
        {"role": "assistant", "content": "我们先试着放松一下。\n（放松训练过程中）"},
        {"role": "assistant", "content": "感觉怎么样？\n1. 呼吸是否平稳\n2. 肩膀是否放松"},
        {"role": "user", "content": "好多了。"},
        {"role": "user", "content": ""},
    ]


def test_case_folder_loads_with_trailing_client_turns_dropped(tmp_path):
    for n in (0, 5, 10, 15):
        (tmp_path / f"case_{n}.txt").write_text(CASE.replace("synthetic", f"synthetic {n}"), encoding="utf-8")
    pool, test = load_splits(DataConfig(name="cpsycound", path=str(tmp_path), holdout_size=1, data_seed=42))
    assert len(test) == 1 and len(pool) == 3
    assert sorted(e["id"] for e in pool + test) == ["case_0", "case_10", "case_15", "case_5"]
    assert [e["id"] for e in pool] == sorted((e["id"] for e in pool), key=lambda s: int(s[5:]))  # by case number
    for e in pool + test:
        assert e["messages"][-1] == {"role": "assistant", "content": "感觉怎么样？\n1. 呼吸是否平稳\n2. 肩膀是否放松"}


def test_case_text_before_a_speaker_is_an_error(tmp_path):
    (tmp_path / "case_1.txt").write_text("synthetic preface\n来访者：你好。\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"case_1.txt:1: text before the first speaker label; expected each turn "
                                          r"to start with 来访者： or 心理咨询师："):
        load_splits(DataConfig(name="cpsycound", path=str(tmp_path)))


def test_github_case_layout_reproduces_the_shared_split(shared_data, tmp_path):
    """The shared 2,784/300 split is the case files' hold-out with data_seed=42: rebuild it from case files."""
    rows = read(shared_data / "cpsycound/train.jsonl") + read(shared_data / "cpsycound/test.jsonl")
    for r in rows:
        label = {"user": "来访者：", "assistant": "心理咨询师："}
        text = "\n\n".join(label[m["role"]] + m["content"] for m in r["messages"])
        (tmp_path / f"{r['id']}.txt").write_text(text.replace("\n", "\r\n") + "\r\n", encoding="utf-8")
    pool, test = load_splits(compose_checked(["data=cpsycound", f"data.path={tmp_path}"]).data)
    expected_test = [r["id"] for r in read(shared_data / "cpsycound/test.jsonl")]
    assert [e["id"] for e in test] == expected_test
    assert len(pool) == 2782 and not {e["id"] for e in pool} & set(expected_test)


# --------------------------------------------------------------------------- malformed rows
@pytest.mark.parametrize(("name", "line", "expected"), sampled([
    ("gsm8k", '{"question": "Synthetic?", "answer": "4\\n#### 4"', "invalid JSON"),
    ("gsm8k", '["synthetic", "list"]', "expected a JSON object, got list"),
    ("gsm8k", '{"question": "Synthetic?"}', "field 'answer' must be non-empty text, got None"),
    ("gsm8k", '{"question": "Synthetic?", "answer": "  "}', "field 'answer' must be non-empty text"),
    ("gsm8k", '{"question": "Synthetic?", "answer": "four"}', "field 'answer' has no '#### <number>' line"),
    ("cpsycound", '{"messages": [{"role": "user", "content": "synthetic"}, {"role": "assistant", "content": ""}]}',
     "messages[1] must be {'role': system|user|assistant, 'content': non-empty text}"),
    ("cpsycound", '{"messages": [{"role": "client", "content": "synthetic"}]}', "messages[0] must be"),
    ("cpsycound", '{"dialogue": "synthetic"}', "expected 'messages' (a list of {role, content}) or LLaMA-Factory"),
    ("jsonl", '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}',
     "the last message must be the assistant's (the training target), got role 'user'"),
    ("jsonl", '{"prompt": "synthetic", "response": "ok", "lang": "fr"}', "field 'lang' must be one of zh, en"),
    ("jsonl", '{"text": "synthetic"}', "expected 'messages' (a list of {role, content}) or 'prompt' and 'response'"),
], 3))
def test_malformed_row_names_file_and_line_before_any_model(tmp_path, name, line, expected):
    good = {"gsm8k": '{"question": "Synthetic: 1+1?", "answer": "1 + 1 = 2\\n#### 2"}',
            "cpsycound": '{"messages": [{"role": "user", "content": "synthetic"}, '
                         '{"role": "assistant", "content": "ok"}]}',
            "jsonl": '{"prompt": "synthetic", "response": "ok"}'}[name]
    (tmp_path / "train.jsonl").write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    (tmp_path / "test.jsonl").write_text(good.replace("1+1", "2+2").replace("synthetic", "other") + "\n",
                                         encoding="utf-8")
    text = one_line_error([f"data={name}", f"data.path={tmp_path}", "data.size=1"])
    assert text.startswith(f"{tmp_path / 'train.jsonl'}:3: ") and expected in text


# --------------------------------------------------------------------------- hub sets
@pytest.mark.parametrize("name", ["r1_distill_sft", "ch_r1_math"])
def test_hub_only_set_offline_is_one_line_naming_path_and_hub(name):
    cfg = compose_checked([f"data={name}", "allow_hub=true"]).data  # composes: the hub would be used
    text = one_line_error([f"data={name}"])
    assert text.startswith(f"data={name} has no local data at '") and cfg.hub_id in text
    assert "and the hub is off; allowed: allow_hub=true (with internet) to download" in text
    assert "data.path=<folder or .jsonl file>" in text


def test_jsonl_without_a_path_is_one_line():
    assert one_line_error(["data=jsonl"]).startswith("data=jsonl has no local data because data.path is unset")


@pytest.mark.parametrize("name", sampled(HUB_SETS, 2))
def test_every_hub_set_names_its_hub_id(name):
    cfg = compose_checked([f"data={name}", "allow_hub=true", *(["adapter=none"] if name == "cmath" else [])]).data
    assert cfg.hub_id and cfg.path


def test_hub_loading_offline_fails_with_a_clear_line():
    cfg = DataConfig(name="r1_distill_sft", hub_id="ServiceNow-AI/R1-Distill-SFT", hub_config="v0")
    with pytest.raises(ConfigError) as err:
        load_splits(cfg)
    text = str(err.value)
    assert "ServiceNow-AI/R1-Distill-SFT (config v0, split train) could not be loaded from the Hugging Face hub" \
        in text and "\n" not in text


def test_hub_path_splits_filters_and_maps_rows(tmp_path):
    """The hub code path end to end, offline: ``datasets``' json builder stands in for the hub repository."""
    rows = [{"input": f"synthetic 题 {i}", "reasoning_content": f"想 {i}", "content": f"答案 \\boxed{{{i}}}",
             "repo_name": "meta-math/GSM8K_zh" if i % 3 else "m-a-p/COIG-CQIA"} for i in range(30)]
    data = write_jsonl(tmp_path / "synthetic_distill.jsonl", rows)
    dataset = dataclasses.replace(ch_r1_math.DATASET, hub_files=str(data))
    cfg = DataConfig(name="ch_r1_math", hub_id="json", holdout_size=5, pool_size=12, data_seed=3)
    pool, test = dataset.load(cfg)
    assert len(test) == 5 and len(pool) == 12  # 20 maths rows: 5 held out, 12 of the other 15 drawn
    ids = [e["id"] for e in pool + test]
    assert len(set(ids)) == 17 and all(id_.startswith("json[train]#") for id_ in ids)
    assert all(int(id_.split("#")[1]) % 3 for id_ in ids)  # only the maths rows
    assert [e["id"] for e in pool] == sorted((e["id"] for e in pool), key=lambda s: int(s.split("#")[1]))
    e = pool[0]
    i = e["messages"][0]["content"].split()[-1]
    assert e["messages"][1]["content"] == f"<think>\n想 {i}\n</think>\n\n答案 \\boxed{{{i}}}"
    assert e["answer"] == i and e["lang"] == "zh"
    assert dataset.load(cfg) == (pool, test)  # fixed by data_seed


def test_r1_distill_rows_from_a_local_file(tmp_path):
    row = {"id": "synthetic-1", "problem": "Synthetic: what is 1/2 + 1/2?",
           "reannotated_assistant_content": "<think>\nhalf and half\n</think>\n\nIt is $\\boxed{1}$.",
           "solution": "First \\boxed{x}, finally \\boxed{\\frac{2}{2}}", "source": "synthetic_math"}
    write_jsonl(tmp_path / "train.jsonl", [row, {**row, "id": "synthetic-2", "solution": None}])
    write_jsonl(tmp_path / "test.jsonl", [{**row, "id": "synthetic-3", "problem": "Synthetic: 2?"}])
    pool, test = load_splits(DataConfig(name="r1_distill_sft", path=str(tmp_path)))
    assert pool[0]["messages"][1]["content"] == row["reannotated_assistant_content"]
    assert pool[0]["answer"] == "\\frac{2}{2}" and pool[1]["answer"] is None and pool[0]["lang"] == "en"


# --------------------------------------------------------------------------- generic JSONL, hold-out, system prompt
def test_generic_jsonl_file_holds_out_a_fixed_disjoint_test_split(tmp_path):
    rows = [{"prompt": f"synthetic question {i}", "response": f"answer {i}", "answer": i} for i in range(20)]
    rows += [{"messages": [{"role": "user", "content": f"合成问题 {i}"},
                           {"role": "assistant", "content": f"回答 {i}"}]} for i in range(20)]
    path = write_jsonl(tmp_path / "synthetic.jsonl", rows)
    cfg = DataConfig(name="jsonl", path=str(path), holdout_size=10, data_seed=1)
    pool, test = load_splits(cfg)
    assert len(pool) == 30 and len(test) == 10 and not {e["id"] for e in pool} & {e["id"] for e in test}
    assert load_splits(cfg) == (pool, test)
    assert load_splits(dataclasses.replace(cfg, data_seed=2))[1] != test
    by_prompt = {e["messages"][0]["content"]: e for e in pool + test}
    assert by_prompt["synthetic question 3"]["answer"] == "3" and by_prompt["synthetic question 3"]["lang"] == "en"
    assert by_prompt["合成问题 3"]["lang"] == "zh" and "answer" not in by_prompt["合成问题 3"]
    assert by_prompt["synthetic question 3"]["id"] == f"{path}:4"


def test_pool_size_caps_a_large_source_in_source_order(tmp_path):
    path = write_jsonl(tmp_path / "synthetic.jsonl", [{"prompt": f"synthetic {i}", "response": "ok"}
                                                      for i in range(50)])
    pool, test = load_splits(DataConfig(name="jsonl", path=str(path), holdout_size=10, pool_size=15))
    lines = [int(e["id"].rsplit(":", 1)[1]) for e in pool]
    assert len(pool) == 15 and lines == sorted(lines)


def test_too_small_for_the_hold_out_is_one_line(tmp_path):
    path = write_jsonl(tmp_path / "synthetic.jsonl", [{"prompt": "synthetic", "response": "ok"}] * 3)
    with pytest.raises(ConfigError, match="data=jsonl has 3 rows, too few to hold out data.holdout_size=300"):
        check_data(DataConfig(name="jsonl", path=str(path)), allow_hub=False)


def test_system_prompt_is_prepended_unless_the_row_has_one(tmp_path):
    own = {"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "synthetic a"},
                        {"role": "assistant", "content": "ok"}]}
    write_jsonl(tmp_path / "train.jsonl", [own, {"prompt": "synthetic b", "response": "ok"}])
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "synthetic c", "response": "ok"}])
    pool, test = load_splits(DataConfig(name="jsonl", path=str(tmp_path), system_prompt="Be brief."))
    assert [e["messages"][0]["content"] for e in pool + test] == ["own", "Be brief.", "Be brief."]
    assert all(e["messages"][0]["role"] == "system" for e in pool + test)
