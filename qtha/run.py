"""``python -m qtha.run [overrides]`` / ``-m`` for sweeps: compose → train(cfg) → summary.

Every job of a sweep is composed and checked before Hydra starts (one-line errors, exit
code 2), and only then: inside ``main`` the config is the one already checked. Inside a sweep a
failing job is recorded ``failed`` and the others go on. The last stdout line of a finished job
is ``qtha: {json}``, naming the record under ``record``.
"""
from __future__ import annotations

import json
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from qtha.compose import CONF_DIR, check_jobs, register_configs
from qtha.errors import ConfigError
from qtha.train import Run, train, train_worker
from qtha.trainer import is_global_zero_process


def summary(run: Run) -> str:
    """The one-line JSON a script can parse: status, where the record is, what it measured."""
    record = run.record
    m = record.metrics
    keys = ("init_loss", "loss", "ppl", "train_loss", "steps")
    shown = {k: round(m[k], 4) if isinstance(m.get(k), float) else m.get(k) for k in keys if k in m}
    return json.dumps({"status": record.status, "record": str(run.path), "config_hash": record.config_hash,
                       "reused": run.reused, "trainable_params": record.trainable_params, **shown,
                       "wall_time_s": record.wall_time_s})


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    multirun = hc.mode.name == "MULTIRUN"
    if not is_global_zero_process():  # a process a multi-process strategy launched: compute, record nothing
        train_worker(cfg)
        return
    try:
        run = train(cfg, list(hc.overrides.task))
    except ConfigError as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        return
    except Exception as exc:  # noqa: BLE001 - recorded as failed by train(); the sweep goes on
        print(f"qtha: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(1)
        return
    print(f"qtha: {summary(run)}", flush=True)


def cli() -> None:
    argv = sys.argv[1:]
    multirun = "-m" in argv or "--multirun" in argv
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    if not any(a in argv for a in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help")):
        try:
            check_jobs(overrides, multirun)
        except ConfigError as exc:
            print(f"qtha: error: {exc}", file=sys.stderr)
            sys.exit(2)
    register_configs()
    main()


if __name__ == "__main__":
    cli()
