"""REPRODUCTION.md's Pareto section: every swept point listed, the lower-left staircase marked, no interval from
one seed, and the commands to run when there is nothing to show."""
from __future__ import annotations

from pathlib import Path

from synthetic_records import config, curve

from qtha.identity import config_hash
from qtha.report import pareto, records
from qtha.results import RunRecord, record_path, write_record


def test_the_frontier_is_the_lower_left_staircase():
    params = [100, 200, 200, 300, 400, 400]
    loss = [1.0, 0.9, 0.95, 0.95, 0.8, 0.8]
    # 200/0.95 loses to 200/0.9; 300/0.95 to 200/0.9; the two 400/0.8 tie and neither beats the other
    assert pareto.frontier(params, loss) == [True, True, False, False, True, True]
    assert pareto.frontier([], []) == []


def _point(root: Path, experiment: str, adapter: str, params: int, losses: list[float], **knob: int) -> None:
    for seed, loss in enumerate(losses, start=1):
        cfg = config(adapter, 1000, seed, experiment, **knob)
        rec = RunRecord(status="ok", experiment=experiment, label=f"{adapter}{knob}{seed}", config_hash=config_hash(cfg),
                        config=cfg, metrics={"loss": loss, "train_loss": loss}, history=curve(loss, loss),
                        trainable_params=params)
        write_record(rec, record_path(root, experiment, rec.stem))


def test_the_section_lists_every_point_and_marks_the_frontier(tmp_path: Path):
    """Points named by their size knobs even where the experiment varies nothing else (one QTHA point alone
    has an empty setting)."""
    _point(tmp_path, "pareto_lora", "lora", 57_600, [0.030], rank=1)
    _point(tmp_path, "pareto_lora", "lora", 460_800, [0.020, 0.022, 0.024], rank=8)
    _point(tmp_path, "pareto_qtha", "qtha", 219_360, [0.025], bond_dim=4, bottleneck=64)
    _point(tmp_path, "pareto_qtha", "qtha", 456_000, [0.026], bond_dim=8, bottleneck=64)  # more than bond 4 and worse: dominated
    _point(tmp_path, "main", "lora", 230_400, [0.001])  # not a pareto_* experiment: left out
    text = pareto.section(records.load(tmp_path))
    points = text.split("Each other point")[0]  # the points' table, before the size-matched pairs
    lines = [line for line in points.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[2] for line in lines] == ["57,600", "219,360", "456,000", "460,800"]
    assert [line.rstrip(" |").endswith("**yes**") for line in lines] == [True, True, False, True]
    assert "| lora | rank=8 | 460,800 | 3 | 1,2,3 | 0.0220 | 0.0050 | **yes** |" in text  # t(0.975, 2)·0.002/√3
    assert "| qtha | bond_dim=4 bottleneck=64 | 219,360 | 1 | 1 | 0.0250 | — |" in text  # one seed: no interval
    assert "Lowest loss: lora [rank=8] 0.0220 at 460,800 parameters" in text
    assert "Some points have 1 seed (no interval)" in text and "0.001" not in text
    # one seed a side: a pair, no interval, no reading
    assert "| qtha | bond_dim=8 bottleneck=64 | 456,000 | rank=8 | 460,800 | 1 | 1 | 0.0260 vs 0.0200 | — | n < 3 |" in text


def test_without_pareto_records_the_section_says_what_to_run(tmp_path: Path):
    _point(tmp_path, "main", "lora", 230_400, [0.02])
    text = pareto.section(records.load(tmp_path))
    assert text.startswith("Not run yet: `python -m qtha.run -m experiment=pareto_lora results_dir=results`")


def test_each_point_is_paired_with_the_lora_rank_nearest_its_size(tmp_path: Path):
    """QTHA at 57,960 parameters meets LoRA r=1 (57,600) seed by seed; a point with no LoRA rank within 1.5× of
    its size (QuanTA's 19.9 M) is listed without a comparison rather than set against a rank 20× smaller."""
    _point(tmp_path, "pareto_lora", "lora", 57_600, [0.010, 0.012, 0.014], rank=1)
    _point(tmp_path, "pareto_lora", "lora", 460_800, [0.020, 0.022, 0.024], rank=8)
    _point(tmp_path, "pareto_qtha", "qtha", 57_960, [0.015, 0.018, 0.021], bond_dim=2, bottleneck=64)
    _point(tmp_path, "pareto_qtha", "qtha", 456_000, [0.021, 0.021, 0.024], bond_dim=8, bottleneck=256)
    _point(tmp_path, "pareto_quanta", "quanta", 19_906_560, [0.1, 0.1, 0.1], n_axes=2)
    text = pareto.section(records.load(tmp_path))
    # differences 0.005, 0.006, 0.007 over LoRA's mean 0.012: +50.0 %, CI ±t(0.975, 2)·0.001/√3/0.012 = ±20.7
    assert ("| qtha | bond_dim=2 bottleneck=64 | 57,960 | rank=1 | 57,600 | 3 | 1,2,3 | 0.0180 vs 0.0120 | "
            "+50.0% (+29.3 … +70.7) | **higher** |") in text
    # differences +0.001, -0.001, 0: no difference shown
    assert ("| qtha | bond_dim=8 bottleneck=256 | 456,000 | rank=8 | 460,800 | 3 | 1,2,3 | 0.0220 vs 0.0220 | "
            "+0.0% (-11.3 … +11.3) | no difference shown |") in text
    assert "| quanta | n_axes=2 | 19,906,560 | none within 1.5× |" in text
