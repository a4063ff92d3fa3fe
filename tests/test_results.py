"""Run records: schema v2, atomic writes, lookup by resolved config, the upgrade of schema-1 records."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qtha import provenance
from qtha.compose import compose_checked
from qtha.identity import config_hash, plain
from qtha.results import RunRecord, find_run, load_record, record_path, upgrade, with_defaults, write_record
from qtha.scrub import REDACTED

SCHEMA_1 = Path(__file__).parent / "data" / "record_schema1.json"
BEFORE_BATCHING = Path(__file__).parent / "data" / "record_before_batching.json"  # a bond_dim_sweep record of 632c698


def _record(cfg, status: str = "ok", **extra) -> RunRecord:
    return RunRecord(status=status, experiment="exp", label="k", config_hash=config_hash(cfg), config=plain(cfg),
                     metrics={"loss": 1.5}, **extra)


@pytest.fixture(scope="module")
def cfg():
    return compose_checked(["model=tiny_llama", "data.size=16", "data.pool_size=64", "data.test_size=4"])


def test_write_then_find_by_config(tmp_path: Path, cfg):
    record = _record(cfg)
    path = write_record(record, record_path(tmp_path, "exp", record.stem))
    assert path.name == f"k__{record.config_hash}.json"
    data = json.loads(path.read_text())
    for key in ("status", "config", "config_hash", "metrics", "history", "data_summary", "data_fingerprint",
                "generation", "timings", "error", "trainable_params", "total_params", "git_sha", "git_dirty",
                "versions", "wall_time_s", "peak_rss_mb"):
        assert key in data, key
    assert data["schema_version"] == 2
    found_path, found = find_run(tmp_path, "exp", cfg)
    assert found_path == path and found.status == "ok"
    other = compose_checked(["model=tiny_llama", "data.size=17", "data.pool_size=64", "data.test_size=4"])
    assert find_run(tmp_path, "exp", other) is None                 # another config is never this record
    assert find_run(tmp_path, "other_experiment", cfg) is None      # identity includes the experiment


def test_find_prefers_the_finished_record_and_skips_unreadable_files(tmp_path: Path, cfg):
    done = write_record(_record(cfg, "ok", finished_at="2026-01-01"), record_path(tmp_path, "exp", "a__x"))
    write_record(_record(cfg, "failed", finished_at="2026-02-01"), record_path(tmp_path, "exp", "b__x"))
    (tmp_path / "runs" / "exp" / "c.json").write_text('{"status": "ok"')
    assert find_run(tmp_path, "exp", cfg)[0] == done


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_atomic_write_keeps_old_content_when_the_write_crashes(tmp_path: Path, monkeypatch, fails, cfg):
    """A crash while syncing the temp file, or while renaming it over the record: old record intact, no temp."""
    path = write_record(_record(cfg, "running"), tmp_path / "r.json")
    before = path.read_text()

    def crash(*_a, **_k):
        raise OSError("disk died mid-write")

    monkeypatch.setattr(os, fails, crash)
    with pytest.raises(OSError):
        write_record(_record(cfg, "ok"), path)
    assert path.read_text() == before and json.loads(before)["status"] == "running"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_records_never_hold_credentials(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_abcdefghij")
    record = RunRecord(
        status="failed", experiment="exp", label="k", config_hash="0" * 12,
        config={"logger": {"api_key": "typed-in-config", "project": "qtha"}, "eval": {"max_new_tokens": 8},
                "model": {"pad_token": "<|pad|>"}},
        overrides=["+logger.api_key=typed-on-cli", "+model.hf_token=hf_other", "adapter=lora"],
        environment={"HF_TOKEN": "hf_secret_abcdefghij", "DB_PASSWORD": "hunter2"},
        error={"type": "HTTPError", "message": "401 for https://x.test/?key=wandb-secret-0123456789",
               "traceback": "... token hf_secret_abcdefghij"})
    text = write_record(record, tmp_path / "r.json").read_text()
    for secret in ("wandb-secret-0123456789", "hf_secret_abcdefghij", "typed-in-config", "typed-on-cli", "hf_other",
                   "hunter2"):
        assert secret not in text
    saved = json.loads(text)
    assert saved["config"]["logger"] == {"api_key": REDACTED, "project": "qtha"}
    assert saved["config"]["eval"]["max_new_tokens"] == 8 and saved["config"]["model"]["pad_token"] == "<|pad|>"
    assert saved["overrides"] == [f"+logger.api_key={REDACTED}", f"+model.hf_token={REDACTED}", "adapter=lora"]
    assert saved["error"]["message"] == "401 for https://x.test/?key=<redacted>"


def test_schema_1_records_upgrade_to_v2():
    """A schema-1 record (everything under metrics, error as text, no hash) reads as v2."""
    old = json.loads(SCHEMA_1.read_text())
    new = upgrade(old)
    assert new["schema_version"] == 2 and new["label"] == old["run_key"] and "run_key" not in new
    assert set(new["metrics"]) == {"init_loss", "loss", "ppl", "train_loss", "steps", "accuracy"}
    assert new["history"] == old["metrics"]["history"] and new["data_summary"] == old["metrics"]["data"]
    assert new["generation"]["rows"] == 4 and new["generation"]["metric_notes"] == old["metrics"]["metric_notes"]
    assert new["precision"] == "bf16-mixed"
    assert new["error"] == {"type": "RuntimeError", "message": "injected fault", "traceback": "Traceback: ..."}
    assert "traceback" not in new["environment"]
    assert new["evaluations"][0]["metrics"] == {"loss": 2.0} and new["evaluations"][0]["generation"]["rows"] == 2
    # keys added since the record was written appear at their defaults; its own values stay
    assert new["config"]["quantum"]["cache_size"] == 4096 and new["config"]["adapter"]["rank"] == 2
    # ...except where a new default changed the behaviour: schema 1 ran QTHA's spec_v1 init
    assert new["config"]["adapter"]["init"] == "spec_v1" and new["config"]["adapter"]["branch"] == "qnn"
    assert new["config_hash"] == config_hash(new["config"])
    assert RunRecord.from_dict(old).stem == f"{old['run_key']}__{new['config_hash']}"


def test_an_unknown_schema_or_field_is_one_line(tmp_path: Path):
    old = json.loads(SCHEMA_1.read_text())
    (tmp_path / "a.json").write_text(json.dumps({**old, "schema_version": 9}))
    with pytest.raises(ValueError, match=r"a.json: schema_version 9 is unknown; this qtha reads 1, 2$"):
        load_record(tmp_path / "a.json")
    v2 = {**upgrade(old), "surprise": 1}
    (tmp_path / "b.json").write_text(json.dumps(v2))
    with pytest.raises(ValueError, match="b.json: unknown record field 'surprise'"):
        load_record(tmp_path / "b.json")


def test_defaults_fill_only_what_is_missing():
    filled = with_defaults({"adapter": {"name": "qtha", "rank": 2}, "seed": 3, "gone": {"x": 1}})
    assert filled["adapter"]["rank"] == 2 and filled["adapter"]["bottleneck"] == 256
    assert filled["seed"] == 3 and filled["gone"] == {"x": 1}   # a removed key is kept: it never equals a new config
    assert filled["trainer"]["max_steps"] == 60


def test_provenance_names_the_code_and_the_stack():
    v = provenance.versions()
    assert {"python", "torch", "lightning", "transformers"} <= set(v)
    env = provenance.environment()
    assert env["cpu_count"] >= 1 and "platform" in env
    assert provenance.git_sha() is None or len(provenance.git_sha()) == 40
    assert provenance.git_dirty() in (True, False, None)


def test_records_from_before_batching_and_the_quantum_account_load_as_the_old_behaviour():
    """A record written before data.batching existed ran random batches: it upgrades to batching=random, so it
    still equals (and is reused by) a config composed today, and it has no quantum account (null)."""
    old = json.loads(BEFORE_BATCHING.read_text())
    assert "batching" not in old["config"]["data"] and "quantum_resources" not in old
    record = RunRecord.from_dict(old)
    assert record.config["data"]["batching"] == "random" and record.config["data"]["bucket_batches"] == 16
    assert record.quantum_resources is None and record.config_hash == config_hash(record.config)
