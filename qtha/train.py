"""``train(cfg) -> Run``: reuse, resume or run one experiment, and keep its record honest.

A plain function (tests call it directly); ``qtha.run`` only wraps it with Hydra. The run is
looked up by its resolved config (:func:`qtha.results.find_run`): a finished record of the same
config is reused, an unfinished one resumed with ``resume=true``; anything else is a new run.
Whatever happens after that, the record is written: ``ok`` with metrics, or ``failed`` with the
error, so one broken job never silently disappears from a sweep. Under a multi-process strategy
only the global-zero process touches records, adapters and predictions (:func:`train_worker` is
what the other processes run).
"""
from __future__ import annotations

import logging
import resource
import shlex
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from qtha import adapters, offline
from qtha.backbone import base_reference
from qtha.build import Built, build
from qtha.checkpoint import LastCheckpoint, checkpoint_dir, resume_checkpoint
from qtha.data import fingerprint
from qtha.errors import ConfigError
from qtha.eval import reevaluate
from qtha.evaluation import Measurement, measure, validate, write_predictions
from qtha.identity import config_hash, label, plain
from qtha.interop.adapter_dir import WEIGHTS_FILE, describe, save_adapter_dir
from qtha.lock import lock_path, run_lock
from qtha.loggers import build_logger, finish, log_run_artifact, run_path
from qtha.provenance import environment, git_dirty, git_sha, versions
from qtha.quantum.resources import QuantumAccount
from qtha.results import (RunRecord, find_run, load_record, predictions_path, record_path, set_aside, timed_phase,
                          write_record)
from qtha.scrub import scrub
from qtha.trainer import resolve_precision

log = logging.getLogger("qtha")


@dataclass
class Run:
    """A run's record, where it lives, and whether it was reused rather than computed now."""

    path: Path
    record: RunRecord
    reused: bool = False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(cfg: DictConfig, overrides: Optional[list[str]] = None) -> Run:
    """Run the experiment a checked config (:func:`qtha.compose.compose_checked`) describes.

    ``overrides`` (the command line) only name the record file; the config decides everything else. The whole
    run holds the lock of its identity (:mod:`qtha.lock`): an identical run started meanwhile fails at once.
    """
    with run_lock(lock_path(cfg.results_dir, cfg.name, config_hash(cfg))):
        return _train(cfg, list(overrides or []))


def _train(cfg: DictConfig, overrides: list[str]) -> Run:
    digest = config_hash(cfg)
    found = find_run(cfg.results_dir, cfg.name, cfg)
    if found and found[1].status == "ok" and not cfg.force:
        return _reevaluate(cfg, _reuse(cfg, *found))
    if cfg.allow_hub:
        offline.allow_hub()
    ckpt_dir = checkpoint_dir(cfg.work_dir, cfg.name, digest)
    resume_from = resume_checkpoint(ckpt_dir, cfg.resume)
    record = RunRecord(status="running", experiment=cfg.name, label=found[1].label if found else label(cfg, overrides),
                       config_hash=digest, config=plain(cfg), overrides=overrides, git_sha=git_sha(),
                       git_dirty=git_dirty(), versions=versions(), environment=environment(), started_at=_now(),
                       resumed_from=str(resume_from) if resume_from else None)
    path = found[0] if found else record_path(cfg.results_dir, cfg.name, record.stem)
    if not found:  # a file at this config's name that find_run could not read: kept, never overwritten
        aside = set_aside(path)
        if aside:
            log.warning("qtha: %s could not be read as a record; kept as %s, writing a new one", path, aside)
    write_record(record, path)
    start = time.perf_counter()
    logger: Optional[Logger] = None
    try:
        logger = build_logger(cfg.logger, group=cfg.name, name=record.stem, save_dir=Path(cfg.work_dir) / "loggers",
                              config={**scrub(record.config), "config_hash": record.config_hash})
        record.wandb_run = run_path(logger)
        _fit_and_measure(cfg, record, path, ckpt_dir, resume_from, logger)
        record.status = "ok"
    except Exception as exc:  # recorded, then re-raised for the caller to decide
        record.status = "failed"
        record.error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc(limit=20)}
        raise
    finally:
        record.wall_time_s = round(time.perf_counter() - start, 2)
        record.peak_rss_mb = round(_peak_rss_mb(), 1)
        record.finished_at = _now()
        write_record(record, path)
        adapter = Path(record.adapter_path).parent if record.adapter_path else None
        log_run_artifact(logger, f"{cfg.name}-{record.config_hash}", path, adapter,
                         {"config_hash": record.config_hash, "status": record.status, "experiment": cfg.name})
        finish(logger)
    return _reevaluate(cfg, Run(path, record))


def _reevaluate(cfg: DictConfig, run: Run) -> Run:
    """The ``reevaluate`` entries the finished record still lacks, each as ``python -m qtha.eval`` would."""
    done = {e.get("tag") for e in run.record.evaluations}
    missing = {tag: shlex.split(overrides) for tag, overrides in cfg.reevaluate.items() if tag not in done}
    for tag, overrides in missing.items():
        log.info("qtha: re-evaluating %s as %s: %s", run.path, tag, " ".join(overrides))
        reevaluate(run.path, overrides, tag)
    return Run(run.path, load_record(run.path), run.reused) if missing else run


def _reuse(cfg: DictConfig, path: Path, done: RunRecord) -> Run:
    """The finished record of this config, unless the data it was measured on has changed since."""
    now = fingerprint(cfg.data)
    if done.data_fingerprint and done.data_fingerprint != now:
        raise ConfigError(f"{path} has the same config but was measured on other data (fingerprint "
                          f"{done.data_fingerprint[:12]}, now {now[:12]}); allowed: force=true to rerun and "
                          "replace it, or restore the data it was made from")
    here = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    if done.precision and done.precision != here:  # trainer.precision=auto resolves by machine: say so, loudly
        log.warning("qtha: %s trained at %s; trainer.precision=%s resolves to %s on this machine. Reusing it as "
                    "recorded (the report pairs only runs of one precision); force=true reruns it here at %s.",
                    path, done.precision, cfg.trainer.precision, here, here)
    log.warning("qtha: %s is this config, already done (status ok); reusing it. Use force=true to rerun.", path)
    return Run(path, done, reused=True)


def train_worker(cfg: DictConfig) -> None:
    """A non-zero rank of a multi-process strategy: the same build, fit and validation (the collectives
    need every process), no record, no adapter file, no generation."""
    ckpt = checkpoint_dir(cfg.work_dir, cfg.name, config_hash(cfg)) / "last.ckpt"
    resume_from = ckpt if cfg.resume and ckpt.is_file() else None
    account = QuantumAccount(cfg.quantum)  # its sums over processes are collectives: every process counts
    built = build(cfg, callbacks=[account, LastCheckpoint(ckpt.parent, cfg.trainer.checkpoint_every)])
    account.attach(built.model)
    validate(built)
    _fit(cfg, built, resume_from)
    validate(built)


def _fit(cfg: DictConfig, built: Built, resume_from: Optional[Path]) -> bool:
    """Train (when there is something to train); returns whether it did."""
    if built.trainable_params == 0 or cfg.trainer.max_steps == 0:
        return False
    # weights_only=False: our own checkpoint, which holds Python/numpy RNG states
    built.trainer.fit(built.module, datamodule=built.data, ckpt_path=resume_from, weights_only=False)
    return True


def _fit_and_measure(cfg: DictConfig, record: RunRecord, path: Path, ckpt_dir: Path,
                     resume_from: Optional[Path], logger: Optional[Logger]) -> None:
    """The heavy part: build, validate at step 0, fit, measure, save. Each phase's seconds go to
    ``record.timings`` as it ends (or fails), the QNN's circuit account to ``record.quantum_resources``."""
    account, built, timings = QuantumAccount(cfg.quantum), None, record.timings
    try:
        with timed_phase(timings, "load_s"):
            built = build(cfg, logger=logger,
                          callbacks=[account, LastCheckpoint(ckpt_dir, cfg.trainer.checkpoint_every)])
        account.attach(built.model)
        record.trainable_params, record.total_params = built.trainable_params, built.total_params
        record.trainable_per_module = built.trainable_per_module
        record.data_summary, record.data_fingerprint = built.data.summary(), built.data_fingerprint
        log.info("qtha: data %s", record.data_summary)
        with timed_phase(timings, "validate_s"):
            before, _ = validate(built)
        record.metrics.update({f"init_{k}": v for k, v in before.items()})
        with timed_phase(timings, "train_s"):  # includes the validations during training
            trained = _fit(cfg, built, resume_from)
        if trained:
            record.metrics.update(_train_metrics(built))
        after = _measure(built, cfg, timings)
        record.metrics.update(after.metrics)
        record.history, record.precision = built.module.history, str(built.trainer.precision)
        _save_outputs(cfg, record, path, built, after)
    finally:
        if built is not None:
            record.quantum_resources = account.summary(built.trainer.global_step)


def _measure(built: Built, cfg: DictConfig, timings: dict[str, float]) -> Measurement:
    """:func:`qtha.evaluation.measure` with its phases' seconds added to ``timings``; when it fails, the seconds
    it ran are ``measure_s`` (its validation and generation are not told apart then)."""
    with timed_phase(timings, "measure_s"):
        after = measure(built, cfg.eval, cfg.data.max_length)
    del timings["measure_s"]
    for key, seconds in after.timings.items():
        timings[key] = round(timings.get(key, 0.0) + seconds, 3)
    return after


def _train_metrics(built: Built) -> dict[str, Any]:
    losses = [h["train_loss"] for h in built.module.history if "train_loss" in h]
    tail = losses[-max(1, len(losses) // 10):]
    return {"train_loss": sum(tail) / len(tail), "train_loss_first": losses[0],
            "steps": built.trainer.global_step, "step_time_s": built.module.median_step_time()}


def _save_outputs(cfg: DictConfig, record: RunRecord, path: Path, built: Built, measured: Measurement) -> None:
    """Generation settings and predictions beside the record; the trained adapter under ``adapter_dir``."""
    if measured.generation is not None:
        record.generation = measured.generation
        record.predictions_path = str(write_predictions(predictions_path(path), measured.predictions))
    if cfg.trainer.save_adapter and record.trainable_params > 0:
        wrapped = [name for name, _ in adapters.adapter_layers(built.model)]
        folder = save_adapter_dir(built.model, Path(cfg.adapter_dir) / cfg.name / path.stem,
                                  describe(cfg.adapter, cfg.quantum, base_reference(cfg.model), wrapped))
        record.adapter_path = str(folder / WEIGHTS_FILE)
