"""``python -m qtha.run [overrides]`` / ``-m`` for sweeps: compose → train(cfg) → summary.

Every job of a sweep is composed and validated before Hydra starts (one-line errors, exit
code 2). Inside a sweep a failing job is recorded ``failed`` and the others go on.
"""
from __future__ import annotations

import json
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from qtha.compose import CONF_DIR, check_jobs
from qtha.config import ConfigError, register_configs
from qtha.train import train


def _summary(record) -> str:
    m = record.metrics
    keys = ("init_loss", "loss", "ppl", "train_loss", "steps")
    shown = {k: round(m[k], 4) if isinstance(m.get(k), float) else m.get(k) for k in keys if k in m}
    return json.dumps({"status": record.status, "run": f"{record.experiment}/{record.run_key}",
                       "trainable_params": record.trainable_params, **shown, "wall_time_s": record.wall_time_s})


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    multirun = hc.mode.name == "MULTIRUN"
    try:
        record = train(cfg, list(hc.overrides.task))
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
    print(f"qtha: {_summary(record)}")


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
