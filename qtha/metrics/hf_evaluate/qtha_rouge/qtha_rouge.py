"""ROUGE-1/2/L F-scores ×100 averaged per sample (Chinese on jieba words); see qtha.metrics.rouge."""
from qtha.metrics.hf_evaluate import base  # the module, not the class: evaluate.load takes the first Metric class


class QthaRouge(base.QthaMetric):
    METRICS = ("rouge1", "rouge2", "rougeL")
    DESCRIPTION = __doc__
