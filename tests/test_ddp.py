"""Two gloo processes on the tiny model (``trainer.devices=2 trainer.strategy=ddp``): one record, the
whole validation set, one generation pass, and a killed run that resumes to the uninterrupted result."""
from __future__ import annotations

import itertools
import json
from functools import partial
from pathlib import Path

import pytest

from conftest import tiny_overrides
from qtha.backbone import build_tiny_tokenizer
from qtha.compose import compose_checked
from qtha.data.batching import LengthGroups
from qtha.data.formatting import collate
from qtha.data.module import ChatDataModule
from qtha.data.resumable import EpochSampler, ResumableLoader
from qtha.train import train

# 11 test rows over 2 processes: uneven shards, so the distributed sampler pads one of them.
DDP = ("trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "data.test_size=11",
       "trainer.max_steps=6", "trainer.checkpoint_every=2", "trainer.val_check_interval=3", "eval.batch_size=5")


def _only_record(root: Path) -> dict:
    (path,) = (root / "results" / "runs").rglob("*.json")
    return json.loads(path.read_text())


def test_ddp_records_once_with_the_whole_validation_set_and_resumes(tmp_path, cli):
    single = train(compose_checked(tiny_overrides(tmp_path / "single", "data.test_size=11", "trainer.max_steps=0")), [])

    straight = cli(tiny_overrides(tmp_path / "ddp", *DDP))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert straight.stdout.count("qtha: {") == 1                      # one process reports
    rec = _only_record(tmp_path / "ddp")
    assert rec["metrics"]["init_loss"] == pytest.approx(single.record.metrics["init_loss"], abs=1e-4)
    assert rec["metrics"]["init_ppl_sample"] == pytest.approx(single.record.metrics["init_ppl_sample"], rel=1e-4)
    assert rec["generation"]["rows"] == 11 and rec["metrics"]["steps"] == 6
    predictions = list((tmp_path / "ddp" / "results" / "runs").rglob("*.predictions.jsonl"))
    assert len(predictions) == 1 and len(predictions[0].read_text().splitlines()) == 11   # generated once
    assert len(list((tmp_path / "ddp" / "outputs" / "adapters").rglob("*.safetensors"))) == 1

    killed = tiny_overrides(tmp_path / "killed", *DDP)
    assert cli([*killed, "trainer.kill_at_step=4"]).returncode == -9
    assert _only_record(tmp_path / "killed")["status"] == "running"
    resumed = cli([*killed, "resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = _only_record(tmp_path / "killed")
    assert again["status"] == "ok" and again["resumed_from"].endswith("last.ckpt")
    assert [h["step"] for h in again["history"] if "train_loss" in h] == list(range(6))
    for key in ("loss", "ppl_sample", "train_loss"):
        assert again["metrics"][key] == pytest.approx(rec["metrics"][key], rel=1e-5), key


def _positions(cfg, world: int) -> int:
    """Token positions (padding included) of the first ``max_steps`` batches of every process's length-grouped
    shard: what the QNNs of a run see in training."""
    dm = ChatDataModule(cfg.data, build_tiny_tokenizer(), cfg.seed, cfg.trainer.batch_size)
    dm.setup()
    groups = LengthGroups([len(e.input_ids) for e in dm.train_set], cfg.trainer.batch_size, cfg.data.bucket_batches)
    total = 0
    for rank in range(world):
        sampler = EpochSampler(len(dm.train_set), cfg.seed, groups, world, rank)
        loader = ResumableLoader(dm.train_set, batch_size=cfg.trainer.batch_size, sampler=sampler,
                                 collate_fn=partial(collate, pad_id=dm.tokenizer.pad_token_id))

        def epochs():
            for epoch in itertools.count():
                sampler.set_epoch(epoch)
                yield from loader

        total += sum(b["input_ids"].numel() for b in itertools.islice(epochs(), cfg.trainer.max_steps))
    return total


def test_ddp_length_batches_resume_and_the_quantum_account_sums_both_processes(tmp_path, cli):
    """QTHA with data.batching=length on two processes: the account counts both shards' training tokens, and a
    killed run resumes to the uninterrupted run's losses and account."""
    extra = (*DDP, "adapter=qtha", "adapter.qnn_layers=1", "data.batching=length", "data.bucket_batches=2",
             "data.max_length=400", "eval.enabled=false")
    straight = tiny_overrides(tmp_path / "ddp", *extra)
    proc = cli(straight)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = _only_record(tmp_path / "ddp")
    account = rec["quantum_resources"]
    assert account["forward_circuits"]["train"] == account["qnn_modules"] * _positions(compose_checked(straight), 2)

    killed = tiny_overrides(tmp_path / "killed", *extra)
    assert cli([*killed, "trainer.kill_at_step=4"]).returncode == -9
    resumed = cli([*killed, "resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = _only_record(tmp_path / "killed")
    assert again["status"] == "ok" and again["resumed_from"].endswith("last.ckpt")
    train_losses = [[h["train_loss"] for h in r["history"] if "train_loss" in h] for r in (again, rec)]
    assert train_losses[0] == pytest.approx(train_losses[1], rel=1e-5)
    assert again["quantum_resources"] == account
