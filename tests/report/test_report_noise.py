"""REPRODUCTION.md's noise section: each re-evaluation set against the same adapter's exact one, seed by seed, only
where both read the same rows; the exact reference is the evaluation that ran the circuit as the adapter trained."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from synthetic_records import config, curve

from qtha.identity import config_hash
from qtha.report import noise, records
from qtha.results import RunRecord, record_path, write_record

TRAINED = {"backend": "torch", "device": "default.qubit", "shots": None, "noise": "none", "p1": 0.0, "readout": None}
EXACT = {f"quantum.{k}": v for k, v in TRAINED.items()}
SHOTS = {**EXACT, "quantum.backend": "pennylane", "quantum.shots": 1000}
NOISY = {**EXACT, "quantum.backend": "pennylane", "quantum.device": "default.mixed", "quantum.noise": "depolarizing",
         "quantum.p1": 0.1, "quantum.readout": [[0.95, 0.05], [0.1, 0.9]]}
ROWS = {"data.test_size": 8}


def _evaluation(tag: str, quantum: dict[str, Any], loss: float, fingerprint: str = "rows8") -> dict[str, Any]:
    return {"tag": tag, "changes": {**ROWS, **quantum}, "data_fingerprint": fingerprint, "metrics": {"loss": loss},
            "timings": {"validate_s": 2.0 if quantum is EXACT else 80.0}}


def _run(root: Path, seed: int, evaluations: list[dict[str, Any]]) -> None:
    cfg = {**config("qtha", 1000, seed, "math_easy_main"), "quantum": TRAINED}
    rec = RunRecord(status="ok", experiment="math_easy_main", label=f"qtha{seed}", config_hash=config_hash(cfg),
                    config=cfg, metrics={"loss": 0.02, "train_loss": 0.02}, history=curve(0.02, 0.02),
                    trainable_params=456_000, evaluations=evaluations)
    write_record(rec, record_path(root, "math_easy_main", rec.stem))


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line[2:-2].split(" | ")] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line][1:]


def test_each_tag_is_paired_with_the_exact_reevaluation(tmp_path: Path):
    exact, noisy = (0.020, 0.022, 0.024), (0.030, 0.032, 0.035)
    for seed, (e, n) in enumerate(zip(exact, noisy), start=1):
        # listed noisy first: the reference is found by what it ran, not by its place
        _run(tmp_path, seed, [_evaluation("noisy", NOISY, n), _evaluation("exact8", EXACT, e),
                              _evaluation("shots", SHOTS, e)])
    rows = _rows(noise.table(records.load(tmp_path)))
    assert [r[2] for r in rows] == ["`exact8`", "`shots`", "`noisy`"]  # reference first, then by loss
    assert rows[0][3:8] == ["exact (torch state vector)", "3", "1,2,3", "0.0220", "0.0050"]
    assert rows[0][8:] == ["(reference)", "", "2.0"]
    assert rows[1][8:10] == ["+0.0% (+0.0 … +0.0)", "no difference shown"]
    # diffs +0.010, +0.010, +0.011 (mean 0.01033) on an exact mean of 0.022: +47.0 %, ± t(0.975, 2)·0.000577/√3 = 6.5 %
    assert rows[2][3] == "default.mixed, depolarizing p=0.1, readout error"
    assert rows[2][8:] == ["+47.0% (+40.5 … +53.5)", "**higher**", "80.0"]


def test_a_tag_on_other_rows_is_not_compared(tmp_path: Path):
    for seed in (1, 2, 3):
        _run(tmp_path, seed, [_evaluation("exact8", EXACT, 0.02), _evaluation("noisy_all", NOISY, 0.03, "rows64")])
    rows = _rows(noise.table(records.load(tmp_path)))
    assert rows[1][2] == "`noisy_all`" and rows[1][8] == "— (no exact reference on the same rows)"


def test_few_seeds_give_no_interval_and_no_evaluations_say_how_to_get_them(tmp_path: Path):
    _run(tmp_path, 1, [_evaluation("exact8", EXACT, 0.02), _evaluation("noisy", NOISY, 0.03)])
    _run(tmp_path, 2, [_evaluation("exact8", EXACT, 0.02), _evaluation("noisy", NOISY, 0.03)])
    rows = _rows(noise.table(records.load(tmp_path)))
    assert rows[1][7:10] == ["0.0000", "+50.0% (+50.0 … +50.0)", "n < 3"]
    empty = tmp_path / "empty"
    _run(empty, 1, [])
    assert "experiment=noise_eval" in noise.section(records.load(empty))
