"""``benchmarks/throughput.py --quick`` on the tiny Llama: the result files, their schema and the target line.

No wall-clock assertion: timings depend on the machine and its load; only their presence and shape are checked.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_throughput_benchmark_writes_json_and_markdown(quick_benchmark) -> None:
    report, md = quick_benchmark("throughput")
    assert len(report["load_average"]["start"]) == 3 and isinstance(report["contended"], bool)
    cfg = report["config"]
    assert cfg["quick"] and cfg["threads"] == 1 and cfg["model"] == "tiny_llama" and cfg["data"] == "synthetic_math"
    assert cfg["precision"] in ("bf16-mixed", "32-true")

    peak = report["peak"]
    assert peak["dtype"] == ("bfloat16" if cfg["precision"] == "bf16-mixed" else "float32")
    assert peak["flops"] == 2 * peak["size"] ** 3 and peak["best_flops_per_s"] >= peak["median_flops_per_s"] > 0
    results = report["results"]
    assert list(results) == ["before", "random", "length"]
    for r in results.values():
        assert len(r["times_s"]) == r["steps"] == cfg["steps"] and r["median_s"] > 0 and r["iqr_s"] >= 0
        assert 0 < r["real_tokens"] <= r["positions"] == sum(rows * width for rows, width in r["widths"])
        assert 0 <= r["padding_share"] < 1 and 0 <= r["padding_share_epoch"] < 1 and r["epoch_batches"] > 0
        assert r["tokens_per_s"] > 0 and r["flops"] > 0 and 0 < r["fraction_of_peak"] == \
            r["matmul_flops_per_s"] / peak["best_flops_per_s"]
    assert results["length"]["padding_share_epoch"] < results["random"]["padding_share_epoch"]
    t = report["target"]
    assert t["target"] == 1.3 and t["met"] == (t["ratio"] >= 1.3)
    assert t["ratio"] == results["length"]["tokens_per_s"] / results["before"]["tokens_per_s"]

    assert re.search(r"real tokens/s: \*\*[0-9.]+×\*\* \(target ≥ 1\.3×: \*\*(met|missed)\*\*\)", md)
    assert md.count("\n| ") == len(results) + 1  # header + one row per arm


def test_a_dataset_that_is_not_here_is_skipped_saying_so(tmp_path: Path, python_process) -> None:
    proc = python_process(["benchmarks/throughput.py", "--quick", "data=cpsycound", f"data.path={tmp_path / 'none'}",
                           "--out", str(tmp_path / "out")], cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and "throughput: skipped:" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()
