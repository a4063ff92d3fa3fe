"""LLaMA-Factory's alpaca and sharegpt files (data=jsonl data.format=…) read as LLaMA-Factory reads them
(``convert_alpaca`` / ``convert_sharegpt`` in its data/converter.py), and trained on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_overrides
from qtha.compose import compose_checked
from qtha.data import load_splits
from qtha.data.formats import convert
from qtha.data.rows import Row, read_rows
from qtha.train import train

ALPACA = [  # LLaMA-Factory's alpaca_en_demo shape, with the optional system and history columns
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "Be terse."},
    {"instruction": "And now?", "output": "7", "history": [["Add 3 and 4.", "7"], ["Twice?", "14"]]},
    *[{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("yes", "no", "ok", "hi", "bye", "up")],
]
SHAREGPT = [  # glaive/sharegpt shape (from/value) and OpenAI's (role/content), in one file
    {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "hello"},
                       {"from": "gpt", "value": "hi there"}]},
    {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"},
                       {"from": "human", "value": "and 3+3?"}, {"from": "gpt", "value": "6"}], "answer": "6"},
    {"messages": [{"role": "system", "content": "Short answers."}, {"role": "user", "content": "ping"},
                  {"role": "assistant", "content": "pong"}]},
    *[{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]} for i in range(5)],
]


def _row(data: dict) -> Row:
    return Row("f.json:1", data)


def test_alpaca_joins_instruction_and_input_and_unrolls_history():
    assert convert(_row(ALPACA[0]), "alpaca", {}, {}).data["messages"] == [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Add the numbers.\n2 and 3"},
        {"role": "assistant", "content": "5"}]
    assert convert(_row(ALPACA[1]), "alpaca", {}, {}).data["messages"] == [
        {"role": "user", "content": "Add 3 and 4."}, {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Twice?"}, {"role": "assistant", "content": "14"},
        {"role": "user", "content": "And now?"}, {"role": "assistant", "content": "7"}]


def test_named_columns_replace_the_defaults_as_in_llama_factory():
    """dataset_info.json ``columns``: a column left unnamed is not read (here ``input``)."""
    row = _row({"q": "Translate.", "input": "bonjour", "a": "hello", "answer": "x", "junk": 1})
    out = convert(row, "alpaca", {"prompt": "q", "response": "a"}, {})
    assert out.data == {"answer": "x", "messages": [{"role": "user", "content": "Translate."},
                                                    {"role": "assistant", "content": "hello"}]}


def test_sharegpt_reads_from_value_tags_openai_messages_and_custom_tags():
    assert convert(_row(SHAREGPT[0]), "sharegpt", {}, {}).data["messages"][0] == {"role": "system", "content": "Be kind."}
    assert [m["role"] for m in convert(_row(SHAREGPT[2]), "sharegpt", {}, {}).data["messages"]] == [
        "system", "user", "assistant"]
    custom = {"dialog": [{"speaker": "client", "text": "I feel low."}, {"speaker": "counsellor", "text": "Tell me more."}]}
    out = convert(_row(custom), "sharegpt", {"messages": "dialog"},
                  {"role_tag": "speaker", "content_tag": "text", "user_tag": "client", "assistant_tag": "counsellor"})
    assert out.data["messages"] == [{"role": "user", "content": "I feel low."},
                                    {"role": "assistant", "content": "Tell me more."}]


def test_a_json_array_names_the_line_each_row_starts_on(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(ALPACA[:3], indent=2))
    rows = read_rows(path)
    starts = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line == "  {"]
    assert [r.origin for r in rows] == [f"{path}:{n}" for n in starts] and rows[2].data == ALPACA[2]
    lines = tmp_path / "lines.json"  # a .json file of JSON lines (as load_dataset("json") also reads)
    lines.write_text("".join(json.dumps(r) + "\n" for r in ALPACA[:2]))
    assert [r.data for r in read_rows(lines)] == ALPACA[:2]


@pytest.mark.parametrize(("fmt", "rows", "name"), [("alpaca", ALPACA, "alpaca.json"),
                                                   ("sharegpt", SHAREGPT, "sharegpt.jsonl")])
def test_a_llama_factory_file_trains(tmp_path, fmt, rows, name):
    path = tmp_path / name
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) if name.endswith(".json")
                    else "".join(json.dumps(r) + "\n" for r in rows))
    overrides = tiny_overrides(tmp_path, "data=jsonl", f"data.path={path}", f"data.format={fmt}", "data.size=5",
                               "data.holdout_size=2", "data.test_size=2", "trainer.max_steps=2", "eval.enabled=false")
    cfg = compose_checked(overrides)
    pool, test = load_splits(cfg.data)
    assert len(pool) + len(test) == len(rows) and all(e["messages"][-1]["role"] == "assistant" for e in pool + test)
    record = train(cfg, overrides).record
    assert record.status == "ok" and record.metrics["steps"] == 2 and record.data_summary["train"]["rows"] == 5
    assert record.config["data"]["format"] == fmt
