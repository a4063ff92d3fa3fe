"""Tables: mean ± std over seeds by hand, best marked, failed/incomplete rows kept, ratio to LoRA."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

from synthetic_records import FAILED_ERROR, LOSS, NOISY_TAG, PARAMS, STRICT, TRAIN_LOSS
from synthetic_records import results_dir_fixture  # noqa: F401 (the results_dir fixture)  # noqa: F401 (pytest fixture)

from qtha.report import records, tables


def _write(results_dir: Path, out: Path) -> dict[str, str]:
    df = records.frame(records.load(results_dir, ["design_card"]))
    tables.write_experiment(tables.summarise(df), "design_card", out)
    return {ext: (out / "tables" / f"design_card.{ext}").read_text() for ext in ("md", "tex", "csv")}


def _md_rows(md: str) -> dict[tuple[str, str, str], list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| adapter")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return {(c[0], c[1], c[2]): c for c in cells}


def _pm(values: tuple[float, ...], digits: int = 4) -> str:
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def test_cells_are_mean_and_sample_std_over_seeds(results_dir: Path, tmp_path: Path):
    rows = _md_rows(_write(results_dir, tmp_path)["md"])
    header = "adapter setting status n params ratio train eval ppl ppl_sample acc strict step note".split()
    lora = dict(zip(header, rows["lora", "data.size=300", "ok"]))
    assert lora["n"] == "3"
    assert lora["eval"] == _pm(LOSS["lora", 300]) == "1.2000 ± 0.1000"
    assert lora["train"] == _pm(TRAIN_LOSS["lora", 300]) == "1.1000 ± 0.1000"
    qtha = dict(zip(header, rows["qtha", "data.size=300", "ok"]))
    assert qtha["n"] == "2" and qtha["train"] == "**0.8900 ± 0.0141**"  # best train loss
    assert qtha["ratio"] == f"{PARAMS['qtha'] / PARAMS['lora']:.3f}" == "1.967"
    assert qtha["params"] == "453,120"
    best_eval = dict(zip(header, rows["qtha", "data.size=3000", "ok"]))
    assert best_eval["eval"] == f"**{_pm(LOSS['qtha', 3000])}**" == "**0.9900 ± 0.0141**"
    assert lora["params"] == "**230,400**"  # fewest parameters; a zero count would not compete
    assert lora["strict"] == _pm(STRICT["lora", 300], 2) == "1.04 ± 1.80"
    assert best_eval["strict"] == f"**{_pm(STRICT['qtha', 3000], 2)}**"  # higher is better


def test_failed_and_incomplete_runs_keep_their_rows(results_dir: Path, tmp_path: Path):
    rows = _md_rows(_write(results_dir, tmp_path)["md"])
    failed = rows["qtha", "data.size=300", "failed"]
    assert failed[3] == "1" and failed[-1] == FAILED_ERROR.split("\n")[0] and failed[6] == "—"
    incomplete = rows["qtha", "data.size=3000", "incomplete"]
    assert "killed" in incomplete[-1]
    noisy = rows[f"qtha (eval: {NOISY_TAG})", "data.size=300", "ok"]
    assert noisy[7] == "1.2500" and noisy[6] == "—"


def test_latex_and_csv_agree_with_markdown(results_dir: Path, tmp_path: Path):
    out = _write(results_dir, tmp_path)
    assert r"\textbf{0.9900 $\pm$ 0.0141}" in out["tex"] and r"data.size=300" in out["tex"]
    assert r"\begin{tabular}" in out["tex"] and r"\bottomrule" in out["tex"]
    rows = list(csv.DictReader(out["csv"].splitlines()))
    assert [r["status"] for r in rows].count("failed") == 1 and [r["status"] for r in rows].count("incomplete") == 1
    best = {(r["label"], r["setting"], r["status"]): r["best"].split(";") for r in rows}
    assert "loss" in best["qtha", "data.size=3000", "ok"] and "train_loss" in best["qtha", "data.size=300", "ok"]
    assert "trainable_params" in best["lora", "data.size=3000", "ok"]
    lora = next(r for r in rows if r["label"] == "lora" and r["setting"] == "data.size=300")
    assert float(lora["loss_mean"]) == statistics.fmean(LOSS["lora", 300])
    assert abs(float(lora["loss_std"]) - statistics.stdev(LOSS["lora", 300])) < 1e-12


def test_ratio_falls_back_to_the_same_model_when_the_experiment_has_no_lora(results_dir: Path):
    df = records.frame(records.load(results_dir))
    summary = tables.summarise(df[df.experiment == "qubits_sweep"], reference=df)
    assert summary.ratio_to_lora_mean.round(3).tolist() == [1.967, 1.967]
    alone = tables.summarise(df[df.experiment == "qubits_sweep"])
    assert alone.ratio_to_lora_mean.isna().all()


def test_rows_sort_by_adapter_then_numeric_setting(results_dir: Path, tmp_path: Path):
    order = [key[:2] for key in _md_rows(_write(results_dir, tmp_path)["md"])]
    assert order == [("lora", "data.size=300"), ("lora", "data.size=3000"), ("qtha", "data.size=300"),
                     ("qtha", "data.size=300"), (f"qtha (eval: {NOISY_TAG})", "data.size=300"),
                     ("qtha", "data.size=3000"), ("qtha", "data.size=3000")]
