"""Maths accuracy, strict accuracy, CTC and AC ×100; see qtha.metrics.completion (and its NOTES)."""
from qtha.metrics.hf_evaluate import base  # the module, not the class: evaluate.load takes the first Metric class


class QthaMath(base.QthaMetric):
    METRICS = ("accuracy", "strict_accuracy", "ctc", "ac")
    DESCRIPTION = __doc__
