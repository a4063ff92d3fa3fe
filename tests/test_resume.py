"""resume=true: a run killed mid-training continues from its last checkpoint to the uninterrupted result."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import tiny_overrides
from qtha.checkpoint import checkpoint_dir
from qtha.compose import compose_checked
from qtha.identity import config_hash
from qtha.train import train

# 16 rows / batch 2 = 8 batches per epoch: the kill at step 10 lands mid-way through the second
# epoch, after the checkpoint (and validation) of step 10; dropout makes the RNG state matter.
RUN = ("trainer.max_steps=12", "trainer.checkpoint_every=5", "adapter.dropout=0.1", "trainer.lr=3e-3",
       "eval.enabled=false")


def _curve(record, kind: str) -> tuple[list[int], list[float]]:
    """Steps and values of ``train_loss`` or ``val_loss`` in a record's history."""
    points = [(h["step"], h[kind]) for h in record.history if kind in h]
    return [s for s, _ in points], [v for _, v in points]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, cli):
    straight = tiny_overrides(tmp_path / "straight", *RUN)
    reference = train(compose_checked(straight), straight).record

    overrides = tiny_overrides(tmp_path / "killed", *RUN)
    proc = cli([*overrides, "trainer.kill_at_step=10"])
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL: no clean-up ran
    cfg = compose_checked([*overrides, "resume=true"])
    (record_file,) = (tmp_path / "killed" / "results" / "runs").rglob("*.json")
    assert json.loads(record_file.read_text())["status"] == "running"
    ckpt = torch.load(checkpoint_dir(cfg.work_dir, cfg.name, config_hash(cfg)) / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 10 and ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])  # no frozen weights

    run = train(cfg, [*overrides, "resume=true"])
    resumed = run.record
    assert resumed.status == "ok" and run.path == record_file and not run.reused
    assert resumed.resumed_from and resumed.resumed_from.endswith("last.ckpt")
    assert len(list(record_file.parent.glob("*.json"))) == 1          # the same record, rewritten
    assert _curve(resumed, "train_loss")[0] == list(range(12))        # continuous, nothing repeated
    for kind in ("train_loss", "val_loss"):
        (steps, values), (ref_steps, ref_values) = _curve(resumed, kind), _curve(reference, kind)
        assert steps == ref_steps and values == pytest.approx(ref_values, rel=1e-5), kind
    for key in ("loss", "ppl", "train_loss", "steps"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-5), key


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path, caplog):
    overrides = tiny_overrides(tmp_path, "trainer.max_steps=2", "eval.enabled=false", "resume=true")
    with caplog.at_level(logging.WARNING, logger="qtha"):
        run = train(compose_checked(overrides), overrides)
    assert any("resume=true but no checkpoint at" in m and "starting from scratch" in m for m in caplog.messages)
    assert run.record.status == "ok" and run.record.resumed_from is None and run.record.metrics["steps"] == 2
    assert run.path.is_file() and run.path.parent == tmp_path / "results" / "runs" / "default"


def test_resume_never_continues_another_configs_checkpoint(tmp_path):
    """A killed run of config A leaves a checkpoint; resume=true with config B starts B from scratch."""
    a = tiny_overrides(tmp_path, "trainer.max_steps=2", "eval.enabled=false")
    cfg_a = compose_checked(a)
    ckpt = checkpoint_dir(cfg_a.work_dir, cfg_a.name, config_hash(cfg_a)) / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"config A's checkpoint")
    b = compose_checked([*a, "trainer.lr=1e-3", "resume=true"])
    run = train(b, [])
    assert run.record.status == "ok" and run.record.resumed_from is None and ckpt.read_bytes() == b"config A's checkpoint"


def test_a_fresh_start_removes_a_stale_checkpoint(tmp_path):
    """Without resume=true the run starts over, so a later resume can never pick up an older attempt."""
    overrides = tiny_overrides(tmp_path, "trainer.max_steps=0", "eval.enabled=false")
    cfg = compose_checked(overrides)
    train(cfg, overrides)
    stale = checkpoint_dir(cfg.work_dir, cfg.name, config_hash(cfg)) / "last.ckpt"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"older attempt")
    train(compose_checked([*overrides, "force=true"]), overrides)
    assert not stale.exists()


def test_a_killed_length_batched_qtha_run_resumes_to_the_same_batches_and_account(tmp_path, cli):
    """data.batching=length: the resumed run trains on the uninterrupted run's batches (the same losses, step by
    step), and its quantum resource account covers the whole run, as the uninterrupted one's does."""
    extra = (*RUN, "adapter=qtha", "adapter.qnn_layers=1", "data.batching=length", "data.bucket_batches=2",
             "data.max_length=400")  # rows of 132-271 tokens: the batches differ from random ones
    straight = tiny_overrides(tmp_path / "straight", *extra)
    reference = train(compose_checked(straight), straight).record

    overrides = tiny_overrides(tmp_path / "killed", *extra)
    proc = cli([*overrides, "trainer.kill_at_step=10"])
    assert proc.returncode == -9, proc.stderr[-3000:]
    resumed = train(compose_checked([*overrides, "resume=true"]), [*overrides, "resume=true"]).record
    assert resumed.status == "ok" and resumed.resumed_from and resumed.resumed_from.endswith("last.ckpt")
    for kind in ("train_loss", "val_loss"):
        (steps, values), (ref_steps, ref_values) = _curve(resumed, kind), _curve(reference, kind)
        assert steps == ref_steps and values == pytest.approx(ref_values, rel=1e-5), kind
    assert resumed.quantum_resources == reference.quantum_resources
    assert reference.quantum_resources["forward_circuits"]["train"] > 0
