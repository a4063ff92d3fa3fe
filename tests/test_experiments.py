"""Every paper table/figure file names a sweep whose every job composes and validates."""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from qtha.compose import check_jobs

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
spec = importlib.util.spec_from_file_location("experiments_run", EXPERIMENTS / "run.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


@pytest.mark.parametrize("name", sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")))
def test_experiment_sweep_composes_and_header_matches(name, shared_data):
    sweep = runner.load(name)["sweep"]
    assert check_jobs(shlex.split(sweep), multirun=True) >= 2
    header = (EXPERIMENTS / f"{name}.yaml").read_text()
    assert f"python -m qtha.run -m {sweep}" in header and f"python -m qtha.report {name}" in header


def test_runner_builds_sweep_then_report_and_rejects_unknown_names():
    sweep, report = runner.commands("design_card", ["seed=1,2"])
    assert sweep[2:5] == ["qtha.run", "-m", "adapter=qtha,lora"] and sweep[-1] == "seed=1,2"
    assert report[2:] == ["qtha.report", "design_card"]
    with pytest.raises(SystemExit, match="'nope' is unknown; allowed: .*design_card"):
        runner.load("nope")
