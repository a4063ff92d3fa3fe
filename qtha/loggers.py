"""Experiment trackers: W&B (offline by default, never a prompt) or CSV, via Lightning."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from qtha.config import LoggerConfig
from qtha.errors import ConfigError, one_of, positive

log = logging.getLogger("qtha")
LOGGER_KINDS = ("wandb", "csv", "none")
WANDB_MODES = ("offline", "online", "disabled")


def has_wandb_credentials() -> bool:
    """An API key in the environment or a netrc entry: never ask interactively."""
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())


W_AND_B_NAME = re.compile(r"[^/\\#?%:\s]{1,128}")  # W&B refuses these in project and entity names

def check_logger(cfg: LoggerConfig) -> None:
    """The ``logger`` group's checks: known kind and mode, and credentials before an online run starts."""
    one_of("logger.kind", cfg.kind, LOGGER_KINDS)
    one_of("logger.mode", cfg.mode, WANDB_MODES)
    positive("logger.timeout_s", cfg.timeout_s)
    for key in ("project", "entity"):
        value = getattr(cfg, key)
        if (value is not None or key == "project") and not W_AND_B_NAME.fullmatch(str(value or "")):
            raise ConfigError(f"logger.{key}={value!r} is not a W&B name; allowed: 1-128 characters, none of "
                              "/ \\ # ? % : or spaces")
    if cfg.kind == "wandb" and cfg.mode == "online" and not has_wandb_credentials():
        raise ConfigError("logger.mode=online needs W&B credentials: set WANDB_API_KEY in the environment "
                          "or run `wandb login`; allowed without them: logger.mode=offline|disabled")


def build_logger(cfg: LoggerConfig, group: str, name: str, save_dir: Path,
                 config: dict[str, Any]) -> Optional[Logger]:
    """One tracker run per qtha run: grouped by experiment, named from the overrides."""
    save_dir.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "none":
        return None
    if cfg.kind == "csv":
        return CSVLogger(save_dir=str(save_dir), name=group, version=name)
    os.environ["WANDB_MODE"] = cfg.mode  # the config decides; WandbLogger honours the env too
    # Artifacts are staged here until `wandb sync` uploads them: beside the run folders, not in ~/.local/share.
    os.environ.setdefault("WANDB_DATA_DIR", str(save_dir / "wandb-data"))
    # No command line, code or system metadata in the run files (``wandb sync`` would upload them): a credential
    # pasted into an override would travel with them; the config it gets is scrubbed (qtha.scrub).
    settings = {"silent": True, "init_timeout": cfg.timeout_s, "login_timeout": cfg.timeout_s,
                "save_code": False, "disable_code": True, "x_disable_meta": True}
    return WandbLogger(project=cfg.project, entity=cfg.entity, group=group, name=name, save_dir=str(save_dir),
                       mode=cfg.mode, config=config, job_type="train", settings=settings)


def run_path(logger: Optional[Logger]) -> Optional[str]:
    """Where the tracker keeps this run: ``entity/project/id`` online, the local run dir offline."""
    if isinstance(logger, WandbLogger):
        run = logger.experiment
        return run.dir if run.offline else run.path
    if isinstance(logger, CSVLogger):
        return logger.log_dir
    return None


def log_run_artifact(logger: Optional[Logger], name: str, record: Path, adapter: Optional[Path],
                     metadata: dict[str, Any]) -> None:
    """Log the run's record and adapter folder as one W&B artifact (type ``qtha-run``; offline it is staged in
    the run folder and uploaded by ``wandb sync``), so the tracker holds what the run produced, not only its
    curves. A tracker error is logged, never raised: the record on disk is the result, the artifact a copy."""
    if not isinstance(logger, WandbLogger):
        return
    import wandb

    try:
        artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:128], type="qtha-run", metadata=metadata)
        artifact.add_file(str(record), name=f"record/{record.name}")
        if adapter is not None and adapter.is_dir():
            artifact.add_dir(str(adapter), name="adapter")
        logger.experiment.log_artifact(artifact)
    except Exception as exc:  # noqa: BLE001 - any W&B failure; the run's own outputs are already written
        log.warning("qtha: could not log the W&B artifact %s: %s", name, exc)


def finish(logger: Optional[Logger]) -> None:
    """Always close the W&B run, so a failed job never leaks into the next multirun job."""
    if isinstance(logger, WandbLogger):
        import wandb

        wandb.finish()
