"""``python -m qtha.rescore``: new metric definitions applied to saved predictions, the old values kept."""
from __future__ import annotations

import json
from pathlib import Path

from qtha.metrics import score
from qtha.rescore import main
from qtha.results import RunRecord, load_record, predictions_path, write_record

ROWS = [{"index": 0, "prediction": "好 好 好", "reference": "好 天气", "truncated": False},
        {"index": 1, "prediction": r"so \boxed{\frac{1}{2}}", "reference": "", "answer": "0.5", "truncated": False}]


def test_rescoring_replaces_generation_metrics_and_keeps_the_old_ones(tmp_path: Path, capsys):
    record_file = tmp_path / "runs" / "exp" / "r__000000000000.json"
    preds = predictions_path(record_file)
    preds.parent.mkdir(parents=True)
    preds.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS[:1]), encoding="utf-8")
    maths = predictions_path(record_file, "maths")
    maths.write_text(json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    record = RunRecord(status="ok", experiment="exp", label="r", config_hash="0" * 12,
                       config={"adapter": {"name": "lora"}, "seed": 1},
                       metrics={"loss": 1.5, "rouge1": 40.0, "bleu4": 7.0}, predictions_path=str(preds),
                       evaluations=[{"tag": "maths", "metrics": {"loss": 2.0, "accuracy": 0.0},
                                     "predictions_path": str(maths)}])
    write_record(record, record_file)
    assert main([str(record_file)]) == 0
    after = load_record(record_file)
    expected = score(["好 好 好"], ["好 天气"], ["rouge1", "bleu4"])
    assert after.metrics == {"loss": 1.5, **expected}                 # set-based ROUGE: not the old 40
    assert after.evaluations[0]["metrics"] == {"loss": 2.0, "accuracy": 100.0}  # math-verify: \frac{1}{2} = 0.5
    (entry,) = after.rescored
    assert entry["metrics_before"] == {"run": {"rouge1": 40.0, "bleu4": 7.0}, "maths": {"accuracy": 0.0}}
    assert entry["reason"] and "git_sha" in entry
    shown = json.loads(capsys.readouterr().out.strip()[len("qtha: "):])
    assert shown["changed"]["maths"] == {"accuracy": [0.0, 100.0]}
    assert main([str(record_file)]) == 0 and len(load_record(record_file).rescored) == 1  # nothing new to do


def test_a_missing_record_is_one_line(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("nope.json' does not exist")
