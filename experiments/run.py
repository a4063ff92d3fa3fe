"""Run one paper table/figure: ``python experiments/run.py <name> [extra overrides…]``.

Each ``experiments/<name>.yaml`` holds the sweep's overrides, optional re-evaluations
(``evaluate: {tag: overrides}``, e.g. the same adapters with a noisy QNN) and the report to
regenerate (all also spelled out as commands in its header comment). This script rebuilds the
project's evidence: it runs the sweep with ``python -m qtha.run -m … results_dir=results`` (the
committed records; a plain ``python -m qtha.run`` writes to the git-ignored workspace), then
``python -m qtha.eval <record> <overrides> --tag <tag>`` for every finished record of the
experiment that lacks that tag, then ``python -m qtha.report <report>``. Finished runs of the
same config and finished evaluations are skipped by the records, so an interrupted experiment
resumes where it stopped. Extra overrides apply to the sweep only.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from qtha.results import load_record, record_files

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"


def load(name: str) -> dict:
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in HERE.glob("*.yaml")))
        raise SystemExit(f"experiments: {name!r} is unknown; allowed: {known}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def commands(name: str, extra: list[str]) -> list[list[str]]:
    spec = load(name)
    return [[sys.executable, "-m", "qtha.run", "-m", *shlex.split(spec["sweep"]), "results_dir=results", *extra],
            [sys.executable, "-m", "qtha.report", spec["report"]]]


def evaluations(name: str, results: Path = RESULTS, root: Path = HERE.parent) -> list[list[str]]:
    """The re-evaluations still missing: every finished record of the experiment × every ``evaluate`` tag.

    Records are named relative to ``root`` (where the commands run), so the paths that
    ``qtha.eval`` writes into them stay valid in any clone."""
    spec = load(name)
    wanted = spec.get("evaluate") or {}
    todo = []
    for path in record_files(results / "runs" / spec["report"]):
        record = load_record(path)
        if record.status != "ok":
            continue
        done = {e.get("tag") for e in record.evaluations}
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        todo += [[sys.executable, "-m", "qtha.eval", str(shown), *shlex.split(overrides), "--tag", tag]
                 for tag, overrides in wanted.items() if tag not in done]
    return todo


def _call(cmd: list[str]) -> int:
    print("+", shlex.join(cmd[1:]), flush=True)
    return subprocess.call(cmd, cwd=HERE.parent)


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: python experiments/run.py <name> [overrides…]")
    sweep, report = commands(argv[0], argv[1:])
    code = _call(sweep)
    for cmd in [*evaluations(argv[0]), report]:  # evaluations are listed once the sweep's records exist
        code = code or _call(cmd)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
