"""Sentence-level BLEU-4 ×100 averaged per sample (Chinese on characters); see qtha.metrics.bleu."""
from qtha.metrics.hf_evaluate import base  # the module, not the class: evaluate.load takes the first Metric class


class QthaBleu4(base.QthaMetric):
    METRICS = ("bleu4",)
    DESCRIPTION = __doc__
