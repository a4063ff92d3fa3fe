"""Figures: every supported plot is written as a real PNG and PDF, and only when its data exist."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

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


@pytest.mark.slow  # a second figure set (~2 s); the design card's figures above are the fast tier's
def test_a_swept_knob_gets_its_own_plot(results_dir: Path, tmp_path: Path):
    names = {p.name for p in _write(results_dir, "qubits_sweep", tmp_path)}
    assert "qubits_sweep_vs_n_qubits.png" in names
    assert "qubits_sweep_vs_data_size.png" not in names  # one data size: nothing to sweep
    assert "qubits_sweep_vs_rank.png" not in names


def test_a_knob_that_resolves_to_another_gets_no_second_plot():
    """QTHA's circuit layers default to its qubits: a qubit sweep draws vs n_qubits once, not again vs qnn_layers;
    a depth sweep at fixed qubits draws vs qnn_layers."""
    def summary(qubits: list[int], layers: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"status": "ok", "eval_tag": "", "label": "qtha", "adapter": "qtha", "rank": 4,
                             "bond_dim": 8, "n_qubits": qubits, "qnn_layers": layers, "variant": "full"})

    assert figures._repeats(summary([2, 4, 8], [2, 4, 8]), "qnn_layers")
    assert not figures._repeats(summary([4, 4, 4], [1, 2, 4]), "qnn_layers")
    assert figures._repeats(summary([4, 4, 4], [4, 4, 4]), "n_qubits")  # n_qubits = rank: rank's plot (if any) says it


def test_a_long_legend_sits_below_the_curves_not_over_them():
    """A selection has ~25 lines with long setting labels: the legend grows the figure instead of hiding the plot."""
    history = pd.DataFrame([{"label": "lora", "setting": f"trainer.accelerator=cpu trainer.lr={lr:g}", "step": step,
                             "train_loss": 2.0 / (step + 1)} for lr in [10 ** (-k / 4) for k in range(25)]
                            for step in range(3)])
    fig = figures.loss_curves(history, "selection")
    (ax,) = fig.axes
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 25
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    plot, key = ax.get_tightbbox(renderer), legend.get_window_extent(renderer)
    assert key.y1 <= plot.y0  # wholly below the axes, tick labels and axis title included
    assert fig.get_size_inches()[1] > 3.4 + 0.1 * 25


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


def test_the_pareto_figure_and_the_selection_table(tmp_path: Path):
    """pareto_* experiments give one loss-vs-parameters figure; a selection experiment gets its lr table."""
    from synthetic_records import config, curve

    from qtha.identity import config_hash
    from qtha.report import tables
    from qtha.results import RunRecord, record_path, write_record

    root = tmp_path / "results"
    for experiment, adapter, knob, params in (("pareto_lora", "lora", {"rank": 2}, 115_200),
                                              ("pareto_lora", "lora", {"rank": 8}, 460_800),
                                              ("pareto_qtha", "qtha", {"bond_dim": 4}, 219_360),
                                              ("pareto_qtha", "qtha", {"bond_dim": 8}, 456_000),
                                              ("pareto_qtha", "qtha", {"bond_dim": 4, "bottleneck": 64}, 60_000),
                                              ("pareto_qtha", "qtha", {"bond_dim": 8, "bottleneck": 64}, 90_000)):
        for seed in (1, 2, 3):
            cfg = config(adapter, 300, seed, experiment, **knob)
            rec = RunRecord(status="ok", experiment=experiment, label=f"{adapter}{knob}{seed}", config_hash=config_hash(cfg),
                            config=cfg, metrics={"loss": 1.0 + 0.01 * seed, "train_loss": 0.9}, history=curve(1.0, 0.9),
                            trainable_params=params)
            write_record(rec, record_path(root, experiment, rec.stem))
    for lr, loss in ((1e-4, 1.3), (1e-3, 1.1), (1e-2, 1.2)):
        cfg = config("lora", 300, 42, "select_x")
        cfg["trainer"]["lr"] = lr
        rec = RunRecord(status="ok", experiment="select_x", label=f"s{lr}", config_hash=config_hash(cfg), config=cfg,
                        metrics={"loss": 2.0, "heldout_loss": loss}, trainable_params=1)
        write_record(rec, record_path(root, "select_x", rec.stem))
    summary = tables.summarise(records.frame(records.load(root)))
    pareto = summary[summary.experiment.str.startswith("pareto_")]
    (ax,) = figures.pareto(pareto).axes
    lines = {label: list(bars.lines[0].get_xdata()) for bars, label in zip(*ax.get_legend_handles_labels())}
    # one line per method along its size knob; QTHA one per bottleneck, along the bond dimension
    assert lines == {"lora": [115_200, 460_800], "qtha [adapter.bottleneck=64]": [60_000, 90_000],
                     "qtha [adapter.bottleneck=256]": [219_360, 456_000]}
    (png, pdf) = figures.write_pareto(summary, tmp_path / "out")
    assert png.name == "pareto_loss_vs_params.png" and png.stat().st_size > 1024 and pdf.is_file()
    md, _ = tables.write_selection(root, "select_x", tmp_path / "out")
    text = md.read_text()
    assert "| lora (alpha=8.0) | 1.3000 (n=1) | **1.1000** (n=1) | 1.2000 (n=1) | 0.001 |" in text
    assert "grid edge" not in text.split("\n\n")[1]  # an interior winner is not flagged (only the footnote says it)
    assert tables.write_selection(root, "pareto_lora", tmp_path / "out") == []
    cfg = config("lora", 300, 42, "probe")  # one rate with a selection split: a calibration, not a selection
    rec = RunRecord(status="ok", experiment="probe", label="p", config_hash=config_hash(cfg), config=cfg,
                    metrics={"loss": 2.0, "heldout_loss": 1.0}, trainable_params=1)
    write_record(rec, record_path(root, "probe", rec.stem))
    assert tables.write_selection(root, "probe", tmp_path / "out") == []


@pytest.mark.parametrize(("losses", "failed", "edge"), [
    ({1e-4: 1.3, 1e-3: 1.1, 1e-2: 1.0}, (), True),      # best at the largest rate: the optimum may lie beyond
    ({1e-4: 1.0, 1e-3: 1.1, 1e-2: 1.2}, (), True),      # best at the smallest rate
    ({1e-4: 1.3, 1e-3: 1.1, 1e-2: 1.0}, (1e-1,), False),  # the next rate diverged: the grid is bounded
    ({1e-3: 1.0}, (), False),                            # one rate is no grid
])
def test_a_winner_at_the_grids_edge_is_flagged(losses, failed, edge):
    from qtha import selection

    method = selection.Method({"name": "lora"}, losses, {lr: 1 for lr in losses}, failed)
    assert method.at_edge is edge
    _, (row,) = selection.table([method])
    assert row[-1].endswith("(grid edge)") is edge


def test_a_knob_plot_draws_only_the_methods_that_vary_it():
    """LoRA at r = 4 and 8 makes a rank plot; QTHA's one rank beside it would be a lone point, so it is left out."""
    from qtha.report.columns import GENERATION

    rows = [{"status": "ok", "eval_tag": "", "adapter": adapter, "label": adapter, "setting": f"adapter.rank={rank}",
             "rank": rank, "loss_mean": loss, "loss_std": 0.0, **{f"{c.key}_mean": float("nan") for c in GENERATION}}
            for adapter, rank, loss in [("lora", 4, 0.02), ("lora", 8, 0.01), ("qtha", 4, 0.015)]]
    fig = figures.metric_vs(pd.DataFrame(rows), "rank", "adapter.rank", "selection")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["lora"]
    held = pd.DataFrame([r for r in rows if r["adapter"] == "qtha"] + [rows[0]])
    assert figures.metric_vs(held, "rank", "adapter.rank", "selection") is None  # nobody sweeps it: no plot
