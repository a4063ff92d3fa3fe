"""``python -m qtha.run [overrides]`` / ``-m`` for sweeps: compose → train(cfg) → summary.

Every job of a sweep is composed and checked before Hydra starts (one-line errors, exit
code 2), and only then: inside ``main`` the config is the one already checked. Inside a sweep a
failing job is recorded ``failed`` and the others go on; each job also appends its outcome to a file
the sweep's process names in :data:`OUTCOMES_ENV` (a launcher may run jobs in other processes), so the
sweep ends with a summary of what failed and exit code 1 when anything did. The last stdout line of a
finished job is ``qtha: {json}``, naming the record under ``record``.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from qtha.compose import CONF_DIR, check_jobs, register_configs
from qtha.errors import ConfigError
from qtha.scrub import scrub_logs
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
    scrub_logs()
    multirun = hc.mode.name == "MULTIRUN"
    if not is_global_zero_process():  # a process a multi-process strategy launched: compute, record nothing
        train_worker(cfg)
        return
    job = " ".join(hc.overrides.task)
    try:
        run = train(cfg, list(hc.overrides.task))
    except ConfigError as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        _tell_sweep({"job": job, "status": "failed", "error": str(exc)})
        return
    except Exception as exc:  # noqa: BLE001 - recorded as failed by train(); the sweep goes on
        print(f"qtha: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(1)
        _tell_sweep({"job": job, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return
    _tell_sweep({"job": job, "status": run.record.status, "record": str(run.path)})
    print(f"qtha: {summary(run)}", flush=True)


OUTCOMES_ENV = "QTHA_SWEEP_OUTCOMES"


def _tell_sweep(outcome: dict) -> None:
    """One JSON line per job in the sweep's outcome file (one ``write`` in append mode: whole lines even when
    jobs of a parallel launcher finish together)."""
    path = os.environ.get(OUTCOMES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(outcome) + "\n")


def sweep_summary(outcomes: list[dict], n_jobs: int) -> tuple[list[str], bool]:
    """The lines a finished sweep prints (jobs, ok, failed, each failure with its error; jobs that never
    reported) and whether it failed."""
    failed = [o for o in outcomes if o.get("status") != "ok"]
    silent = max(0, n_jobs - len(outcomes))
    lines = [f"qtha: sweep done: {n_jobs} jobs, {len(outcomes) - len(failed)} ok, {len(failed)} failed"
             + (f", {silent} ended without an outcome" if silent else "")]
    lines += [f"qtha: failed: {o.get('job') or '(no overrides)'}: {o.get('error') or o.get('record')}" for o in failed]
    return lines, bool(failed or silent)


def _run_sweep(n_jobs: int) -> int:
    """``main`` over the sweep, then its summary; the exit code (1 when any job failed or vanished)."""
    fd, name = tempfile.mkstemp(prefix="qtha-sweep-", suffix=".jsonl")
    os.close(fd)
    os.environ[OUTCOMES_ENV] = name
    try:
        main()
        text = Path(name).read_text(encoding="utf-8")
    finally:
        os.environ.pop(OUTCOMES_ENV, None)
        Path(name).unlink(missing_ok=True)
    lines, failed = sweep_summary([json.loads(line) for line in text.splitlines() if line.strip()], n_jobs)
    print("\n".join(lines), file=sys.stderr if failed else sys.stdout, flush=True)
    return 1 if failed else 0


def cli() -> None:
    argv = sys.argv[1:]
    multirun = "-m" in argv or "--multirun" in argv
    overrides = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]  # ~key: a deletion
    n_jobs: Optional[int] = None
    if not any(a in argv for a in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help")):
        try:
            n_jobs = check_jobs(overrides, multirun)
        except ConfigError as exc:
            print(f"qtha: error: {exc}", file=sys.stderr)
            sys.exit(2)
    register_configs()
    if multirun and n_jobs is not None:
        sys.exit(_run_sweep(n_jobs))
    main()


if __name__ == "__main__":
    cli()
