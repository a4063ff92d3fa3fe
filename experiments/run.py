"""Run one paper table/figure: ``python experiments/run.py <name> [extra overrides…]``.

Each ``experiments/<name>.yaml`` holds the sweep's overrides and the report to regenerate
(both also spelled out as commands in its header comment). This script runs the sweep with
``python -m qtha.run -m`` and then ``python -m qtha.report <report>``; finished runs are
skipped by the run records, so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def load(name: str) -> dict:
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in HERE.glob("*.yaml")))
        raise SystemExit(f"experiments: {name!r} is unknown; allowed: {known}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def commands(name: str, extra: list[str]) -> list[list[str]]:
    spec = load(name)
    return [[sys.executable, "-m", "qtha.run", "-m", *shlex.split(spec["sweep"]), *extra],
            [sys.executable, "-m", "qtha.report", spec["report"]]]


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: python experiments/run.py <name> [overrides…]")
    for cmd in commands(argv[0], argv[1:]):
        print("+", shlex.join(cmd[1:]), flush=True)
        code = subprocess.call(cmd, cwd=HERE.parent)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
