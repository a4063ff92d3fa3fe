"""Final-answer extraction, and equivalence decided by Hugging Face's ``math-verify``.

A final answer is the content of a ``\\boxed{...}`` (balanced braces, nesting allowed) or of a
GSM8K-style ``#### N`` line; the last ``\\boxed{}`` wins, else the last ``####`` line (SPEC §3).
Whether it equals the gold answer is ``math_verify.verify`` of the two parsed answers (LaTeX and
plain expressions, symbolic equivalence, percentages, thousands separators, units), with a
normalised string comparison for answers that are not mathematics.
"""
from __future__ import annotations

import functools
import re
import threading
from typing import Any, NamedTuple, Optional

from math_verify import parse, verify

_BOXED = re.compile(r"\\boxed\s*\{")
_HASH_LINE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
TIMEOUT_S = 5  # math-verify's own guard against pathological inputs (signals: main thread only)


class AnswerSpan(NamedTuple):
    """A final-answer marker: where it starts in the text and its (stripped) content."""

    start: int
    content: str


def _boxed_spans(text: str) -> list[AnswerSpan]:
    """Every ``\\boxed{...}`` whose braces close; an unclosed one (cut-off text) is ignored."""
    spans = []
    for match in _BOXED.finditer(text):
        depth = 1
        for i in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                spans.append(AnswerSpan(match.start(), text[match.end():i].strip()))
                break
    return spans


def _hash_spans(text: str) -> list[AnswerSpan]:
    return [AnswerSpan(m.start(), m.group(1)) for m in _HASH_LINE.finditer(text)]


def count_answers(text: str) -> int:
    """How many final-answer markers (``\\boxed{}`` plus ``####`` lines) the text holds."""
    return len(_boxed_spans(text)) + len(_hash_spans(text))


def locate_answer(text: str) -> Optional[AnswerSpan]:
    """The final answer: the last ``\\boxed{}``, else the last ``####`` line; None if absent or empty."""
    spans = _boxed_spans(text) or _hash_spans(text)
    if not spans or not spans[-1].content:
        return None
    return spans[-1]


def extract_answer(text: str) -> Optional[str]:
    """The final answer's text (see ``locate_answer``), or None when there is none."""
    span = locate_answer(text)
    return None if span is None else span.content


def _timeout() -> Optional[int]:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=8192)
def _parsed(answer: str) -> tuple[Any, ...]:
    """math-verify's parse of an answer as LaTeX (``$…$``) and as plain text: two chances to read it."""
    timeout = _timeout()
    return (tuple(parse(f"${answer}$", parsing_timeout=timeout)), tuple(parse(answer, parsing_timeout=timeout)))


def answers_match(prediction: Optional[str], reference: str) -> bool:
    """Whether an extracted answer equals the gold answer (``math_verify.verify``; a missing prediction never
    does). Read as LaTeX first, then as plain text (``18 dollars``); answers neither reading parses compare as
    lower-cased strings without whitespace."""
    if prediction is None:
        return False
    for gold, pred in zip(_parsed(reference), _parsed(prediction)):
        if gold and pred and verify(list(gold), list(pred), timeout_seconds=_timeout()):
            return True
    return re.sub(r"\s+", "", prediction).lower() == re.sub(r"\s+", "", reference).lower()
