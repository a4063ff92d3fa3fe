"""BLEU-4 and ROUGE golden values, hand-checked on small Chinese and English pairs."""
from __future__ import annotations

import math

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from qtha.metrics import is_chinese, score
from qtha.metrics.rouge import JiebaTokenizer

TEXT = ["bleu4", "rouge1", "rouge2", "rougeL"]


@pytest.mark.parametrize("text", ["今天天气很好，我们去公园。", "The quick brown fox jumps over the lazy dog."])
def test_identical_strings_score_100(text):
    assert score([text], [text], TEXT) == pytest.approx({name: 100.0 for name in TEXT})


def test_english_partial_overlap_by_hand():
    # pred: the cat sat on the mat / ref: The cat is on the mat. (ROUGE: lower-cased words, no ".")
    # ROUGE-1: 5 shared words (the×2, cat, on, mat) → P = R = F = 5/6
    # ROUGE-2: shared bigrams {the cat, on the, the mat} = 3 of 5 each side → F = 3/5
    # ROUGE-L: LCS "the cat on the mat" = 5 → F = 5/6
    got = score(["the cat sat on the mat"], ["The cat is on the mat."], ["rouge1", "rouge2", "rougeL"])
    assert got == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0, "rougeL": 500 / 6})
    # BLEU-4 (13a keeps case, splits off "."): p1..p4 = 5/6, 3/5, 1/4 ("on the mat"), 0/3 → exp smoothing
    # 1/(2·3); the reference has 7 tokens to the prediction's 6, so BP = exp(1 − 7/6).
    precisions = 5 / 6 * 3 / 5 * 1 / 4 * 1 / 6
    got = score(["the cat sat on the mat"], ["the cat is on the mat ."], ["bleu4"])["bleu4"]
    assert got == pytest.approx(100 * math.exp(1 - 7 / 6) * precisions ** 0.25)
    got = score(["the cat sat on the mat"], ["the cat is on the mat"], ["bleu4"])["bleu4"]
    assert got == pytest.approx(100 * precisions ** 0.25)


def test_chinese_rouge_on_jieba_words_by_hand():
    pred, ref = "我爱北京天安门", "我爱北京的故宫"
    assert JiebaTokenizer().tokenize(pred) == ["我", "爱", "北京", "天安门"]
    assert JiebaTokenizer().tokenize(ref) == ["我", "爱", "北京", "的", "故宫"]
    # ROUGE-1: 3 shared words → P = 3/4, R = 3/5, F = 2·(3/4)(3/5)/(3/4 + 3/5) = 2/3
    # ROUGE-2: shared bigrams {我爱, 爱北京} → P = 2/3, R = 2/4, F = 4/7
    # ROUGE-L: LCS 我 爱 北京 = 3 → same as ROUGE-1
    got = score([pred], [ref], ["rouge1", "rouge2", "rougeL"])
    assert got == pytest.approx({"rouge1": 200 / 3, "rouge2": 400 / 7, "rougeL": 200 / 3})


def test_chinese_bleu_is_on_characters_by_hand():
    # 6 characters each; p1..p4 = 5/6, 3/5, 2/4, 1/3 (no smoothing needed), BP = 1
    got = score(["今天天气很好"], ["今天天气不好"], ["bleu4"])["bleu4"]
    assert got == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)


@pytest.mark.parametrize("pred, ref", [
    ("我爱北京天安门", "我爱北京的故宫"),
    ("我喜欢吃苹果", "我爱吃苹果和香蕉"),  # no shared 3- or 4-gram: smoothing decides
    ("他们喜欢研究自然语言处理", "我们喜欢学习自然语言处理"),
])
def test_chinese_bleu_matches_nltk_method3_on_character_lists(pred, ref):
    """The authors' recipe: nltk sentence_bleu on character lists with SmoothingFunction().method3."""
    expected = 100 * sentence_bleu([list(ref)], list(pred), smoothing_function=SmoothingFunction().method3)
    assert score([pred], [ref], ["bleu4"])["bleu4"] == pytest.approx(expected)


def test_empty_prediction_scores_zero():
    assert score([""], ["今天天气很好"], TEXT) == {name: 0.0 for name in TEXT}
    assert score([""], ["a reference"], TEXT) == {name: 0.0 for name in TEXT}


def test_scores_are_per_sample_means_across_languages():
    preds, refs = ["今天天气很好", "the cat sat on the mat"], ["今天天气不好", "the cat is on the mat"]
    mixed = score(preds, refs, TEXT)
    alone = [score([p], [r], TEXT) for p, r in zip(preds, refs)]
    assert mixed == pytest.approx({name: (alone[0][name] + alone[1][name]) / 2 for name in TEXT})
    assert alone[1]["rouge1"] == pytest.approx(100 * 5 / 6)


def test_lang_forces_the_tokeniser():
    # As "en", each Chinese sentence is one \w+ word, and the two words differ. As "zh": jieba gives
    # 今天天气|很|好 and 今天天气|不好 → P = 1/3, R = 1/2, F = 2/5.
    assert score(["今天天气很好"], ["今天天气不好"], ["rouge1"], lang="en") == {"rouge1": 0.0}
    assert score(["今天天气很好"], ["今天天气不好"], ["rouge1"], lang="zh")["rouge1"] == pytest.approx(40.0)


def test_is_chinese():
    assert is_chinese("你好") and is_chinese("hello 世界")
    assert not is_chinese("hello") and not is_chinese("，。") and not is_chinese("")
