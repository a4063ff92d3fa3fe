"""Maths answers: extraction, normalised comparison, and the accuracy / strict / CTC / AC verdicts."""
from __future__ import annotations

import pytest

from qtha.metrics import NOTES, answers_match, extract_answer, score

MATH = ["accuracy", "strict_accuracy", "ctc", "ac"]


def math_scores(prediction: str, reference: str, truncated: bool | None = None) -> dict[str, float]:
    return score([prediction], [reference], MATH, truncated=None if truncated is None else [truncated])


@pytest.mark.parametrize("text, answer", [
    (r"so \boxed{\frac{3}{5}}.", r"\frac{3}{5}"),
    (r"first \boxed{1}, then \boxed{ {2} + 1 }", "{2} + 1"),
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
    ("#### 1\nmore\n#### 2  ", "2"),
    ("#### 5\n" r"\boxed{6}", "6"),  # a boxed answer wins over a #### line
    (r"\boxed{7} and then \boxed{8", "7"),  # an unclosed box (cut-off text) is ignored
    ("The answer is 42.", None),
    (r"\boxed{ }", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("pred, ref", [
    (r"\frac{3}{5}", "3/5"), (r"\dfrac{3}{5}", "0.6"), (r"\frac35", "3/5"), (r"-\frac{1}{2}", "-0.5"),
    ("1,234", "1234"), ("1,234,567.0", "1234567"), ("+5", "5"), ("72.", "72"), (r"\$18.00", "18"),
    ("$18$", "18"), ("18 dollars", "18"), (r"90^\circ", "90"), ("x = 5", "5"),
    ("25%", "25"), (r"25\%", "25"), ("0.3333333333", "1/3"),
    (r"\text{(B)}", "(b)"), (r"\dfrac{\sqrt{3}}{2}", r"\frac{\sqrt{3}}{2}"), (r"\left(1, 2\right)", "(1,2)"),
])
def test_answers_match(pred, ref):
    assert answers_match(pred, ref)


@pytest.mark.parametrize("pred, ref", [
    ("5", "6"), ("0.3333", "1/3"), ("1,2", "12"), ("(1, 2)", "(2,1)"), (None, "5"), ("3/0", "3"),
    # math-verify's readings, which decide: a LaTeX percent sign is dropped, text with units stays text
    (r"25\%", "0.25"), (r"\text{18 cm}", "18"),
])
def test_answers_do_not_match(pred, ref):
    assert not answers_match(pred, ref)


def test_boxed_fraction_against_slash_reference_is_correct():
    assert math_scores(r"3 of 5 parts: \boxed{\frac{3}{5}}", "3/5") == {name: 100.0 for name in MATH}


def test_gsm8k_style_answer_and_thousands():
    assert math_scores("48 + 24 = 72\n#### 72", "72") == {name: 100.0 for name in MATH}
    assert math_scores("617 * 2 = 1,234\n#### 1,234", "1234")["accuracy"] == 100.0
    # a raw GSM8K solution as the reference is reduced to its #### answer
    assert math_scores(r"so \boxed{72}", "48/2 = 24\n48 + 24 = 72\n#### 72")["accuracy"] == 100.0


def test_no_final_answer_scores_zero_and_is_not_complete():
    assert math_scores("The answer is 72.", "72") == {"accuracy": 0.0, "strict_accuracy": 0.0, "ctc": 0.0, "ac": 0.0}


def test_two_final_answers_are_accurate_but_not_strict():
    got = math_scores(r"maybe \boxed{70}; no, \boxed{72}", "72")
    assert got == {"accuracy": 100.0, "strict_accuracy": 0.0, "ctc": 100.0, "ac": 100.0}


def test_unclosed_think_is_cut_off_reasoning():
    got = math_scores(r"<think>48 + 24 = 72, so \boxed{72} unless", "72")
    assert got == {"accuracy": 100.0, "strict_accuracy": 0.0, "ctc": 0.0, "ac": 100.0}


def test_closed_think_with_one_answer_after_it_is_strict():
    got = math_scores("<think>48 + 24 = 72</think>\nThe answer is \\boxed{72}.", "72")
    assert got == {name: 100.0 for name in MATH}
    # DeepSeek-R1's template opens <think> in the prompt: the generation holds only the closing tag
    assert math_scores("48 + 24 = 72</think>\n\\boxed{72}", "72") == {name: 100.0 for name in MATH}
    # an answer boxed inside the reasoning is not the final answer after it
    got = math_scores("<think>try \\boxed{72}</think>\nDone.", "72")
    assert got == {"accuracy": 100.0, "strict_accuracy": 0.0, "ctc": 100.0, "ac": 100.0}
    # an empty think block is no reasoning
    assert math_scores("<think>\n</think>\\boxed{72}", "72")["ctc"] == 0.0


def test_truncated_flag_is_honoured():
    text = "<think>48 + 24 = 72</think>\n\\boxed{72}"
    assert math_scores(text, "72", truncated=True) == {"accuracy": 100.0, "strict_accuracy": 0.0, "ctc": 0.0,
                                                       "ac": 100.0}
    # known not truncated: reasoning finished without an answer is a complete chain of thought
    assert math_scores("<think>I cannot solve it</think>", "72", truncated=False) == {
        "accuracy": 0.0, "strict_accuracy": 0.0, "ctc": 100.0, "ac": 0.0}
    assert math_scores("<think>I cannot solve it</think>", "72")["ctc"] == 0.0  # inferred: no answer = cut off
    assert math_scores("no think tags, no answer", "72", truncated=False)["ctc"] == 100.0


def test_ctc_without_think_tags_needs_text_before_the_answer():
    assert math_scores(r"\boxed{72}", "72") == {"accuracy": 100.0, "strict_accuracy": 100.0, "ctc": 0.0,
                                                "ac": 100.0}


def test_math_scores_are_percentages_over_samples():
    preds = [r"a \boxed{1}", r"b \boxed{3}", "c", r"<think>d \boxed{4}"]
    got = score(preds, ["1", "2", "3", "4"], MATH, truncated=[False, False, False, True])
    assert got == {"accuracy": 50.0, "strict_accuracy": 25.0, "ctc": 75.0, "ac": 75.0}


def test_notes_say_ctc_and_ac_are_our_reading():
    assert "CTC (chain-of-thought complete)" in NOTES and "AC (answer complete)" in NOTES
    assert "this project's reading" in NOTES
