"""REPRODUCTION.md verdicts: pre-declared primary comparisons, pairs by seed, 95 % CIs, Holm, n < 3 never decides."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from synthetic_records import COUNTS, _write, metrics

from qtha.report import claims, paired, records
from qtha.results import write_record

CLAIM = {"id": "2", "title": "Training loss", "paper": "15% lower", "metric": "train_loss", "effect": 15, "unit": "%",
         "primary": {"name": "primary",
                     "method": {"experiment": "main", "where": {"adapter.name": "qtha", "data.size": 1000}},
                     "comparator": {"experiment": "main", "where": {"adapter.name": "lora", "data.size": 1000}}},
         "secondary": [{"name": "at 300",
                        "method": {"experiment": "main", "where": {"adapter.name": "qtha", "data.size": 300}},
                        "comparator": {"experiment": "main", "where": {"adapter.name": "lora", "data.size": 300}}}]}


def _records(root: Path, qtha: dict[int, float], lora: dict[int, float], size: int = 1000):
    for adapter, values in (("qtha", qtha), ("lora", lora)):
        for seed, train_loss in values.items():
            _write(root, "main", adapter, size, seed, metric_values=metrics(1.0, train_loss, 0.0, 0.5))
    return records.load(root)


def test_a_large_consistent_effect_is_reproduced(tmp_path: Path):
    loaded = _records(tmp_path, {1: 0.80, 2: 0.81, 3: 0.79}, {1: 1.00, 2: 1.02, 3: 0.99})
    v = claims.judge(CLAIM, loaded)
    assert v.verdict == "reproduced" and v.primary.n == 3 and v.primary.seeds == (1, 2, 3)
    diffs = [0.20, 0.21, 0.20]
    assert v.primary.effect == pytest.approx(100 * sum(diffs) / 3 / ((1.00 + 1.02 + 0.99) / 3))
    assert v.primary.low > 15 - 5 and v.primary.low < v.primary.effect < v.primary.high


def test_fewer_than_three_pairs_is_never_a_verdict(tmp_path: Path):
    loaded = _records(tmp_path, {1: 0.50, 2: 0.50, 4: 0.50}, {1: 1.00, 2: 1.00, 3: 1.00})  # seeds 1, 2 pair
    v = claims.judge(CLAIM, loaded)
    assert v.verdict == "not established" and v.primary.n == 2 and "2 paired seeds" in v.reason


def test_a_small_sure_effect_contradicts_the_claim(tmp_path: Path):
    loaded = _records(tmp_path, {1: 0.990, 2: 1.010, 3: 0.985}, {1: 1.00, 2: 1.02, 3: 0.995})  # ~1% lower
    v = claims.judge(CLAIM, loaded)
    assert v.verdict == "contradicted" and v.primary.high < 15


def test_a_noisy_effect_is_not_established(tmp_path: Path):
    loaded = _records(tmp_path, {1: 0.70, 2: 1.10, 3: 0.80}, {1: 1.00, 2: 0.90, 3: 1.00})
    v = claims.judge(CLAIM, loaded)
    assert v.verdict == "not established" and v.primary.low < 0 < v.primary.high


def test_secondaries_are_listed_with_holm_and_never_decide(tmp_path: Path):
    loaded = _records(tmp_path, {1: 0.5, 2: 0.5, 3: 0.5}, {1: 1.0, 2: 1.0, 3: 1.0}, size=300)  # only the secondary
    v = claims.judge(CLAIM, loaded)
    assert v.verdict == "not established" and v.primary.n == 0
    assert paired.shortfall(loaded, CLAIM["primary"]["method"]) == (
        "`main` has 6 finished records; none of the 3 left has data.size=1000 (found: 300)")
    assert paired.shortfall(loaded, {"experiment": "other"}) == "no finished records of `other`"
    assert "Why the primary comparison has too few pairs: QTHA side: `main` has 6" in claims.render(
        loaded, COUNTS, "python -m qtha.report", "abc", [CLAIM])
    (est, adjusted), = v.secondary
    assert est.n == 3 and est.effect == pytest.approx(50.0) and adjusted == est.p
    assert claims.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(claims.holm([math.nan, 0.2])[0])


def test_the_parameter_claim_is_decided_by_exact_counts():
    (v, *_) = claims.verdicts([], COUNTS)
    assert v.verdict == "contradicted" and "54.6% fewer, not the claimed 76%" in v.reason
    assert [round(e.effect, 1) for e, _ in v.secondary[:1]] == [77.3]   # against LoRA r=8


def test_every_declared_claim_names_a_primary_and_judges(tmp_path: Path):
    declared = claims.load_claims()
    assert [c["id"] for c in declared] == ["1", "2", "3", "4", "5", "6"]
    loaded = _records(tmp_path, {1: 0.8, 2: 0.8, 3: 0.8}, {1: 1.0, 2: 1.0, 3: 1.0})
    text = claims.render(loaded, COUNTS, "python -m qtha.report", "abc123")
    assert text.splitlines()[2].startswith("> Generated file, do not edit: `python -m qtha.report` from 6 records")
    assert "code at git abc123" in text
    for c in declared:
        assert f"## {c['id']}. {c['title']}" in text and f"(pre-declared):** {c['primary']['name']}" in text


def test_two_records_of_one_seed_on_one_side_are_an_ambiguous_declaration(tmp_path: Path):
    loaded = _records(tmp_path, {1: 0.8, 2: 0.8, 3: 0.8}, {1: 1.0, 2: 1.0, 3: 1.0})
    _write(tmp_path, "main", "lora", 1000, 1, metric_values=metrics(1.0, 0.9, 0.0, 0.5), rank=8)  # same seed, r=8
    with pytest.raises(ValueError, match=r"^claims: .* both match main .* at seed 1; allowed: pin the key"):
        claims.judge(CLAIM, records.load(tmp_path))
    pinned = {**CLAIM, "primary": {**CLAIM["primary"], "comparator": {
        "experiment": "main", "where": {"adapter.name": "lora", "adapter.rank": 4, "data.size": 1000}}}}
    assert claims.judge(pinned, records.load(tmp_path)).primary.n == 3


def test_outcomes_say_win_loss_or_tie_from_the_interval_alone(tmp_path: Path):
    win = claims.judge(CLAIM, _records(tmp_path / "a", {1: 0.80, 2: 0.81, 3: 0.79}, {1: 1.00, 2: 1.02, 3: 0.99}))
    loss = claims.judge(CLAIM, _records(tmp_path / "b", {1: 1.20, 2: 1.21, 3: 1.19}, {1: 1.00, 2: 1.02, 3: 0.99}))
    tie = claims.judge(CLAIM, _records(tmp_path / "c", {1: 0.70, 2: 1.10, 3: 0.80}, {1: 1.00, 2: 0.90, 3: 1.00}))
    few = claims.judge(CLAIM, _records(tmp_path / "d", {1: 0.5, 2: 0.5}, {1: 1.0, 2: 1.0}))
    assert [paired.outcome(v.primary) for v in (win, loss, tie, few)] == ["wins", "loses", "ties", "—"]
    text = claims.render(records.load(tmp_path / "b"), COUNTS, "python -m qtha.report", "abc", [CLAIM])
    board = text.split("## Where QTHA wins, loses or ties")[1].split("\n## ")[0]
    assert "| 2. Training loss | primary | primary | train_loss | 3 |" in board and "**loses**" in board
    machines = text.split("## Where the runs ran")[1].split("\n## ")[0]
    assert "| `main` |" in machines and "| 6 |" in machines and "resumed" not in machines


def test_the_run_hours_say_when_a_resumed_record_undercounts(tmp_path: Path):
    path, record = _write(tmp_path, "main", "qtha", 1000, 1, metric_values=metrics(1.0, 0.9, 0.0, 0.5))
    record.resumed_from, record.wall_time_s = "workspace/checkpoints/main/abc/last.ckpt", 3600.0
    write_record(record, path)
    text = claims.render(records.load(tmp_path), COUNTS, "python -m qtha.report", "abc", [CLAIM])
    machines = text.split("## Where the runs ran")[1].split("\n## ")[0]
    assert "1.00 h in all; 1 resumed record(s) count only the attempt that finished" in machines


def _precisions(root: Path, resolved: dict[tuple[str, int], str]) -> None:
    """Rewrite the records as runs that asked for ``trainer.precision: auto`` and resolved it as given."""
    for path, record in records.load(root):
        record.config["trainer"]["precision"] = "auto"
        record.precision = resolved.get((record.config["adapter"]["name"], record.config["seed"]), "bf16-mixed")
        write_record(record, path)


def test_a_seed_whose_runs_resolved_auto_precision_differently_is_not_a_pair(tmp_path: Path):
    _records(tmp_path, {1: 0.80, 2: 0.81, 3: 0.79}, {1: 1.00, 2: 1.02, 3: 0.99})
    _precisions(tmp_path, {("qtha", 3): "32-true"})  # seed 3's QTHA ran on a CPU without native bf16
    loaded = records.load(tmp_path)
    v = claims.judge(CLAIM, loaded)
    assert v.verdict == "not established" and v.primary.seeds == (1, 2) and v.primary.mismatched == (3,)
    text = claims.render(loaded, COUNTS, "python -m qtha.report", "abc", [CLAIM])
    assert "Seed(s) 3 left unpaired in the primary comparison: its two runs trained at different precisions" in text
    setting = records.settings(loaded)
    shown = {(rec.config["adapter"]["name"], rec.config["seed"]): setting[path] for path, rec in loaded}
    assert shown[("qtha", 3)] == "trainer.precision=32-true"  # the tables split it from its bf16 seeds
    assert {s for k, s in shown.items() if k != ("qtha", 3)} == {"trainer.precision=bf16-mixed"}
    machines = text.split("## Where the runs ran")[1].split("\n## ")[0]
    assert "| 32-true |" in machines and "| bf16-mixed |" in machines


def test_every_main_method_shows_its_loss_at_init_and_after_training(tmp_path: Path):
    for adapter, loss in (("lora", 0.5), ("qtha", 1.85)):  # an adapter whose loss never moved: visible at a glance
        for seed in (1, 2, 3):
            _write(tmp_path, "math_main", adapter, 1000, seed, metric_values=metrics(loss, loss, 0.0, 0.5))
    text = claims.render(records.load(tmp_path), COUNTS, "python -m qtha.report", "abc", [CLAIM])
    section = text.split("## Does every method train?")[1].split("\n## ")[0]
    assert "| `math_main` | lora |  | 3 | 1.8500 | 0.5000 | -73.0% |" in section
    assert "| `math_main` | qtha |  | 3 | 1.8500 | 1.8500 | +0.0% |" in section
