"""``benchmarks/generate.py --quick`` on the tiny Llama: the result files, their schema, identity and the target lines.

No wall-clock assertion: timings depend on the machine and its load; only their presence and shape are checked.
"""
from __future__ import annotations

import re

CONTENDERS = ["plain:bare", "qtha:bare", "plain:lora", "qtha:lora", "plain:qtha", "qtha:qtha"]


def test_quick_generate_benchmark_writes_json_and_markdown(quick_benchmark) -> None:
    report, md = quick_benchmark("generate")
    cfg = report["config"]
    assert cfg["quick"] and cfg["threads"] == 1 and cfg["model"] == "tiny_llama" and cfg["reference"] == "plain:bare"
    assert cfg["contenders"] == CONTENDERS and len(cfg["prompt_tokens"]) == cfg["rows"]
    assert cfg["precision"] in ("bf16-mixed", "32-true")

    results = report["results"]
    assert list(results) == CONTENDERS
    for name, r in results.items():
        assert len(r["times_s"]) == len(r["prefill_times_s"]) == cfg["repeats"] and r["median_s"] > 0
        assert 1 <= r["decode_steps"] <= cfg["new_tokens"] and r["tokens_per_s"] > 0
        assert r["decode_step_ms"] is None or r["decode_steps"] > 1
        assert ("identical_to_plain" in r) == name.startswith("qtha:")
    assert results["plain:bare"]["speed_vs_plain_bare"] == 1.0
    assert report["identical"] is True and all(r.get("identical_to_plain", True) for r in results.values())

    targets = {t["contender"]: t for t in report["targets"]}
    assert set(targets) == {"qtha:lora", "qtha:qtha"}
    assert targets["qtha:lora"]["reference"] == "plain:bare" and targets["qtha:qtha"]["reference"] == "qtha:lora"
    for t in report["targets"]:
        assert t["met"] == (t["ratio"] >= t["limit"])

    assert len(re.findall(r"\*\*(met|missed)\*\* \(ratio [0-9.]+\)", md)) == len(report["targets"])
    assert "plain path's generations on every model: **yes**" in md
    assert md.count("\n| ") == len(results) + 1  # header + one row per contender
