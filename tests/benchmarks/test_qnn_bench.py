"""``benchmarks/qnn.py --quick`` end to end: the result files, their schema, and the agreement check.

No wall-clock assertion: timings depend on the machine and its load; only their presence and shape are checked.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = {"torch32", "torch64", "default.qubit32", "default.qubit64", "lightning.qubit"}
RATIOS = {"default.qubit32/torch32", "default.qubit64/torch64", "lightning.qubit/torch64"}  # each at one dtype
AGREEMENTS = {"torch64_vs_default.qubit64", "torch64_vs_lightning.qubit", "torch32_vs_default.qubit32"}


def test_quick_benchmark_writes_json_and_markdown(tmp_path: Path, python_process) -> None:
    proc = python_process(["benchmarks/qnn.py", "--quick", "--threads", "1", "--out", str(tmp_path / "out")], cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["qnn.json", "qnn.md"]  # no temp files left behind

    report = json.loads((tmp_path / "out" / "qnn.json").read_text(encoding="utf-8"))
    assert report["benchmark"] == "qnn" and report["schema_version"] == 2
    for dist in ("torch", "pennylane", "pennylane-lightning"):
        assert report["versions"][dist]
    env = report["environment"]
    assert env["cpu_count"] >= 1 and env["cpus_available"] >= 1 and env["omp_num_threads"] == "1"
    assert "git_sha" in report and report["wall_time_s"] > 0 and report["peak_rss_mb"] > 0
    assert len(report["load_average"]["start"]) == 3 and isinstance(report["contended"], bool)

    cfg = report["config"]
    assert cfg["quick"] and cfg["threads"] == 1
    sizes = {(n, L, N) for n in cfg["qubits"] for L in cfg["layers"] for N in cfg["tokens"]}
    assert {(r["n_qubits"], r["n_layers"], r["n_tokens"]) for r in report["results"]} == sizes
    for m in report["measurements"]:
        assert m["backend"] in CONTENDERS and len(m["times_s"]) == cfg["repeats"]
        assert all(t > 0 for t in m["times_s"]) and m["median_s"] > 0 and m["iqr_s"] >= 0
    n_cells = len(cfg["qubits"]) * len(cfg["layers"])
    assert len(report["measurements"]) == n_cells * (4 * len(cfg["tokens"]) + 1)  # lightning: once per cell

    for r in report["results"]:
        assert set(r["median_s"]) == CONTENDERS == set(r["iqr_s"]) and set(r["ratio"]) == RATIOS
        assert all(v > 0 for v in r["ratio"].values())
        assert r["lightning_measured_tokens"] == cfg["lightning_tokens"]
        assert r["lightning_extrapolated"] == (r["n_tokens"] > cfg["lightning_tokens"])
        assert set(r["agreement"]) == AGREEMENTS
        for key in ("torch64_vs_default.qubit64", "torch64_vs_lightning.qubit"):
            assert set(r["agreement"][key]) == {"outputs", "d_inputs", "d_weights"}
            assert max(r["agreement"][key].values()) <= 1e-10, (r["n_qubits"], r["n_layers"], key, r["agreement"][key])
        assert max(r["agreement"]["torch32_vs_default.qubit32"].values()) <= 1e-4

    s = report["summary"]
    assert s["agreement_ok"] and s["tolerance"] == 1e-10 and s["target_ratio"] == 20
    assert s["target_met"] == (s["min_ratio"] >= 20)

    md = (tmp_path / "out" / "qnn.md").read_text(encoding="utf-8")
    assert re.search(r"torch kernel ≥ 20× faster than default\.qubit at the same dtype at every measured size: \*\*(met|missed)\*\* "
                     r"\(min ratio [0-9.]+", md)
    assert md.count("\n| ") == len(report["results"]) + 1  # header + one row per size
