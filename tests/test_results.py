"""Run records: readable keys, atomic writes, skip-if-done."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qtha import results
from qtha.results import REDACTED, RunRecord, is_done, record_path, run_key, write_record


def test_run_key_is_order_independent_and_includes_seed():
    a = run_key(["data.size=300", "adapter=lora"], 42)
    b = run_key(["adapter=lora", "data.size=300"], 42)
    assert a == b == "adapter=lora__data.size=300__seed=42"
    assert run_key([], 1) == "seed=1"
    assert run_key(["seed=7", "adapter=lora"], 7) == "adapter=lora__seed=7"
    reporting_only = ["results_dir=/x", "work_dir=/y", "force=true", "logger=csv", "logger.mode=offline",
                      "experiment=smoke", "name=n", "resume=true", "trainer.kill_at_step=3"]
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


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_atomic_write_keeps_old_content_when_the_write_crashes(tmp_path: Path, monkeypatch, fails):
    """A crash while syncing the temp file, or while renaming it over the record: old record intact, no temp."""
    path = write_record(_record("running"), tmp_path)
    before = path.read_text()

    def crash(*_a, **_k):
        raise OSError("disk died mid-write")

    monkeypatch.setattr(os, fails, crash)
    with pytest.raises(OSError):
        write_record(_record("ok"), tmp_path)
    assert path.read_text() == before and json.loads(before)["status"] == "running"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_records_never_hold_credentials(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_abcdefghij")
    record = RunRecord(
        status="failed", experiment="exp", run_key="k",
        config={"logger": {"api_key": "typed-in-config", "project": "qtha"}, "eval": {"max_new_tokens": 8},
                "model": {"pad_token": "<|pad|>"}},
        overrides=["+logger.api_key=typed-on-cli", "+model.hf_token=hf_other", "adapter=lora"],
        environment={"HF_TOKEN": "hf_secret_abcdefghij", "DB_PASSWORD": "hunter2"},
        error="HTTPError: 401 for https://x.test/?key=wandb-secret-0123456789 (token hf_secret_abcdefghij)")
    text = write_record(record, tmp_path).read_text()
    for secret in ("wandb-secret-0123456789", "hf_secret_abcdefghij", "typed-in-config", "typed-on-cli", "hf_other",
                   "hunter2"):
        assert secret not in text
    saved = json.loads(text)
    assert saved["config"]["logger"] == {"api_key": REDACTED, "project": "qtha"}
    assert saved["config"]["eval"]["max_new_tokens"] == 8 and saved["config"]["model"]["pad_token"] == "<|pad|>"
    assert saved["overrides"] == [f"+logger.api_key={REDACTED}", f"+model.hf_token={REDACTED}", "adapter=lora"]
    assert saved["run_key"] == "k" and saved["error"].startswith("HTTPError: 401 for https://x.test/?key=<redacted>")
    key = run_key(["+model.hf_token=hf_other", "adapter=lora"], 1)  # the key is a file name: no secret in it
    assert key == "+model.hf_token=-redacted-__adapter=lora__seed=1"


def test_versions_and_environment_name_the_stack():
    v = results.versions()
    assert {"python", "torch", "lightning", "transformers"} <= set(v)
    env = results.environment()
    assert env["cpu_count"] >= 1 and "platform" in env
