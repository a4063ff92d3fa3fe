"""``benchmarks/step.py --quick`` on the tiny Llama: the result files, their schema and the target lines.

No wall-clock assertion: timings depend on the machine and its load; only their presence and shape are checked.
Four adapters (lora is always added) keep the child processes that measure peak RSS few.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ["lora", "none", "quanta", "qtha-full"]


def test_quick_step_benchmark_writes_json_and_markdown(tmp_path: Path, python_process) -> None:
    proc = python_process(["benchmarks/step.py", "--quick", "--model", "tiny_llama", "--threads", "1",
                           "--adapters", "none,quanta,qtha-full", "--out", str(tmp_path / "out")], cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["step.json", "step.md"]  # no temp files left behind

    report = json.loads((tmp_path / "out" / "step.json").read_text(encoding="utf-8"))
    assert report["benchmark"] == "step" and report["schema_version"] == 1
    assert report["versions"]["torch"] and "git_sha" in report and report["wall_time_s"] > 0
    cfg = report["config"]
    assert cfg["quick"] and cfg["threads"] == 1 and cfg["model"] == "tiny_llama" and cfg["shape"] is None
    assert cfg["adapters"] == ADAPTERS and cfg["n_tokens"] == cfg["rows"] * cfg["seq"]
    assert cfg["precision"] in ("bf16-mixed", "32-true")

    results = report["results"]
    assert list(results) == ADAPTERS
    for name, r in results.items():
        assert len(r["times_s"]) == cfg["steps"] and r["median_s"] > 0 and r["iqr_s"] >= 0
        assert r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["step_ratio_to_lora"] > 0
        assert r["flops"] > 0 and r["flop_ratio_to_lora"] > 0
        assert (r["trainable_params"] > 0) == (name != "none")
        assert (r["checkpoint_bytes"] >= 4 * r["trainable_params"] > 0) or name == "none"
    assert results["lora"]["step_ratio_to_lora"] == results["lora"]["flop_ratio_to_lora"] == 1.0

    targets = {(t["target"].split(" ≤")[0], t["adapter"]) for t in report["targets"]}
    assert {("qtha-full step", "qtha-full"), ("quanta step", "quanta")} <= targets
    assert {a for kind, a in targets if kind == "checkpoint"} == {"lora", "quanta", "qtha-full"}
    assert {a for kind, a in targets if kind == "peak RSS"} == {"none", "quanta", "qtha-full"}
    for t in report["targets"]:
        assert t["met"] == (t["ratio"] <= t["limit"])

    md = (tmp_path / "out" / "step.md").read_text(encoding="utf-8")
    assert len(re.findall(r"\*\*(met|missed)\*\* \(ratio [0-9.]+[;)]", md)) == len(report["targets"])
    assert md.count("\n| ") == len(results) + 1  # header + one row per adapter
