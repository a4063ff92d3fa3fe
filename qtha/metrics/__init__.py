"""Generation metrics (SPEC §3): BLEU-4, ROUGE, maths answers, and the two perplexities.

``score`` is the stable entry point; the helpers are public for the eval stage and reports.
"""
from qtha.metrics.answers import answers_match, extract_answer
from qtha.metrics.completion import NOTES
from qtha.metrics.hf_evaluate import evaluate_path
from qtha.metrics.lang import is_chinese
from qtha.metrics.perplexity import perplexities
from qtha.metrics.scoring import MATH_METRICS, METRIC_NAMES, TEXT_METRICS, score

__all__ = ["MATH_METRICS", "METRIC_NAMES", "NOTES", "TEXT_METRICS", "answers_match", "evaluate_path", "extract_answer", "is_chinese",
           "perplexities", "score"]
