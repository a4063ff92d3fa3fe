"""Figures: every supported plot is written as a real PNG and PDF, and only when its data exist."""
from __future__ import annotations

from pathlib import Path

import pytest

from synthetic_records import results_dir_fixture  # noqa: F401 (the results_dir fixture)  # noqa: F401 (pytest fixture)

from qtha.report import figures, records, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(results_dir: Path, experiment: str, out: Path) -> list[Path]:
    loaded = records.load(results_dir, [experiment])
    return figures.write_figures(tables.summarise(records.frame(loaded)), records.history(loaded), experiment, out)


def test_design_card_figures_are_written_and_non_empty(results_dir: Path, tmp_path: Path):
    written = _write(results_dir, "design_card", tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(f"design_card_{n}.{ext}" for n in ("loss_curves", "vs_data_size", "params_vs_metric",
                                                                      "vs_evaluation")
                           for ext in ("png", "pdf"))
    for path in written:
        data = path.read_bytes()
        assert len(data) > 1024
        assert data.startswith(PNG_MAGIC if path.suffix == ".png" else b"%PDF")
    assert not list(tmp_path.glob("figures/.*.tmp"))  # atomic writes leave no temp files


def test_a_swept_knob_gets_its_own_plot(results_dir: Path, tmp_path: Path):
    names = {p.name for p in _write(results_dir, "qubits_sweep", tmp_path)}
    assert "qubits_sweep_vs_n_qubits.png" in names
    assert "qubits_sweep_vs_data_size.png" not in names  # one data size: nothing to sweep
    assert "qubits_sweep_vs_rank.png" not in names


def test_reevaluations_plot_beside_the_loss_as_trained(results_dir: Path):
    loaded = records.load(results_dir, ["design_card"])
    fig = figures.reevaluations(tables.summarise(records.frame(loaded)), "design_card")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["as trained", "default.mixed"]
    (errorbar,) = ax.containers                  # only qtha data.size=300 was re-evaluated
    assert list(errorbar.lines[0].get_xdata()) == [0, 1]
    assert list(errorbar.lines[0].get_ydata()) == pytest.approx([1.15, 1.25])  # seeds 1-2 as trained; seed 1 noisy
    loaded = records.load(results_dir, ["qubits_sweep"])
    assert figures.reevaluations(tables.summarise(records.frame(loaded)), "qubits_sweep") is None
