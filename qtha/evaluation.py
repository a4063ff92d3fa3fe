"""Evaluation by generation: greedy answers on the test rows, scored with ``qtha.metrics``.

Used after training (``qtha.train``) and to re-evaluate a saved adapter (``python -m
qtha.eval``), so both paths score the same way. Maths rows (with an ``answer``) are scored
against the answer; dialogue rows against the final counsellor turn.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qtha.data import Example
from qtha.generation import generate
from qtha.metrics import MATH_METRICS, NOTES, TEXT_METRICS, extract_answer, score
from qtha.results import atomic_write_text


def default_metrics(rows: Sequence[Example]) -> list[str]:
    """Maths metrics when every row has a reference answer, text-overlap metrics otherwise."""
    return list(MATH_METRICS) if rows and all(r.get("answer") is not None for r in rows) else list(TEXT_METRICS)


def _reference_text(row: Example) -> str:
    return row["messages"][-1]["content"] if row["messages"][-1]["role"] == "assistant" else ""


def evaluate_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Sequence[Example],
                        eval_cfg: Any, max_prompt_length: int,
                        precision: str = "32-true") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, one prediction row per test row) for the first ``eval.limit`` rows."""
    rows = list(rows[: eval_cfg.limit] if eval_cfg.limit else rows)
    names = list(eval_cfg.metrics or default_metrics(rows))
    start = time.perf_counter()
    gens = generate(model, tokenizer, [r["messages"] for r in rows], max_new_tokens=eval_cfg.max_new_tokens,
                    batch_size=eval_cfg.batch_size, max_prompt_length=max_prompt_length, precision=precision)
    seconds = time.perf_counter() - start
    preds, truncated = [g.text for g in gens], [g.truncated for g in gens]
    metrics: dict[str, Any] = {}
    math_names = [n for n in names if n in MATH_METRICS]
    text_names = [n for n in names if n in TEXT_METRICS]
    if math_names:
        metrics.update(score(preds, [str(r.get("answer", "")) for r in rows], math_names, truncated=truncated))
        metrics["metric_notes"] = NOTES
    if text_names:
        metrics.update(score(preds, [_reference_text(r) for r in rows], text_names))
    metrics["generation"] = {
        "rows": len(rows), "greedy": True, "max_new_tokens": eval_cfg.max_new_tokens,
        "max_prompt_length": max_prompt_length, "batch_size": eval_cfg.batch_size, "precision": precision,
        "truncation_rate": round(sum(truncated) / max(len(rows), 1), 4),
        "mean_new_tokens": round(sum(g.new_tokens for g in gens) / max(len(rows), 1), 1),
        "seconds": round(seconds, 2),
    }
    predictions = []
    for i, (row, g) in enumerate(zip(rows, gens)):
        item = {"index": i, "id": row.get("id"), "lang": row.get("lang"), "reference": _reference_text(row),
                "prediction": g.text, "truncated": g.truncated, "new_tokens": g.new_tokens}
        if row.get("answer") is not None:
            item.update(answer=str(row["answer"]), extracted=extract_answer(g.text))
        predictions.append(item)
    return metrics, predictions


def write_predictions(path: Path, predictions: Sequence[dict[str, Any]]) -> Path:
    """JSONL next to the run record, written atomically like the record itself."""
    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    return path
