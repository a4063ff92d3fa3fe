"""Per-sample maths verdicts: accuracy, strict accuracy, CTC and AC.

A generation may open a reasoning block with ``<think>`` and close it with ``</think>``; when the
prompt itself ends with ``<think>`` (DeepSeek-R1 chat template) the generation holds only the
closing tag, and the text before it is the reasoning. Callers whose prompt opens the block and
whose generation may stop before ``</think>`` should prepend ``<think>`` so that the cut is seen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

from qtha.metrics.answers import answers_match, count_answers, extract_answer, locate_answer

NOTES = ("CTC (chain-of-thought complete) and AC (answer complete) are this project's reading of the paper's "
         "abbreviations: CTC = reasoning present (a closed <think> block, or text before the final answer) and "
         "not cut off; AC = a final answer (\\boxed{} or ####) is present.")
_OPEN, _CLOSE = "<think>", "</think>"


class Reasoning(NamedTuple):
    """The ``<think>`` block of a generation (``text`` None when there are no think tags)."""

    text: Optional[str]
    closed: bool
    after: str  # what follows the closed block: where the final answer belongs


def split_reasoning(text: str) -> Reasoning:
    """Separate the think block from the answer part."""
    last_open, last_close = text.rfind(_OPEN), text.rfind(_CLOSE)
    if last_open < 0 and last_close < 0:
        return Reasoning(None, True, text)
    if last_open > last_close:
        return Reasoning(text[last_open + len(_OPEN):], False, "")
    first_open = text.find(_OPEN)
    start = first_open + len(_OPEN) if 0 <= first_open < last_close else 0
    return Reasoning(text[start:last_close], True, text[last_close + len(_CLOSE):])


@dataclass(frozen=True)
class MathVerdict:
    """What the four maths metrics say about one generation."""

    accuracy: bool
    strict_accuracy: bool
    ctc: bool
    ac: bool


def judge(prediction: str, reference: str, truncated: Optional[bool] = None) -> MathVerdict:
    """Score one generation against its gold answer.

    * accuracy: the extracted answer (last ``\\boxed{}``, else last ``####``) matches the gold;
    * AC (answer complete): such an answer is present;
    * cut off: ``truncated`` (max_new_tokens was hit) when known; otherwise inferred — an unclosed
      ``<think>`` or a missing final answer counts as cut off;
    * CTC (chain-of-thought complete): reasoning is present (a closed, non-empty think block, or
      without think tags non-empty text before the final answer) and the generation is not cut off;
    * strict accuracy: not cut off, think block closed, exactly one final answer after the
      reasoning, and that answer matches the gold.

    A gold ``reference`` that itself carries a final-answer marker (e.g. a raw GSM8K solution ending
    in ``#### 72``) is reduced to that answer first.
    """
    gold = extract_answer(reference) or reference
    answer = locate_answer(prediction)
    reasoning = split_reasoning(prediction)
    cut_off = truncated if truncated is not None else (not reasoning.closed or answer is None)
    if reasoning.text is not None:
        reasoned = reasoning.closed and bool(reasoning.text.strip())
    else:
        reasoned = bool(prediction[:answer.start if answer else len(prediction)].strip())
    strict = (not cut_off and reasoning.closed and count_answers(reasoning.after) == 1
              and answers_match(extract_answer(reasoning.after), gold))
    return MathVerdict(accuracy=answers_match(answer.content if answer else None, gold), strict_accuracy=strict,
                       ctc=reasoned and not cut_off, ac=answer is not None)
