"""Every paper table is one experiment config whose sweep composes and validates job by job, and whose learning
rates come from its selection's records (``${qtha.selected:…}``), never typed in."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import experiment_text

from qtha.compose import CONF_DIR, check_jobs, compose_checked, expand_sweeps, sweeper_params
from qtha.errors import ConfigError
from qtha.identity import config_hash, plain
from qtha.results import RunRecord, record_path, write_record

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
PROTOCOLS = {"cpsycound", "math", "math_easy", "smoke"}  # protocol configs: no sweep of their own
CALIBRATIONS = {"math_easy_calibration"}  # one fixed probe of a task (a single run, its rate typed in on purpose)
SELECTIONS = sorted(e for e in EXPERIMENTS if e.startswith("select_"))
RATES = {1e-4: 1.3, 3e-4: 1.1, 1e-3: 1.0, 3e-3: 1.2, 1e-2: 1.4, 3e-2: float("nan"),  # 1e-3 wins; 3e-2 and 1e-1
         1e-1: float("nan")}  # "diverged": every rate of the declared grid has finished


def _fake_selection(results: Path, experiment: str) -> None:
    """Finished selection records for every method × rate of ``experiment`` (heldout_loss by RATES; one failed)."""
    params = sweeper_params([f"experiment={experiment}"])
    for adapter in params["adapter"].split(","):
        config = plain(compose_checked([f"experiment={experiment}", f"adapter={adapter}"]))
        for lr, loss in RATES.items():
            config["trainer"]["lr"] = lr
            record = RunRecord(status="ok" if loss == loss else "failed", experiment=experiment, label="x",
                               config_hash=config_hash(config), config=config,
                               metrics={"loss": 2.0} | ({"heldout_loss": loss} if loss == loss else {}))
            write_record(record, record_path(results, experiment, f"{adapter}-{lr}"))


@pytest.fixture(scope="module")
def selections(tmp_path_factory) -> Callable[[str], Path]:
    """``selections(experiment)``: a results folder holding fake records of every selection ``experiment`` reads.

    Selections are faked on first need (each costs one composition per method), so a test pays only for its own."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not shared.is_dir():
        pytest.skip(f"shared data slices not found at {shared}")
    results = tmp_path_factory.mktemp("results")
    faked: set[str] = set()

    def results_for(experiment: str) -> Path:
        text = experiment_text(experiment)
        for selection in sorted(set(re.findall(r"qtha\.selected:(\w+)", text)) - faked):
            _fake_selection(results, selection)
            faked.add(selection)
        return results

    return results_for


TABLES = [e for e in EXPERIMENTS if e not in PROTOCOLS | CALIBRATIONS]


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_a_calibration_is_one_valid_run(name):
    assert sweeper_params([f"experiment={name}"]) == {}
    assert compose_checked([f"experiment={name}"]).name == name


# The fast tier samples one table (a control, with its selection read); the full suite checks the ends of every
# table (and, below, every job).
FAST_TABLES = {"qtha_controls"}


@pytest.mark.parametrize("name", [n if n in FAST_TABLES else pytest.param(n, marks=pytest.mark.slow) for n in TABLES])
def test_every_table_is_one_experiment_with_a_sweep_whose_ends_validate(name, selections):
    jobs = expand_sweeps([f"experiment={name}", f"results_dir={selections(name)}"],
                         sweeper_params([f"experiment={name}"]))
    assert len(jobs) >= 2
    for job in (jobs[0], jobs[-1]):
        compose_checked(job)


@pytest.mark.slow  # ~500 compositions: what `python -m qtha.run -m experiment=<name>` checks before its first job
@pytest.mark.parametrize("name", TABLES)
def test_every_job_of_every_table_validates(name, selections):
    assert check_jobs([f"experiment={name}", f"results_dir={selections(name)}"], multirun=True) >= 2


# The fast tier reads one main comparison's selection; the full suite all of them.
@pytest.mark.parametrize("name", [n if n == "cpsycound_main" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in EXPERIMENTS if n.endswith("_main") or n == "design_card"])
def test_main_comparisons_read_the_selected_rate(name, selections):
    (job, *_) = expand_sweeps([f"experiment={name}", f"results_dir={selections(name)}"],
                              sweeper_params([f"experiment={name}"]))
    cfg = compose_checked(job)
    assert cfg.trainer.lr == 1e-3
    if name.endswith("_main"):  # their adapters are kept with the evidence, so a clone can re-evaluate them
        assert cfg.adapter_dir == f"{selections(name)}/adapters"


def test_the_knob_sweeps_take_the_default_configs_rate(selections):
    job = ["experiment=bond_dim_sweep", "adapter=qtha", "adapter.bond_dim=16",
           f"results_dir={selections('bond_dim_sweep')}"]
    assert compose_checked(job).trainer.lr == 1e-3


def test_a_main_comparison_without_its_selection_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.lr: no finished selection run of this adapter \(adapter.name=qtha\) "
                                          r"in .*select_default; allowed: run the selection first"):
        compose_checked(["experiment=design_card", "adapter=qtha", f"results_dir={tmp_path}"])


def test_a_selection_row_missing_a_rate_of_its_grid_is_one_line(tmp_path):
    """A main comparison composed while its selection still trains reads no half-grid winner."""
    _fake_selection(tmp_path, "select_default")
    for path in (tmp_path / "runs" / "select_default").glob("qtha-0.1*"):
        path.unlink()
    with pytest.raises(ConfigError, match=r"^trainer.lr: the selection row of qtha in .*select_default has 6 of the 7 "
                                          r"learning rates select_default declares \(missing 0.1\); allowed: finish it "
                                          r"first \(python -m qtha.run -m experiment=select_default results_dir=.* runs only "
                                          r"what is missing\)$"):
        compose_checked(["experiment=design_card", "adapter=qtha", f"results_dir={tmp_path}"])
    assert compose_checked(["experiment=design_card", "adapter=lora", f"results_dir={tmp_path}"]).trainer.lr == 1e-3


def test_the_command_line_beats_the_experiment_sweep():
    jobs = expand_sweeps(["experiment=qtha_ablation", "seed=7"], sweeper_params(["experiment=qtha_ablation"]))
    assert len(jobs) == 4 and all("seed=7" in job and "seed=1" not in job for job in jobs)
