"""ROUGE-1/2/L F-scores (×100) with ``rouge_score`` and language-aware word tokenisers.

``rouge_score``'s default tokenizer keeps only ``[a-z0-9]``, so Chinese text would score 0;
Chinese is cut into jieba words (punctuation kept, as in the authors' jieba + ROUGE script),
English into lower-cased ``\\w+`` words.
"""
from __future__ import annotations

import functools
import logging
import re
from types import ModuleType

from rouge_score.rouge_scorer import RougeScorer
from rouge_score.tokenizers import Tokenizer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_WORD = re.compile(r"\w+")


@functools.cache
def _jieba() -> ModuleType:
    """Import and initialise jieba on first use, without its start-up chatter on stderr."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


class JiebaTokenizer(Tokenizer):
    """Lower-cased jieba words, whitespace dropped."""

    def tokenize(self, text: str) -> list[str]:
        return [w.lower() for w in (t.strip() for t in _jieba().cut(text)) if w]


class WordTokenizer(Tokenizer):
    """Lower-cased ``\\w+`` words (Unicode-aware, punctuation dropped)."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


@functools.cache
def _scorer(chinese: bool) -> RougeScorer:
    return RougeScorer(list(ROUGE_TYPES), tokenizer=JiebaTokenizer() if chinese else WordTokenizer())


def rouge_f(prediction: str, reference: str, chinese: bool) -> dict[str, float]:
    """ROUGE-1/2/L F-measures ×100 of one prediction against one reference."""
    scores = _scorer(chinese).score(target=reference, prediction=prediction)
    return {name: scores[name].fmeasure * 100 for name in ROUGE_TYPES}
