"""The measure step that training and re-evaluation share: validation, greedy generation, scoring.

``python -m qtha.run`` measures a trained model with :func:`measure`, ``python -m qtha.eval``
a reloaded one, so both paths measure the same way. Maths rows (with an ``answer``) are scored
against the answer; dialogue rows against the final counsellor turn. Under a multi-process
strategy every process validates its shard (the module gathers the whole set) and only the
global-zero process generates and scores.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from qtha.config import EvalConfig
from qtha.data import Example
from qtha.errors import ConfigError, one_of, positive
from qtha.generation import Generation, generate
from qtha.metrics import MATH_METRICS, METRIC_NAMES, NOTES, TEXT_METRICS, extract_answer, score
from qtha.module import VALIDATION_SPLITS
from qtha.results import atomic_write_text
from qtha.scrub import scrub

if TYPE_CHECKING:
    from qtha.build import Built


def check_eval(e: EvalConfig) -> None:
    """The ``eval`` group's checks: known metric names, positive budgets."""
    if e.metrics is not None and not list(e.metrics):
        raise ConfigError(f"eval.metrics=[] names no metric; allowed: null (chosen by the data), a list drawn from "
                          f"{', '.join(METRIC_NAMES)}, or eval.enabled=false")
    for name in e.metrics or []:
        one_of("eval.metrics", name, METRIC_NAMES)
    for key in ("max_new_tokens", "batch_size"):
        positive(f"eval.{key}", getattr(e, key))
    if e.limit is not None and e.limit <= 0:
        raise ConfigError(f"eval.limit={e.limit} must be > 0, or null for every test row")


@dataclass
class Measurement:
    """What one measure step found: scalar metrics, the decoding record, predictions, seconds per phase."""

    metrics: dict[str, float]
    generation: Optional[dict[str, Any]] = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def validate(built: "Built") -> tuple[dict[str, float], float]:
    """Loss and both perplexities over the whole test split (``loss``, ``ppl``, ``ppl_sample``) and, when the
    data has a selection split, over it (``heldout_loss``, …), and the seconds it took."""
    start = time.perf_counter()
    built.trainer.validate(built.module, datamodule=built.data, verbose=False)
    metrics = {}
    for key, value in built.trainer.callback_metrics.items():
        split, _, name = key.partition("/")
        if split in VALIDATION_SPLITS:
            metrics[name if split == "val" else f"{split}_{name}"] = float(value)
    return metrics, time.perf_counter() - start


def measure(built: "Built", eval_cfg: EvalConfig, max_prompt_length: int) -> Measurement:
    """Validate, then (``eval.enabled``, global-zero process only) generate and score the test rows."""
    metrics, seconds = validate(built)
    result = Measurement(metrics, timings={"validate_s": round(seconds, 3)})
    if eval_cfg.enabled and built.trainer.is_global_zero:
        generated = generate_and_score(built, eval_cfg, max_prompt_length)
        result.metrics.update(generated.metrics)
        result.generation, result.predictions = generated.generation, generated.predictions
        result.timings.update(generated.timings)
    return result


def check_metrics_fit(e: EvalConfig, rows: Sequence[Example], data_name: str) -> None:
    """Maths metrics score a row's reference answer: asked of rows without one they would read 0 for any model."""
    asked = [n for n in e.metrics or [] if n in MATH_METRICS]
    if e.enabled and asked and any(r.get("answer") is None for r in rows):
        raise ConfigError(f"eval.metrics={asked} score maths answers, but the test rows of data={data_name} have none; "
                          f"allowed: {', '.join(TEXT_METRICS)}, or null (chosen by the data)")


def default_metrics(rows: Sequence[Example]) -> list[str]:
    """Maths metrics when every row has a reference answer, text-overlap metrics otherwise."""
    return list(MATH_METRICS) if rows and all(r.get("answer") is not None for r in rows) else list(TEXT_METRICS)


def _reference_text(row: Example) -> str:
    return row["messages"][-1]["content"] if row["messages"][-1]["role"] == "assistant" else ""


def generate_and_score(built: "Built", eval_cfg: EvalConfig, max_prompt_length: int) -> Measurement:
    """Greedy answers for the first ``eval.limit`` test rows, scored; one prediction row per test row."""
    rows = list(built.data.test_rows)
    rows = rows[: eval_cfg.limit] if eval_cfg.limit else rows
    names = list(eval_cfg.metrics or default_metrics(rows))
    precision = str(built.trainer.precision)
    start = time.perf_counter()
    gens = generate(built.model, built.tokenizer, [r["messages"] for r in rows], max_new_tokens=eval_cfg.max_new_tokens,
                    batch_size=eval_cfg.batch_size, max_prompt_length=max_prompt_length, precision=precision,
                    device=built.trainer.strategy.root_device)
    generate_s = time.perf_counter() - start
    predictions = _predictions(rows, gens)
    start = time.perf_counter()
    metrics = score_predictions(predictions, names)
    score_s = time.perf_counter() - start
    generation: dict[str, Any] = {
        "rows": len(rows), "greedy": True, "max_new_tokens": eval_cfg.max_new_tokens,
        "max_prompt_length": max_prompt_length, "batch_size": eval_cfg.batch_size, "precision": precision,
        "metrics": names, "truncation_rate": round(sum(g.truncated for g in gens) / max(len(rows), 1), 4),
        "mean_new_tokens": round(sum(g.new_tokens for g in gens) / max(len(rows), 1), 1),
        "seconds": round(generate_s, 2),
    }
    if any(n in MATH_METRICS for n in names):
        generation["metric_notes"] = NOTES
    return Measurement(metrics, generation, predictions,
                       {"generate_s": round(generate_s, 3), "score_s": round(score_s, 3)})


def score_predictions(predictions: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, float]:
    """The metrics ``names`` of prediction rows (as written beside a record): maths ones against each row's
    ``answer`` with its ``truncated`` flag, text ones against its ``reference``. Scoring a run and re-scoring
    its saved predictions are this one function."""
    preds, truncated = [p["prediction"] for p in predictions], [p["truncated"] for p in predictions]
    metrics: dict[str, float] = {}
    math_names = [n for n in names if n in MATH_METRICS]
    text_names = [n for n in names if n in TEXT_METRICS]
    if math_names:
        metrics.update(score(preds, [str(p.get("answer", "")) for p in predictions], math_names, truncated=truncated))
    if text_names:
        metrics.update(score(preds, [p["reference"] for p in predictions], text_names))
    return metrics


def _predictions(rows: Sequence[Example], gens: Sequence[Generation]) -> list[dict[str, Any]]:
    out = []
    for i, (row, g) in enumerate(zip(rows, gens)):
        item = {"index": i, "id": row.get("id"), "lang": row.get("lang"), "reference": _reference_text(row),
                "prediction": g.text, "truncated": g.truncated, "new_tokens": g.new_tokens}
        if row.get("answer") is not None:
            item.update(answer=str(row["answer"]), extracted=extract_answer(g.text))
        out.append(item)
    return out


def write_predictions(path: Path, predictions: Sequence[dict[str, Any]]) -> Path:
    """JSONL next to the run record, written atomically and scrubbed like the record itself (a row id holds the
    data file's path)."""
    atomic_write_text(path, "".join(json.dumps(scrub(p), ensure_ascii=False) + "\n" for p in predictions))
    return path
