"""The ``trainer`` group's owner: its checks, the precision policy and the one Lightning ``Trainer``
factory that training and re-evaluation share (so their settings cannot drift apart)."""
from __future__ import annotations

import importlib.util
import math
import os
import signal
from pathlib import Path
from typing import Any, Optional, Sequence

from lightning.pytorch import Callback, Trainer
from omegaconf import DictConfig, OmegaConf

from qtha.config import RunConfig, TrainerConfig
from qtha.errors import ConfigError, one_of, positive

PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


# AdamW moves every weight by about lr per step, whatever the gradient's scale: above 1 no adapter weight keeps
# its scale for one step. The selection grids stop at 1e-1.
MAX_LR = 1.0
MAX_STEPS = 10_000_000  # a bound that catches a unit slip (1e20) before Lightning loops towards it
MAX_BATCH = 65_536  # rows per batch, batches per optimiser step: far above any recipe, below a runaway loop


def check_trainer(t: TrainerConfig) -> None:
    """One-line ConfigErrors for values Lightning would otherwise reject after the model is loaded."""
    if not 0 <= t.max_steps <= MAX_STEPS:
        raise ConfigError(f"trainer.max_steps={t.max_steps} is out of range; allowed: 0..{MAX_STEPS:,}")
    for key in ("batch_size", "accumulate_grad_batches", "lr", "val_check_interval", "log_every_n_steps",
                "checkpoint_every"):
        positive(f"trainer.{key}", getattr(t, key))
    if t.lr > MAX_LR:
        raise ConfigError(f"trainer.lr={t.lr:g} is above the ceiling; allowed: 0 < lr <= {MAX_LR:g} (AdamW moves "
                          "every weight by about lr per step)")
    if not (math.isfinite(t.weight_decay) and t.weight_decay >= 0):
        raise ConfigError(f"trainer.weight_decay={t.weight_decay} must be a finite number >= 0")
    if t.warmup_steps < 0 or not t.gradient_clip_val >= 0 or not math.isfinite(t.gradient_clip_val) \
            or not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError("trainer.warmup_steps and trainer.gradient_clip_val must be >= 0, "
                          f"trainer.min_lr_ratio in [0, 1] (got {t.warmup_steps}, {t.gradient_clip_val}, "
                          f"{t.min_lr_ratio})")
    one_of("trainer.precision", str(t.precision), PRECISIONS)
    one_of("trainer.accelerator", t.accelerator, ACCELERATORS)
    for key in ("num_workers", "fault_at_step", "kill_at_step"):
        value = getattr(t, key)
        if value is not None and value < 0:
            raise ConfigError(f"trainer.{key}={value} must be >= 0")
    if not 0 <= t.warmup_steps <= MAX_STEPS:
        raise ConfigError(f"trainer.warmup_steps={t.warmup_steps} is out of range; allowed: 0..{MAX_STEPS:,}")
    for key in ("batch_size", "accumulate_grad_batches"):
        if getattr(t, key) > MAX_BATCH:
            raise ConfigError(f"trainer.{key}={getattr(t, key)} is above the ceiling; allowed: 1..{MAX_BATCH:,} "
                              "(rows per step beyond it only loop or exhaust memory)")
    cores = os.cpu_count() or 1
    if t.num_workers > cores:
        raise ConfigError(f"trainer.num_workers={t.num_workers} exceeds this machine's {cores} CPU cores; "
                          f"allowed: 0..{cores}")
    _check_hardware(t)


def _check_hardware(t: TrainerConfig) -> None:
    """Accelerator, device count, strategy and precision against what this machine has and has installed: Lightning
    would otherwise fail after the model is loaded, or (``16-mixed`` on a CPU) silently train in another precision
    than the record says."""
    import torch

    present = {"cpu": os.cpu_count() or 1, "gpu": torch.cuda.device_count(), "cuda": torch.cuda.device_count(),
               "mps": int(torch.backends.mps.is_available()), "auto": None}
    available = present[t.accelerator]
    if available == 0:
        raise ConfigError(f"trainer.accelerator={t.accelerator} but this machine has no such device; allowed: "
                          f"cpu, auto{', gpu' if present['gpu'] else ''}")
    devices = t.devices
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    count = None
    if isinstance(devices, bool) or not isinstance(devices, (int, str, Sequence)) or \
            (isinstance(devices, str) and devices != "auto") or (isinstance(devices, int) and devices < 1 and
                                                                  devices != -1):
        raise ConfigError(f"trainer.devices={devices!r} is not allowed; allowed: a count >= 1, -1 (all), auto, "
                          "or a non-empty list of device indices")
    if isinstance(devices, int):
        count = devices if devices != -1 else None
    elif not isinstance(devices, str):
        indices = list(devices)
        if not indices or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
            raise ConfigError(f"trainer.devices={indices} is not allowed; allowed: a count >= 1, -1 (all), auto, "
                              "or a non-empty list of device indices")
        count = max(indices) + 1
    if count is not None and available is not None and count > available:
        raise ConfigError(f"trainer.devices={devices} asks for more {t.accelerator} devices than this machine has "
                          f"({available}); allowed: 1..{available}, -1 (all) or auto")
    gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and present["gpu"] > 0)
    if t.strategy != "auto":
        from lightning.pytorch.strategies import StrategyRegistry

        usable = [s for s in StrategyRegistry.available_strategies() if not ("xla" in s or "tpu" in s)
                  and not (s.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None)
                  and not (s.startswith("fsdp") and not gpu)]
        one_of("trainer.strategy", t.strategy, ["auto", *usable])
    if str(t.precision) == "16-mixed" and not gpu:
        raise ConfigError("trainer.precision=16-mixed needs a CUDA GPU (on a CPU Lightning would silently train in "
                          "bf16-mixed); allowed here: auto, 32-true, bf16-mixed, bf16-true")


def _epoch_steps(epochs: Any, *, _root_: DictConfig) -> int:
    """``${qtha.epochs:3}``: the optimiser steps of that many passes over the ``data.size`` training rows."""
    t = _root_.trainer
    return max(1, math.ceil(float(epochs) * _root_.data.size / (t.batch_size * t.accumulate_grad_batches)))


def _warmup_steps(fraction: Any, *, _root_: DictConfig) -> int:
    """``${qtha.warmup:0.1}``: that fraction of ``trainer.max_steps`` as warm-up steps."""
    return int(round(float(fraction) * _root_.trainer.max_steps))


def register_resolvers() -> None:
    """The epochs-based recipe in step terms, so a resolved config holds the steps it trains (identity)."""
    for name, fn in (("qtha.epochs", _epoch_steps), ("qtha.warmup", _warmup_steps)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


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


class FaultInjection(Callback):
    """Testing aids, fired when optimiser step ``step`` is about to run.

    ``trainer.fault_at_step`` raises: how the tests prove that a failing job is recorded
    ``failed`` while the rest of a sweep goes on. ``trainer.kill_at_step`` (``kill=True``) sends the
    process SIGKILL, as an OOM killer or a pre-empted node would: no record update, no clean-up,
    what ``resume=true`` must recover from.
    """

    def __init__(self, step: int, kill: bool = False) -> None:
        self.step, self.kill = step, kill

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault at step {self.step} (trainer.fault_at_step)")


def build_trainer(cfg: RunConfig, logger: Optional[Any] = None, callbacks: Sequence[Callback] = ()) -> Trainer:
    """The run's ``Trainer``: fixed ``max_steps``, validation every ``val_check_interval`` steps, no
    sanity pass (the run validates at step 0 itself), Lightning's own checkpointing off (``qtha.checkpoint``
    writes adapter-only ones)."""
    t = cfg.trainer
    extra: list[Callback] = list(callbacks)
    if t.fault_at_step is not None:
        extra.append(FaultInjection(t.fault_at_step))
    if t.kill_at_step is not None:
        extra.append(FaultInjection(t.kill_at_step, kill=True))
    return Trainer(
        max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator), gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches, val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None, log_every_n_steps=t.log_every_n_steps, logger=logger or False,
        callbacks=extra, enable_checkpointing=False, enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False, deterministic=t.deterministic, num_sanity_val_steps=0,
        default_root_dir=cfg.work_dir,
    )


def is_global_zero_process() -> bool:
    """Whether this process is rank 0 (or the only process). Decided from the launcher's environment, so it
    holds before a Trainer exists: Lightning's subprocess launcher re-runs the command with ``LOCAL_RANK``
    (and ``NODE_RANK``) set, torchrun sets ``RANK``, SLURM ``SLURM_PROCID``."""
    return all(int(os.environ.get(var) or 0) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
