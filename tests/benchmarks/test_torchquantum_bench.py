"""``benchmarks/torchquantum.py --quick`` end to end: result files, their schema, and the float64 agreement.

TorchQuantum lives only in the benchmark-only environment (``benchmarks/torchquantum_env.sh``, ``$TQ_VENV``,
default ``.tqenv`` in the checkout), not in the project's venv or CI's: the test runs the benchmark with that
environment's python when it exists, and skips otherwise. No wall-clock assertion.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]
TQ_VENV = Path(os.environ.get("TQ_VENV", ROOT / ".tqenv"))
BACKENDS = {"qtha32", "tq32", "qtha64", "tq64"}
AGREEMENTS = {"tq64_vs_qtha64", "tq32_vs_qtha64", "qtha32_vs_qtha64"}


def _has_torchquantum(python: Path) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchquantum') is None)"
    return subprocess.run([str(python), "-c", probe], cwd="/", capture_output=True).returncode == 0


def _interpreter() -> Path:
    """This python if it has torchquantum, else the benchmark env's; skip when neither has it."""
    if importlib.util.find_spec("torchquantum") is not None:
        return Path(sys.executable)
    candidate = TQ_VENV / "bin" / "python"
    if candidate.exists() and _has_torchquantum(candidate):
        return candidate
    pytest.skip(f"torchquantum is not importable here nor in TQ_VENV={TQ_VENV}: it lives only in the "
                "benchmark-only environment (bash benchmarks/torchquantum_env.sh, or make bench-torchquantum)")


@pytest.mark.slow  # spawns a Python process
def test_quick_benchmark_writes_json_and_markdown(tmp_path: Path) -> None:
    python = _interpreter()
    out = tmp_path / "out"
    proc = subprocess.run([str(python), "benchmarks/torchquantum.py", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, env=clean_env(tmp_path), text=True, capture_output=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["torchquantum.json", "torchquantum.md"]  # no temp files

    report = json.loads((out / "torchquantum.json").read_text(encoding="utf-8"))
    assert report["benchmark"] == "torchquantum" and report["schema_version"] == 1
    for dist in ("torch", "pennylane", "torchquantum-ng", "qiskit", "qiskit-aer", "qiskit-ibm-runtime"):
        assert report["versions"][dist] not in (None, "", "absent"), dist
    env = report["environment"]
    assert env["cpus_available"] >= 1 and env["omp_num_threads"] == "1" and not env["cuda"]
    assert "git_sha" in report and report["wall_time_s"] > 0 and report["peak_rss_mb"] > 0
    assert len(report["load_average"]["start"]) == 3 and isinstance(report["contended"], bool)

    cfg = report["config"]
    assert cfg["quick"] and cfg["threads"] == 1 and cfg["ansatz"] == "qtha"
    sizes = {(n, L, N) for n in cfg["qubits"] for L in cfg["layers"] for N in cfg["tokens"]}
    assert {(r["n_qubits"], r["n_layers"], r["n_tokens"]) for r in report["results"]} == sizes
    assert len(report["measurements"]) == len(sizes) * len(BACKENDS)
    for m in report["measurements"]:
        assert m["backend"] in BACKENDS and len(m["times_s"]) == cfg["repeats"]
        assert all(t > 0 for t in m["times_s"]) and m["median_s"] > 0 and m["iqr_s"] >= 0
        assert m["dtype"] == ("float64" if m["backend"].endswith("64") else "float32")

    for r in report["results"]:
        assert set(r["median_s"]) == BACKENDS == set(r["iqr_s"])
        assert set(r["ratio"]) == {"tq32/qtha32", "tq64/qtha64"} and all(v > 0 for v in r["ratio"].values())
        assert all(1 <= c <= r["n_tokens"] for c in r["tq_chunk"].values())
        assert set(r["agreement"]) == AGREEMENTS
        for key, err in r["agreement"].items():
            assert set(err) == {"outputs", "d_inputs", "d_weights"}
        # complex128 end to end in TorchQuantum: a complex64 leftover would show as ~1e-7
        assert max(r["agreement"]["tq64_vs_qtha64"].values()) <= 1e-10, (r["n_qubits"], r["n_layers"], r["agreement"])
        assert max(r["agreement"]["tq32_vs_qtha64"].values()) <= 1e-4

    s = report["summary"]
    assert s["agreement_ok"] and s["tolerance"] == 1e-10
    assert set(s["ratio_min"]) == {"tq32/qtha32", "tq64/qtha64"}

    md = (out / "torchquantum.md").read_text(encoding="utf-8")
    assert re.search(r"TorchQuantum vs qtha [0-9.e+-]+ — \*\*ok\*\*", md)
    assert md.count("\n| ") == len(report["results"]) + 1  # header + one row per size
