"""``python -m qtha.report``: outputs, exit codes, one-line errors; the 7B counts through qtha.params."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from synthetic_records import COUNTS, results_dir_fixture  # noqa: F401 (the results_dir fixture)  # noqa: F401 (pytest fixture)

from qtha.report import __main__ as cli
from qtha.report import counts


@pytest.fixture
def fake_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counts, "count_rows", lambda: COUNTS)


def test_report_writes_every_output(results_dir: Path, tmp_path: Path, fake_counts, capsys):
    out = tmp_path / "out"
    assert cli.main(["--results", str(results_dir), "--out", str(out)]) == 0
    expected = [f"tables/{e}.{x}" for e in ("design_card", "qubits_sweep") for x in ("md", "tex", "csv")]
    expected += ["tables/params_7b.md", "tables/params_7b.csv", "REPRODUCTION.md",
                 "figures/design_card_loss_curves.png", "figures/qubits_sweep_vs_n_qubits.pdf"]
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    assert "572,544" in (out / "tables/params_7b.md").read_text()
    assert "from 14 records" in capsys.readouterr().out
    assert "`python -m qtha.report --results" in (out / "REPRODUCTION.md").read_text()


@pytest.mark.slow  # a second whole report (~1.5 s); the fast tier writes one above
def test_named_experiment_only(results_dir: Path, tmp_path: Path, fake_counts):
    assert cli.main(["qubits_sweep", "--results", str(results_dir), "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "tables/design_card.md").exists() and (tmp_path / "tables/qubits_sweep.md").exists()


def test_unknown_experiment_exits_2(results_dir: Path, tmp_path: Path, capsys):
    assert cli.main(["nope", "--results", str(results_dir), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("qtha: error: ")


@pytest.mark.slow  # a second full report; the fast tier writes one (above)
def test_an_unreadable_record_is_left_out_with_a_warning_and_listed(results_dir: Path, tmp_path: Path, fake_counts,
                                                                     capsys):
    schema = next((results_dir / "runs" / "qubits_sweep").glob("*.json"))
    schema.write_text(json.dumps({**json.loads(schema.read_text()), "schema_version": 99}))
    corrupt = next((results_dir / "runs" / "design_card").glob("*.json"))
    corrupt.write_text('{"status": "ok"')
    assert cli.main(["--results", str(results_dir), "--out", str(tmp_path)]) == 0
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("qtha: warning: left out ") for w in warnings)
    assert any(f"{schema}: schema_version 99 is unknown; this qtha reads 1, 2" in w for w in warnings)
    assert any(f"{corrupt}: not valid JSON" in w for w in warnings)
    header = (tmp_path / "REPRODUCTION.md").read_text().split("## Verdicts")[0]
    assert "**2 unreadable records left out:**" in header and str(schema) in header and str(corrupt) in header


@pytest.mark.slow  # builds three 7B-shaped configs' meta models (~2 s)
def test_count_rows_calls_qtha_params():
    rows = counts.count_rows(models=("qwen2_7b",), configs=("lora", "qtha", "qtha_spec_v1"))
    assert isinstance(rows, pd.DataFrame)
    assert rows.set_index("config").total_trainable.to_dict() == {"lora": 1_261_568, "qtha": 572_544,
                                                                   "qtha_spec_v1": 569_856}
    assert rows.set_index("config").fewer_than_lora_r8_pct.to_dict()["qtha"] == 77.31


def test_a_whole_report_removes_what_it_no_longer_writes(results_dir: Path, tmp_path: Path, fake_counts, capsys):
    out = tmp_path / "out"
    for stale in ("tables/gone.md", "figures/gone_loss_curves.png"):
        (out / stale).parent.mkdir(parents=True, exist_ok=True)
        (out / stale).write_text("old")
    (out / "tables/notes.txt").write_text("not a report output")
    assert cli.main(["qubits_sweep", "--results", str(results_dir), "--out", str(out)]) == 0
    assert (out / "tables/gone.md").exists()  # a named report leaves other experiments' files alone
    assert cli.main(["--results", str(results_dir), "--out", str(out)]) == 0
    assert not (out / "tables/gone.md").exists() and not (out / "figures/gone_loss_curves.png").exists()
    assert (out / "tables/notes.txt").exists() and (out / "tables/design_card.md").exists()
    assert "removed" in capsys.readouterr().out
