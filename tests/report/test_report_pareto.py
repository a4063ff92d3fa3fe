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
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[2] for line in lines] == ["57,600", "219,360", "456,000", "460,800"]
    assert [line.rstrip(" |").endswith("**yes**") for line in lines] == [True, True, False, True]
    assert "| lora | rank=8 | 460,800 | 3 | 1,2,3 | 0.0220 | 0.0050 | **yes** |" in text  # t(0.975, 2)·0.002/√3
    assert "| qtha | bond_dim=4 bottleneck=64 | 219,360 | 1 | 1 | 0.0250 | — |" in text  # one seed: no interval
    assert "Lowest loss: lora [rank=8] 0.0220 at 460,800 parameters" in text
    assert "Some points have 1 seed (no interval)" in text and "0.001" not in text


def test_without_pareto_records_the_section_says_what_to_run(tmp_path: Path):
    _point(tmp_path, "main", "lora", 230_400, [0.02])
    text = pareto.section(records.load(tmp_path))
    assert text.startswith("Not run yet: `python -m qtha.run -m experiment=pareto_lora results_dir=results`")
