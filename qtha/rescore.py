"""``python -m qtha.rescore <record.json …>``: recompute a run's generation metrics from its saved predictions.

When a metric's definition changes (here: BLEU/ROUGE by the authors' LLaMA-Factory recipe, maths
answers by ``math-verify``), the generations need not be made again: the predictions JSONL beside
the record holds every prediction with its reference, gold answer and truncation flag. The run's
metrics (and each re-evaluation's) are rescored with :func:`qtha.evaluation.score_predictions`; the
values they replace are kept in the record's ``rescored`` list with the code version that replaced
them, so nothing measured is lost. Losses are not touched (they need the model).
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from qtha.errors import ConfigError
from qtha.evaluation import score_predictions
from qtha.metrics import METRIC_NAMES
from qtha.provenance import git_dirty, git_sha
from qtha.results import atomic_write_text, load_record


def _rows(path: Optional[str], record_file: Path) -> Optional[list[dict[str, Any]]]:
    """The prediction rows at ``path`` (as written: relative to the working directory, or to the repository
    the record sits in); None when there is no file."""
    if not path:
        return None
    for candidate in (Path(path), record_file.parent / Path(path).name):
        if candidate.is_file():
            return [json.loads(line) for line in candidate.read_text(encoding="utf-8").splitlines() if line.strip()]
    return None


def _rescore(metrics: dict[str, float], rows: Optional[list[dict[str, Any]]]) -> dict[str, float]:
    """The new values of the generation metrics ``metrics`` holds (empty when there are no predictions)."""
    names = [n for n in METRIC_NAMES if n in metrics]
    if not rows or not names:
        return {}
    return score_predictions(rows, names)


def rescore(record_file: Path, reason: str) -> dict[str, Any]:
    """Rescore one record in place; returns {"run": {metric: (old, new)}, tag: {...}} for what changed."""
    record = load_record(record_file)
    changed: dict[str, Any] = {}
    before: dict[str, Any] = {}
    new = _rescore(record.metrics, _rows(record.predictions_path, record_file))
    if new:
        before["run"] = {k: record.metrics[k] for k in new}
        changed["run"] = {k: (record.metrics[k], v) for k, v in new.items() if v != record.metrics[k]}
        record.metrics.update(new)
    for entry in record.evaluations:
        new = _rescore(entry.get("metrics") or {}, _rows(entry.get("predictions_path"), record_file))
        if new:
            before[entry["tag"]] = {k: entry["metrics"][k] for k in new}
            changed[entry["tag"]] = {k: (entry["metrics"][k], v) for k, v in new.items() if v != entry["metrics"][k]}
            entry["metrics"].update(new)
    if any(changed.values()):
        record.rescored.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "reason": reason,
                                "git_sha": git_sha(), "git_dirty": git_dirty(), "metrics_before": before})
        atomic_write_text(record_file, record.to_json() + "\n")
    return changed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qtha.rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", type=Path, help="run records (.json) whose predictions to rescore")
    parser.add_argument("--reason", default="metric definitions changed", help="why, kept in the record")
    args = parser.parse_args(argv)
    try:
        for path in args.records:
            if not path.is_file():
                raise ConfigError(f"record {str(path)!r} does not exist")
            changed = rescore(path, args.reason)
            shown = {tag: {k: [round(a, 4), round(b, 4)] for k, (a, b) in diff.items()} for tag, diff in changed.items()
                     if diff}
            print(f"qtha: {json.dumps({'record': str(path), 'changed': shown}, ensure_ascii=False)}")
    except (ConfigError, ValueError) as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
