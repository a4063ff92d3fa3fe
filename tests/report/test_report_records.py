"""Loading records: flattening, re-evaluation rows, and schema changes caught with one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic_records import NOISY_TAG, _write, metrics, results_dir_fixture  # noqa: F401 (the results_dir fixture)  # noqa: F401 (pytest fixture)

from qtha.metrics.scoring import METRIC_NAMES
from qtha.report import columns, records
from qtha.results import write_record


def test_frame_has_a_row_per_record_and_per_reevaluation(results_dir: Path):
    loaded = records.load(results_dir)
    df = records.frame(loaded)
    assert len(loaded) == 14
    assert len(df) == 15
    assert set(df.status) == {"ok", "failed", "running"}
    noisy = df[df.eval_tag == NOISY_TAG]
    assert list(noisy.label) == [f"qtha (eval: {NOISY_TAG})"] and noisy.loss.item() == 1.25
    lora = df[(df.adapter == "lora") & (df.data_size == 300)]
    assert sorted(lora.seed) == [1, 2, 3] and set(lora.setting) == {"data.size=300"}
    assert set(df[df.experiment == "qubits_sweep"].n_qubits) == {2, 4}
    assert df[(df.experiment == "design_card") & (df.adapter == "qtha")].n_qubits.eq(4).all()  # default = rank


def test_only_the_named_experiments_are_loaded(results_dir: Path):
    assert {rec.experiment for _, rec in records.load(results_dir, ["qubits_sweep"])} == {"qubits_sweep"}
    with pytest.raises(records.RecordError, match="no records for experiment 'nope'; found: design_card"):
        records.load(results_dir, ["nope"])


def test_no_records_is_an_error(tmp_path: Path):
    with pytest.raises(records.RecordError, match="no run records"):
        records.load(tmp_path)


def _edit_one(results_dir: Path, edit) -> Path:
    path = sorted((results_dir / "runs" / "design_card").glob("*.json"))[0]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, field", [
    (lambda r: r.update(schema_version=3), "schema_version 3 is unknown"),
    (lambda r: r.pop("metrics"), "required field 'metrics' is missing"),
    (lambda r: r.update(metrics=[]), "field 'metrics' is list, expected dict"),
    (lambda r: r["metrics"].pop("loss"), "'metrics.loss' is missing"),
    (lambda r: r["config"].pop("adapter"), "'config.adapter.name' is missing"),
    (lambda r: r.update(status="done"), "field 'status' is 'done'"),
])
def test_a_schema_change_is_caught_in_one_line_naming_file_and_field(results_dir: Path, edit, field: str):
    path = _edit_one(results_dir, edit)
    with pytest.raises(records.RecordError) as info:
        records.load(results_dir)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and field in message and "\n" not in message


def test_invalid_json_is_named(results_dir: Path):
    path = sorted((results_dir / "runs" / "design_card").glob("*.json"))[0]
    path.write_text('{"status": "ok"')
    with pytest.raises(records.RecordError, match="not valid JSON"):
        records.load(results_dir)


def test_generation_columns_match_the_scorers():
    assert {c.key for c in columns.GENERATION} == set(METRIC_NAMES)


def test_rows_group_by_config_values_not_by_file_names(tmp_path: Path):
    """Two records with the same overrides but a different experiment-file value are two settings; a key
    only one adapter has varies only among its records."""
    values = metrics(1.0, 0.9, 0.0, 0.5)
    for seed in (1, 2):
        _write(tmp_path, "exp", "lora", 300, seed, metric_values=values)
        _write(tmp_path, "exp", "qtha", 300, seed, metric_values=values, bottleneck=64)
    path, rec = _write(tmp_path, "exp", "lora", 300, 3, metric_values=values)
    rec.config["trainer"]["max_steps"] = 120            # as if conf/experiment/<name>.yaml had been edited
    write_record(rec, path)
    df = records.frame(records.load(tmp_path))
    lora = df[df.adapter == "lora"]
    assert dict(zip(lora.seed, lora.setting)) == {1: "trainer.max_steps=60", 2: "trainer.max_steps=60",
                                                  3: "trainer.max_steps=120"}
    assert set(df[df.adapter == "qtha"].setting) == {"trainer.max_steps=60"}   # bottleneck is constant among QTHA


def test_an_ablation_or_control_alone_is_labelled_with_what_it_changes(tmp_path: Path):
    """An experiment that runs only mlp_qnn, or only a SiLU control, has no varying setting: its adapter column must
    still say which."""
    values = metrics(1.0, 1.0, 50.0, 1.0)
    _write(tmp_path, "qtha_ablation", "qtha", 300, 1, metric_values=values, variant="mlp_qnn")
    _write(tmp_path, "qtha_controls", "qtha", 300, 1, metric_values=values, branch="silu_mlp", mlp_layers=3)
    _write(tmp_path, "design_card", "qtha", 300, 1, metric_values=values)
    df = records.frame(records.load(tmp_path))
    assert dict(zip(df.experiment, df.label)) == {"qtha_ablation": "qtha (mlp_qnn)",
                                                  "qtha_controls": "qtha (silu_mlp L3)", "design_card": "qtha"}
    steps = records.history(records.load(tmp_path))
    assert set(steps[steps.experiment == "qtha_ablation"].label) == {"qtha (mlp_qnn)"}
