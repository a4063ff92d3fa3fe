"""Sentence-level BLEU-4 (×100) with sacrebleu.

Chinese uses ``tokenize="zh"`` (every CJK character is a token, Latin runs as in 13a), English
the default ``"13a"``. Smoothing is ``"exp"``: Chen & Cherry (2014) method 3, the NIST geometric
smoothing, which is exactly NLTK's ``SmoothingFunction().method3``. The authors' script used NLTK's
``sentence_bleu`` with a ``SmoothingFunction``; method3 is the one in the ChatGLM / LLaMA-Factory
evaluation (``sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)``,
×100, averaged) that such scripts copy, so "exp" reproduces it on pure Chinese text. Two known
differences: ``list(text)`` also splits Latin words and digits into characters and keeps spaces,
where sacrebleu keeps Latin runs whole; and ``effective_order=True`` (sacrebleu's advice for
sentence BLEU) changes the score only for hypotheses shorter than four tokens.
"""
from __future__ import annotations

import functools

from sacrebleu.metrics import BLEU


@functools.cache
def _bleu(tokenize: str) -> BLEU:
    return BLEU(tokenize=tokenize, smooth_method="exp", effective_order=True)


def sentence_bleu4(prediction: str, reference: str, chinese: bool) -> float:
    """BLEU-4 of one prediction against one reference, ×100 (0 for an empty prediction)."""
    return _bleu("zh" if chinese else "13a").sentence_score(prediction, [reference]).score
