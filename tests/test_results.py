"""Run records: readable keys, atomic writes, skip-if-done."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qtha import results
from qtha.results import RunRecord, atomic_write_text, is_done, record_path, run_key, write_record


def test_run_key_is_order_independent_and_includes_seed():
    a = run_key(["data.size=300", "adapter=lora"], 42)
    b = run_key(["adapter=lora", "data.size=300"], 42)
    assert a == b == "adapter=lora__data.size=300__seed=42"
    assert run_key([], 1) == "seed=1"
    assert run_key(["seed=7", "adapter=lora"], 7) == "adapter=lora__seed=7"
    reporting_only = ["results_dir=/x", "work_dir=/y", "force=true", "logger=csv", "logger.mode=offline",
                      "experiment=smoke", "name=n"]
    assert run_key(["adapter=lora", *reporting_only], 7) == "adapter=lora__seed=7"


def test_run_key_is_filesystem_safe():
    key = run_key(["adapter.target_modules=[q_proj,v_proj]", "data.path=/tmp/x y"], 0)
    assert "/" not in key and " " not in key and "[" not in key


def _record(status: str = "ok") -> RunRecord:
    return RunRecord(status=status, experiment="exp", run_key="k", config={"a": 1}, metrics={"loss": 1.5})


def test_write_then_is_done(tmp_path: Path):
    path = write_record(_record("ok"), tmp_path)
    assert path == record_path(tmp_path, "exp", "k")
    data = json.loads(path.read_text())
    for field in ("status", "config", "metrics", "trainable_params", "total_params", "git_sha", "versions",
                  "wall_time_s", "peak_rss_mb"):
        assert field in data
    assert is_done(tmp_path, "exp", "k")
    write_record(_record("failed"), tmp_path)
    assert not is_done(tmp_path, "exp", "k")


def test_corrupt_record_is_not_done(tmp_path: Path):
    path = record_path(tmp_path, "exp", "k")
    path.parent.mkdir(parents=True)
    path.write_text('{"status": "ok"')
    assert not is_done(tmp_path, "exp", "k")


def test_atomic_write_keeps_old_content_when_the_write_crashes(tmp_path: Path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def crash(*_a, **_k):
        raise OSError("disk died mid-write")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_versions_and_environment_name_the_stack():
    v = results.versions()
    assert {"python", "torch", "lightning", "transformers"} <= set(v)
    env = results.environment()
    assert env["cpu_count"] >= 1 and "platform" in env
