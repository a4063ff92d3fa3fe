"""Every paper table/figure file names a sweep whose every job composes and validates."""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from qtha import eval as qeval
from qtha.compose import check_jobs, compose_checked, expand_sweeps
from qtha.identity import config_hash, plain
from qtha.results import RunRecord, load_record, write_record

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
    assert sweep[2:5] == ["qtha.run", "-m", "adapter=qtha,lora"] and sweep[-2:] == ["results_dir=results", "seed=1,2"]
    assert report[2:] == ["qtha.report", "design_card"]
    with pytest.raises(SystemExit, match="'nope' is unknown; allowed: .*design_card"):
        runner.load("nope")


def test_evaluations_cover_each_finished_record_once_and_every_preset_validates(tmp_path, shared_data):
    spec = runner.load("noise_eval")
    runs = tmp_path / "runs" / spec["report"]
    runs.mkdir(parents=True)
    job = expand_sweeps(shlex.split(spec["sweep"]))[0]
    cfg = compose_checked(job)
    record = RunRecord(status="ok", experiment=spec["report"], label="a", config_hash=config_hash(cfg),
                       config=plain(cfg), overrides=job, evaluations=[{"tag": "shots_1000", "metrics": {}}])
    write_record(record, runs / "a.json")
    record.status, record.evaluations = "failed", []
    write_record(record, runs / "b.json")
    todo = runner.evaluations("noise_eval", tmp_path)
    assert [(Path(c[3]).name, c[-1]) for c in todo] == [("a.json", t) for t in spec["evaluate"] if t != "shots_1000"]
    for cmd in todo:                                   # each override set applies to the recorded config
        qeval.eval_config(load_record(runs / "a.json"), cmd[4:-2])
    assert runner.evaluations("design_card", tmp_path) == []


def test_evaluations_name_records_relative_to_where_they_run(tmp_path):
    runs = tmp_path / "results" / "runs" / "noise_eval"
    record = RunRecord(status="ok", experiment="noise_eval", label="a", config_hash="0" * 12,
                       config={"adapter": {"name": "qtha"}, "seed": 1})
    write_record(record, runs / "a.json")
    todo = runner.evaluations("noise_eval", tmp_path / "results", root=tmp_path)
    assert [c[3] for c in todo] == ["results/runs/noise_eval/a.json"] * len(runner.load("noise_eval")["evaluate"])
