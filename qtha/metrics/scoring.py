"""``score``: the one entry point for generation metrics (SPEC §3–4)."""
from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean
from typing import Optional

from qtha.metrics.completion import MathVerdict, judge
from qtha.metrics.similarity import ROUGE_TYPES, bleu4, rouge

TEXT_METRICS = ("bleu4", *ROUGE_TYPES)
MATH_METRICS = ("accuracy", "strict_accuracy", "ctc", "ac")
METRIC_NAMES = TEXT_METRICS + MATH_METRICS


def _check(predictions: Sequence[str], references: Sequence[str], names: Sequence[str],
           truncated: Optional[Sequence[bool]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("score needs at least one prediction")
    if truncated is not None and len(truncated) != len(predictions):
        raise ValueError(f"{len(truncated)} truncated flags for {len(predictions)} predictions")
    for name in names:
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}; allowed: {', '.join(METRIC_NAMES)}")


def _text_scores(predictions: Sequence[str], references: Sequence[str], names: set[str]) -> dict[str, float]:
    """Per-sample BLEU-4 / ROUGE by the authors' recipe (:mod:`qtha.metrics.similarity`), then averaged."""
    out = {}
    if "bleu4" in names:
        out["bleu4"] = fmean(bleu4(p, r) for p, r in zip(predictions, references))
    if names & set(ROUGE_TYPES):
        rows = [rouge(p, r) for p, r in zip(predictions, references)]
        out.update({name: fmean(row[name] for row in rows) for name in ROUGE_TYPES})
    return out


def _math_scores(predictions: Sequence[str], references: Sequence[str],
                 truncated: Optional[Sequence[bool]]) -> dict[str, float]:
    flags = truncated if truncated is not None else [None] * len(predictions)
    verdicts: list[MathVerdict] = [judge(p, r, t) for p, r, t in zip(predictions, references, flags)]
    return {name: 100 * fmean(getattr(v, name) for v in verdicts) for name in MATH_METRICS}


def score(predictions: Sequence[str], references: Sequence[str], names: Sequence[str], *,
          truncated: Optional[Sequence[bool]] = None) -> dict[str, float]:
    """Corpus scores ×100, each the mean of per-sample scores, keyed by the requested names.

    ``names`` among ``bleu4 rouge1 rouge2 rougeL accuracy strict_accuracy ctc ac`` (a lone string is
    one name, not a sequence of letters). The text metrics follow the authors' recipe (BLEU-4 on
    characters, ROUGE on jieba words: :mod:`qtha.metrics.similarity`), whatever the language. For the
    maths metrics the references are gold answers (equivalence by ``math-verify``) and ``truncated``
    says which generations hit max_new_tokens (see ``qtha.metrics.completion.judge``; CTC and AC are
    this project's reading, see ``NOTES``).
    """
    names = [names] if isinstance(names, str) else list(names)
    _check(predictions, references, names, truncated)
    wanted = set(names)
    out: dict[str, float] = {}
    if wanted & set(TEXT_METRICS):
        out.update(_text_scores(predictions, references, wanted))
    if wanted & set(MATH_METRICS):
        out.update(_math_scores(predictions, references, truncated))
    return {name: out[name] for name in names}
