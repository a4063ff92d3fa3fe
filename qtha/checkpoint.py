"""Resumable checkpoints: ``work_dir/checkpoints/<name>/<config-hash>/last.ckpt``, what ``resume=true`` continues from.

Keyed by the config hash, so a run can only ever resume a checkpoint of its own config.

A checkpoint is Lightning's full training state minus the frozen weights: optimiser, scheduler,
loop counters and the data position (:mod:`qtha.data.resumable`) from Lightning, adapter
weights, RNG streams and the history from :meth:`qtha.module.AdapterLM.on_save_checkpoint`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lightning.pytorch import Callback

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger("qtha")
LAST = "last.ckpt"


def checkpoint_dir(work_dir: str | Path, experiment: str, key: str) -> Path:
    return Path(work_dir) / "checkpoints" / experiment / key


def resume_checkpoint(ckpt_dir: Path, resume: bool) -> Optional[Path]:
    """The checkpoint to continue from, or None to start from scratch.

    Starting from scratch removes an older ``last.ckpt`` first, so a later ``resume=true`` can
    only ever continue this attempt, never one made with older code or a finished run.
    """
    last = ckpt_dir / LAST
    if resume and last.is_file():
        log.warning("qtha: resume=true: continuing from %s", last)
        return last
    if resume:
        log.warning("qtha: resume=true but no checkpoint at %s; starting from scratch", last)
    last.unlink(missing_ok=True)
    return None


class LastCheckpoint(Callback):
    """Write ``last.ckpt`` every ``every`` optimiser steps, atomically (temp file, then rename).

    When a validation runs at that step, the checkpoint is written again after it: resuming from
    a checkpoint taken before it, Lightning would skip that validation, leaving a gap in the history.
    """

    def __init__(self, ckpt_dir: Path, every: int) -> None:
        self.path, self.every = ckpt_dir / LAST, every
        self.saved_step, self.just_saved = -1, False

    def _save(self, trainer: "L.Trainer") -> None:
        tmp = self.path.with_name(f".{LAST}.{os.getpid()}.tmp")  # the process's own: never another run's file
        trainer.save_checkpoint(tmp, weights_only=False)  # full training state; every rank calls it, rank zero writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self.saved_step = trainer.global_step

    def on_train_batch_start(self, *args: Any) -> None:
        self.just_saved = False

    def on_train_batch_end(self, trainer: "L.Trainer", *args: Any) -> None:
        step = trainer.global_step  # the first batch that sees a new step is the one that made it
        if step > 0 and step % self.every == 0 and step != self.saved_step:
            self._save(trainer)
            self.just_saved = True

    def on_validation_end(self, trainer: "L.Trainer", *args: Any) -> None:
        if trainer.state.fn == "fit" and self.just_saved:
            self._save(trainer)
