"""``train(cfg) -> RunRecord``: seed, build LM + adapters + data, fit, evaluate, record.

A plain function (tests call it directly); ``qtha.run`` only wraps it with Hydra. Whatever
happens after validation, a record is written: ``ok`` with metrics, or ``failed`` with the
error, so one broken job never silently disappears from a sweep.
"""
from __future__ import annotations

import logging
import os
import resource
import signal
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf

from qtha import offline
from qtha.checkpoint import LastCheckpoint, checkpoint_dir, resume_checkpoint
from qtha.config import validate
from qtha.results import (RunRecord, environment, git_sha, is_done, load_record, predictions_path, record_path,
                          run_key, scrub, versions, write_record)

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger("qtha")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resolve_precision(requested: str, accelerator: str) -> str:
    """``auto``: bf16 autocast where the hardware does bf16 natively, else fp32."""
    if requested != "auto":
        return requested
    import torch

    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "32-true"
    return "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "32-true"


def train(cfg: DictConfig, overrides: Optional[list[str]] = None) -> RunRecord:
    """Run one experiment described by a composed config; return (and write) its record."""
    validate(cfg)
    overrides = list(overrides or [])
    key = run_key(overrides, cfg.seed)
    done = is_done(cfg.results_dir, cfg.name, key)
    if done and not cfg.force:
        path = record_path(cfg.results_dir, cfg.name, key)
        log.warning("qtha: %s already done (status ok); skipping. Use force=true to rerun.", path)
        return RunRecord(**load_record(path))
    if cfg.allow_hub:
        offline.allow_hub()
    ckpt_dir = checkpoint_dir(cfg.work_dir, cfg.name, key)
    resume_from = resume_checkpoint(ckpt_dir, cfg.resume and not done)

    record = RunRecord(status="running", experiment=cfg.name, run_key=key, overrides=overrides,
                       config=OmegaConf.to_container(cfg, resolve=True), git_sha=git_sha(),
                       versions=versions(), environment=environment(), started_at=_now(),
                       resumed_from=str(resume_from) if resume_from else None)
    write_record(record, cfg.results_dir)
    start = time.perf_counter()
    try:
        _fit_and_evaluate(cfg, record, ckpt_dir, resume_from)
        record.status = "ok"
    except Exception as exc:  # recorded, then re-raised for the caller to decide
        record.status = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        record.environment["traceback"] = traceback.format_exc(limit=20)
        raise
    finally:
        record.wall_time_s = round(time.perf_counter() - start, 2)
        record.peak_rss_mb = round(_peak_rss_mb(), 1)
        record.finished_at = _now()
        write_record(record, cfg.results_dir)
    return record


def _fit_and_evaluate(cfg: DictConfig, record: RunRecord, ckpt_dir: Path, resume_from: Optional[Path]) -> None:
    """The heavy part: everything here runs after the config passed validation."""
    import lightning as L

    from qtha import adapters
    from qtha.backbone import load_backbone
    from qtha.data.module import ChatDataModule
    from qtha.loggers import build_logger, finish, run_path
    from qtha.module import AdapterLM

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, tokenizer = load_backbone(cfg.model)
    adapters.inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
    model.train()  # dropout on while fitting; Lightning switches to eval around validation
    record.trainable_params = adapters.count_trainable(model)
    record.total_params = adapters.count_total(model)
    record.trainable_per_module = adapters.expected_trainable(model, cfg.adapter)

    data = ChatDataModule(cfg.data, tokenizer, cfg.seed, cfg.trainer.batch_size, cfg.trainer.num_workers)
    data.setup()
    record.metrics["data"] = data.summary()
    log.info("qtha: data %s", record.metrics["data"])

    work = Path(cfg.work_dir)
    logger = build_logger(cfg.logger, group=cfg.name, name=record.run_key, save_dir=work / "loggers",
                          config=scrub(record.config))  # W&B keeps the config: no credentials in it
    try:
        record.wandb_run = run_path(logger)
        module = AdapterLM(model, cfg.trainer)
        trainer = _trainer(cfg, logger, ckpt_dir)
        before = trainer.validate(module, datamodule=data, verbose=False)[0]
        record.metrics.update({f"init_{k.split('/')[-1]}": v for k, v in before.items()})
        if record.trainable_params > 0 and cfg.trainer.max_steps > 0:
            # weights_only=False: our own checkpoint, which holds Python/numpy RNG states
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=False)
            train_losses = [h["train_loss"] for h in module.history if "train_loss" in h]
            tail = train_losses[-max(1, len(train_losses) // 10):]
            record.metrics["train_loss"] = sum(tail) / len(tail)
            record.metrics["train_loss_first"] = train_losses[0]
            record.metrics["steps"] = trainer.global_step
            record.metrics["step_time_s"] = module.median_step_time()
        after = trainer.validate(module, datamodule=data, verbose=False)[0]
        record.metrics.update({k.split("/")[-1]: v for k, v in after.items()})
        record.metrics["precision"] = str(trainer.precision)
        record.metrics["history"] = module.history
        if cfg.eval.enabled:
            _generate_and_score(cfg, record, model, tokenizer, data.test_rows, str(trainer.precision))
        if cfg.trainer.save_adapter and record.trainable_params > 0:
            path = work / "adapters" / cfg.name / f"{record.run_key}.safetensors"
            adapters.save_adapter(model, path)
            record.adapter_path = str(path)
    finally:
        finish(logger)


def _generate_and_score(cfg: DictConfig, record: RunRecord, model: Any, tokenizer: Any, rows: list,
                        precision: str) -> None:
    """Greedy generation on the test rows; metrics into the record, predictions beside it."""
    from qtha.evaluation import evaluate_generation, write_predictions

    metrics, predictions = evaluate_generation(model, tokenizer, rows, cfg.eval, cfg.data.max_length, precision)
    record.metrics.update(metrics)
    path = predictions_path(record_path(cfg.results_dir, cfg.name, record.run_key))
    record.predictions_path = str(write_predictions(path, predictions))


class FaultInjection(Callback):
    """Testing aids, fired when optimiser step ``step`` is about to run.

    ``trainer.fault_at_step`` raises: how the tests prove that a failing job is recorded
    ``failed`` while the rest of a sweep goes on. ``trainer.kill_at_step`` (``kill=True``) sends the
    process SIGKILL, as an OOM killer or a pre-empted node would: no record update, no clean-up,
    what ``resume=true`` must recover from.
    """

    def __init__(self, step: int, kill: bool = False) -> None:
        self.step, self.kill = step, kill

    def on_train_batch_start(self, trainer: "L.Trainer", *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault at step {self.step} (trainer.fault_at_step)")


def _trainer(cfg: DictConfig, logger: Any, ckpt_dir: Path) -> "L.Trainer":
    import lightning as L

    t = cfg.trainer
    callbacks: list[Callback] = [LastCheckpoint(ckpt_dir, t.checkpoint_every)]
    if t.fault_at_step is not None:
        callbacks.append(FaultInjection(t.fault_at_step))
    if t.kill_at_step is not None:
        callbacks.append(FaultInjection(t.kill_at_step, kill=True))
    return L.Trainer(
        max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator), gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches, val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None, log_every_n_steps=t.log_every_n_steps, logger=logger or False,
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False, deterministic=t.deterministic, num_sanity_val_steps=0,
        default_root_dir=cfg.work_dir,
    )
