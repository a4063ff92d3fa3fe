"""REPRODUCTION.md's knob sweeps: each value against the method's default, seed by seed, with the paired interval;
a sweep without its default value compares nothing; the sweeps with no runs are named with their commands."""
from __future__ import annotations

from pathlib import Path

from synthetic_records import config, curve

from qtha.identity import config_hash
from qtha.report import records, sweeps
from qtha.results import RunRecord, record_path, write_record


def _runs(root: Path, experiment: str, adapter: str, losses: list[float], step: float | None = None,
          first_seed: int = 1, **knob: object) -> None:
    for seed, loss in enumerate(losses, start=first_seed):
        cfg = config(adapter, 1000, seed, experiment, **knob)
        rec = RunRecord(status="ok", experiment=experiment, label=f"{adapter}{knob}{seed}", config_hash=config_hash(cfg),
                        config=cfg, metrics={"loss": loss, "train_loss": loss, **({"step_time_s": step} if step else {})}, history=curve(loss, loss),
                        trainable_params=1000 * int(next(iter(knob.values()))))
        write_record(rec, record_path(root, experiment, rec.stem))


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line[2:-2].split(" | ")] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line][1:]


def test_the_defaults_are_what_the_layer_builds():
    """QTHA's qubits default to the rank and its circuit layers to the qubits (the authors' L = n_q = r)."""
    assert [sweeps.default("qtha", k) for k in ("rank", "n_qubits", "qnn_layers", "bond_dim")] == [4, 4, 4, 8]
    assert sweeps.default("lora", "rank") == 4
    assert "qubits_sweep" in sweeps.experiments() and "rank_sweep" in sweeps.experiments()


def test_each_value_is_set_against_the_default_by_seed(tmp_path: Path):
    _runs(tmp_path, "qubits_sweep", "qtha", [0.020, 0.022, 0.024], n_qubits=4, qnn_layers=None)
    _runs(tmp_path, "qubits_sweep", "qtha", [0.030, 0.031, 0.035], n_qubits=2, qnn_layers=None)
    _runs(tmp_path, "qubits_sweep", "qtha", [0.021, 0.021, 0.025], n_qubits=8, qnn_layers=None)
    knobs, text = sweeps.table(records.load(tmp_path), "qubits_sweep")
    assert knobs == ["n_qubits"]
    rows = _rows(text)
    assert [r[1] for r in rows] == ["n_qubits=2", "n_qubits=4", "n_qubits=8"]
    # diffs +0.010, +0.009, +0.011 on a default mean of 0.022: +45.5 %, half-width t(0.975, 2)·0.001/√3
    assert rows[0][2:] == ["2,000", "3", "1,2,3", "0.0320", "0.0066", "+45.5% (+34.2 … +56.7)", "**higher**", "—"]
    assert rows[1][-3:-1] == ["(default)", ""]
    assert rows[2][-2] == "no difference shown"  # diffs +0.001, −0.001, +0.001


def test_lower_loss_reads_lower_and_few_seeds_give_no_interval(tmp_path: Path):
    _runs(tmp_path, "rank_sweep", "lora", [0.020, 0.022, 0.024], rank=4)
    _runs(tmp_path, "rank_sweep", "lora", [0.010, 0.012, 0.013], step=1.25, rank=8)
    _runs(tmp_path, "rank_sweep", "lora", [0.030], rank=2)
    rows = _rows(sweeps.table(records.load(tmp_path), "rank_sweep")[1])
    assert rows[0][1:4] == ["rank=2", "2,000", "1"] and rows[0][-3:-1] == ["—", "n < 3"]
    assert rows[2][-2] == "**lower**" and rows[2][-3].startswith("-") and rows[2][-1] == "1.25"


def test_a_sweep_without_its_default_compares_nothing(tmp_path: Path):
    _runs(tmp_path, "bond_dim_sweep", "qtha", [0.02, 0.03, 0.04], bond_dim=2)
    _runs(tmp_path, "bond_dim_sweep", "qtha", [0.01, 0.02, 0.03], bond_dim=16)
    rows = _rows(sweeps.table(records.load(tmp_path), "bond_dim_sweep")[1])
    assert [r[-3] for r in rows] == ["— (default not run)"] * 2


def test_the_section_names_the_sweeps_not_run(tmp_path: Path):
    _runs(tmp_path, "qubits_sweep", "qtha", [0.02, 0.022, 0.024], n_qubits=4, qnn_layers=None)
    _runs(tmp_path, "qubits_sweep", "qtha", [0.03, 0.031, 0.035], n_qubits=2, qnn_layers=None)
    text = sweeps.section(records.load(tmp_path))
    assert "### `qubits_sweep`" in text and "figures/qubits_sweep_vs_n_qubits.png" in text
    assert "`python -m qtha.run -m experiment=rank_sweep results_dir=results`" in text
    assert "experiment=qubits_sweep results_dir" not in text


def test_two_varying_knobs_are_not_a_sweep():
    assert sweeps.swept([{"adapter.rank": 2, "adapter.bond_dim": 8}, {"adapter.rank": 4, "adapter.bond_dim": 4}]) is None
    assert sweeps.swept([{"adapter.rank": 2}, {"adapter.rank": 4}]) == "adapter.rank"


def test_step_time_shows_its_range_over_seeds(tmp_path: Path):
    """Seeds of one value that ran on hosts of different speed show the range beside the mean."""
    _runs(tmp_path, "rank_sweep", "lora", [0.020, 0.021], step=1.0, rank=4)
    _runs(tmp_path, "rank_sweep", "lora", [0.020], step=1.0, rank=8)
    _runs(tmp_path, "rank_sweep", "lora", [0.021], step=2.0, first_seed=2, rank=8)
    rows = _rows(sweeps.table(records.load(tmp_path), "rank_sweep")[1])
    assert [r[-1] for r in rows] == ["1.00", "1.50 (1.00–2.00)"]
