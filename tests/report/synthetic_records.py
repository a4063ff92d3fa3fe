"""Synthetic run records for the report tests, built from ``RunRecord`` so they track its schema.

``design_card``: LoRA (seeds 1-3) and QTHA (seeds 1-2) at data.size 300 and 3000, one QTHA run
failed, one killed while running, one QTHA run re-evaluated on a noisy backend.
``qubits_sweep``: QTHA at adapter.n_qubits 2 and 4 (a swept knob). Round numbers, so the tests
can compute means and spreads by hand. ``COUNTS`` stands in for the 7B parameter counts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from qtha.report.counts import COLUMNS, PAPER_MODELS
from qtha.identity import config_hash
from qtha.results import RunRecord, record_path, write_record

PARAMS = {"lora": 230_400, "qtha": 453_120}
SEEDS = {"lora": (1, 2, 3), "qtha": (1, 2)}
LOSS = {("lora", 300): (1.10, 1.20, 1.30), ("lora", 3000): (1.00, 1.05, 1.10),
        ("qtha", 300): (1.14, 1.16), ("qtha", 3000): (0.98, 1.00)}
TRAIN_LOSS = {("lora", 300): (1.00, 1.10, 1.20), ("lora", 3000): (0.90, 1.00, 1.10),
              ("qtha", 300): (0.88, 0.90), ("qtha", 3000): (0.95, 0.97)}
STRICT = {("lora", 300): (0.0, 3.125, 0.0), ("lora", 3000): (0.0, 0.0, 0.0),
          ("qtha", 300): (0.0, 0.0), ("qtha", 3000): (3.125, 0.0)}
STEP_TIME = {"lora": 0.5, "qtha": 0.8}
FAILED_ERROR = "RuntimeError: injected fault at step 2 (trainer.fault_at_step)\nTraceback (most recent call last): ..."
NOISY_TAG = "default.mixed"
MODEL = "smollm2_135m"
# What qtha.report.counts.count_rows gives for LoRA and QTHA at 7B (without spending seconds on it).
COUNTS = pd.DataFrame([
    {"model": m, "config": a, "adapter": a, "rank": 4, "total_trainable": n, "per_layer": "",
     "base_params": 7_615_616_512, "pct_of_base": 100 * n / 7_615_616_512,
     "lora_r4": 1_261_568, "ratio_lora_r4": n / 1_261_568, "fewer_than_lora_r4_pct": 100 * (1 - n / 1_261_568),
     "lora_r8": 2_523_136, "ratio_lora_r8": n / 2_523_136, "fewer_than_lora_r8_pct": 100 * (1 - n / 2_523_136)}
    for m in PAPER_MODELS for a, n in (("lora", 1_261_568), ("qtha", 572_544))], columns=COLUMNS)


def config(adapter: str, size: int, seed: int, experiment: str, **knobs: Any) -> dict[str, Any]:
    """The parts of a resolved config the report reads, shaped like ``qtha.config.RunConfig``."""
    spec: dict[str, Any] = {"name": adapter, "target_modules": ["q_proj", "v_proj"], "rank": 4, "alpha": 8.0,
                            "dropout": 0.0}
    if adapter == "qtha":
        spec.update(variant="full", bottleneck=256, n_cores=4, bond_dim=8, n_qubits=None, qnn_layers=1,
                    ansatz="qtha")
    spec.update(knobs)
    return {"model": {"name": MODEL}, "adapter": spec, "data": {"name": "synthetic_math", "size": size},
            "trainer": {"max_steps": 60}, "name": experiment, "seed": seed}


def metrics(loss: float, train_loss: float, strict: float, step_time: float) -> dict[str, Any]:
    return {"init_loss": 1.85, "loss": loss, "ppl": math.exp(loss), "ppl_sample": 1.1 * math.exp(loss),
            "train_loss": train_loss, "train_loss_first": 1.9, "steps": 60, "step_time_s": step_time,
            "accuracy": strict, "strict_accuracy": strict}


def curve(loss: float, train_loss: float) -> list[dict[str, float]]:
    steps = [{"step": s, "train_loss": 1.9 - (1.9 - train_loss) * s / 59, "lr": 3e-4} for s in range(60)]
    return steps + [{"step": s, "val_loss": loss + 0.1 * (60 - s) / 60} for s in (0, 20, 40, 60)]


def _write(root: Path, experiment: str, adapter: str, size: int, seed: int, status: str = "ok",
           metric_values: dict[str, Any] | None = None, extra: tuple[str, ...] = (), **knobs: Any) -> tuple[Path, RunRecord]:
    overrides = [f"adapter={adapter}", f"data.size={size}", *extra]
    cfg = config(adapter, size, seed, experiment, **knobs)
    values = metric_values or {}
    record = RunRecord(status=status, experiment=experiment, label=f"adapter={adapter}__data.size={size}" + "".join(f"__{k}={v}" for k, v in knobs.items()) + f"__seed={seed}",
                       config_hash=config_hash(cfg), config=cfg, overrides=overrides, metrics=values,
                       history=curve(values["loss"], values["train_loss"]) if "loss" in values else [],
                       trainable_params=PARAMS[adapter], git_sha="0123456789abcdef")
    if status == "failed":
        kind, _, message = FAILED_ERROR.partition(": ")
        record.error = {"type": kind, "message": message, "traceback": ""}
    path = write_record(record, record_path(root, experiment, record.stem))
    return path, record


def write_fixture(root: Path) -> Path:
    """Write the synthetic records under ``root/runs``; return ``root`` (a results folder)."""
    for (adapter, size), losses in LOSS.items():
        for i, seed in enumerate(SEEDS[adapter]):
            values = metrics(losses[i], TRAIN_LOSS[adapter, size][i], STRICT[adapter, size][i], STEP_TIME[adapter])
            path, record = _write(root, "design_card", adapter, size, seed, metric_values=values)
            if (adapter, size, seed) == ("qtha", 300, 1):
                record.evaluations = [{"tag": NOISY_TAG, "overrides": ["quantum.device=default.mixed"],
                                       "metrics": {"loss": 1.25, "ppl": math.exp(1.25)}}]
                write_record(record, path)
    _write(root, "design_card", "qtha", 300, 3, status="failed", metric_values={"init_loss": 1.85})
    _write(root, "design_card", "qtha", 3000, 3, status="running")
    for n_qubits, loss in ((2, 1.30), (4, 1.20)):
        _write(root, "qubits_sweep", "qtha", 300, 1, metric_values=metrics(loss, loss - 0.1, 0.0, 0.8),
               extra=(f"adapter.n_qubits={n_qubits}",), n_qubits=n_qubits)
    return root


@pytest.fixture(name="results_dir")
def results_dir_fixture(tmp_path: Path) -> Path:
    """The fixture records in ``tmp_path/results`` (imported by the test modules: a conftest.py here
    would shadow ``tests/conftest.py``, which other tests import by name)."""
    return write_fixture(tmp_path / "results")
