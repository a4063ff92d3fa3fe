"""BLEU-4 and ROUGE-1/2/L exactly as the authors' stack scores them (SPEC §3).

The recipe is LLaMA-Factory's ``ComputeSimilarity`` (which the authors' fork wires into its SFT
workflow), per sample: hypothesis and reference cut into jieba words; ROUGE-1/2/L = the
``rouge-chinese`` package's F-scores of the space-joined words (0 when either side has no word);
BLEU-4 = nltk's ``sentence_bleu([list(reference)], list(hypothesis),
smoothing_function=SmoothingFunction().method3)`` on characters; each ×100 and rounded to four
decimals as LLaMA-Factory rounds it; a corpus score is the mean over samples. The same for every
language: the recipe has no language switch. ``rouge-chinese`` counts n-gram *sets*, so its
ROUGE-1/2 differ from count-based ROUGE by several points on repetitive generations: these are
the authors' numbers, not ``rouge_score``'s.
"""
from __future__ import annotations

import functools
import logging
import warnings
from types import ModuleType

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_ROUGE_KEYS = {"rouge-1": "rouge1", "rouge-2": "rouge2", "rouge-l": "rougeL"}
_SMOOTHING = SmoothingFunction().method3


@functools.cache
def _jieba() -> ModuleType:
    """Import and initialise jieba on first use, without its start-up chatter on stderr."""
    import jieba

    jieba.setLogLevel(logging.CRITICAL)
    jieba.initialize()
    return jieba


def words(text: str) -> list[str]:
    """jieba's cut of ``text``, as the recipe feeds it to ROUGE (whitespace tokens drop out on the join)."""
    return " ".join(_jieba().cut(text)).split()


def bleu4(prediction: str, reference: str) -> float:
    """Character BLEU-4 ×100 (nltk, smoothing method 3), rounded to four decimals."""
    with warnings.catch_warnings():  # nltk warns on every sample with no higher-order overlap
        warnings.simplefilter("ignore")
        score = sentence_bleu([list(reference)], list(prediction), smoothing_function=_SMOOTHING)
    return round(score * 100, 4)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F ×100 (rouge-chinese on jieba words), rounded to four decimals; 0 if a side is empty."""
    hyp, ref = words(prediction), words(reference)
    if not hyp or not ref:
        return {name: 0.0 for name in ROUGE_TYPES}
    scores = Rouge().get_scores(" ".join(hyp), " ".join(ref))[0]
    return {_ROUGE_KEYS[key]: round(value["f"] * 100, 4) for key, value in scores.items()}
