"""Final-answer extraction and comparison for maths generations.

A final answer is the content of a ``\\boxed{...}`` (balanced braces, nesting allowed) or of a
GSM8K-style ``#### N`` line; the last ``\\boxed{}`` wins, else the last ``####`` line. Answers
compare numerically (relative tolerance 1e-6) when both sides parse as numbers, otherwise as
normalised strings.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple, Optional

_BOXED = re.compile(r"\\boxed\s*\{")
_HASH_LINE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_FRAC = re.compile(rf"([+-]?)\\frac(?:\{{({_NUM})\}}|(\d))(?:\{{({_NUM})\}}|(\d))")
_SLASH = re.compile(rf"({_NUM})/({_NUM})")
_PLAIN = re.compile(_NUM)
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\(?:left|right)(?![A-Za-z])|\\[!,;: ]|\\?\$")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°|\\circ")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\w*\s*=\s*(?=\S)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TRAILING_UNITS = re.compile(r"(?<=\d)(?:\s+[A-Za-z]+)+$")
REL_TOL = 1e-6


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


def _clean(answer: str) -> str:
    """Strip LaTeX decoration that does not change the value."""
    s = _WRAPPERS.sub(r"\1", answer)
    s = _SPACING.sub("", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    s = _DEGREES.sub("", s).strip().rstrip(".").strip()
    return _ASSIGNMENT.sub("", s)


def _to_number(answer: str) -> Optional[tuple[float, bool]]:
    """(value, had a percent sign) for a plain number, fraction, ``a/b`` or percentage; else None.

    Thousands commas, spaces, a leading ``+`` and trailing unit words (``18 dollars``) are ignored.
    """
    s = _TRAILING_UNITS.sub("", _THOUSANDS.sub("", answer))
    s = re.sub(r"\s+", "", s)
    percent = s.endswith("%")
    s = s.removesuffix("%")
    if m := _FRAC.fullmatch(s):
        sign, num, den = m.group(1), m.group(2) or m.group(3), m.group(4) or m.group(5)
    elif m := _SLASH.fullmatch(s):
        sign, num, den = "", m.group(1), m.group(2)
    elif _PLAIN.fullmatch(s):
        return float(s), percent
    else:
        return None
    if float(den) == 0:
        return None
    return (-1 if sign == "-" else 1) * float(num) / float(den), percent


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL)


def answers_match(prediction: Optional[str], reference: str) -> bool:
    """Whether an extracted answer equals the gold answer.

    Numbers compare with relative tolerance 1e-6; when either side is a percentage, the value
    divided by 100 also counts (``25%`` matches ``25`` and ``0.25``). Anything else compares as
    a cleaned, lower-cased string with all whitespace removed. A missing prediction never matches.
    """
    if prediction is None:
        return False
    pred, ref = _clean(prediction), _clean(reference)
    pred_num, ref_num = _to_number(pred), _to_number(ref)
    if pred_num is not None and ref_num is not None:
        (p, p_pct), (r, r_pct) = pred_num, ref_num
        return _close(p, r) or ((p_pct or r_pct) and (_close(p / 100, r) or _close(p, r / 100)))
    return re.sub(r"\s+", "", pred).lower() == re.sub(r"\s+", "", ref).lower()
