"""The shared ``evaluate.Metric`` behind the local modules: metadata plus a call to ``score``."""
from __future__ import annotations

from typing import Any, ClassVar

import datasets
import evaluate

from qtha.metrics.scoring import score

_INPUTS = """
Args:
    predictions: generated texts.
    references: one reference text (or gold maths answer) per prediction.
    truncated: optional per-prediction flags, True where generation hit max_new_tokens (maths only).
Returns: the metric values ×100, each the mean over samples.
"""


class QthaMetric(evaluate.Metric):
    """Reports ``METRICS`` from ``qtha.metrics.score``; subclasses set the names and description."""

    METRICS: ClassVar[tuple[str, ...]] = ()
    DESCRIPTION: ClassVar[str] = ""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.DESCRIPTION, citation="", inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions: list[str], references: list[str], **kwargs: Any) -> dict[str, float]:
        return score(predictions, references, self.METRICS, **kwargs)
