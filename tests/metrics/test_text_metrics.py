"""BLEU-4 and ROUGE by the authors' recipe (LLaMA-Factory's ComputeSimilarity), against hand-computed values
and an independent implementation of that recipe (n-gram sets, LCS and smoothed BLEU written out here, with
no rouge-chinese and no nltk), on small pairs and on every committed CPsyCounD prediction."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from qtha.metrics import is_chinese, score
from qtha.metrics.similarity import words

TEXT = ["bleu4", "rouge1", "rouge2", "rougeL"]
PREDICTIONS = sorted((Path(__file__).resolve().parents[2] / "results" / "runs").glob(
    "cpsycound_main/*.predictions.jsonl"))


# --------------------------------------------------------------------------- the recipe, written out
def _f(overlap: int, hyp: int, ref: int) -> float:
    p, r = (overlap / hyp if hyp else 0.0), (overlap / ref if ref else 0.0)
    return 2.0 * p * r / (p + r + 1e-8)


def _rouge_n(hyp: list[str], ref: list[str], n: int) -> float:
    """rouge-chinese's ROUGE-N: the n-gram *sets* of the word lists."""
    h = {tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1)}
    r = {tuple(ref[i:i + n]) for i in range(len(ref) - n + 1)}
    return _f(len(h & r), len(h), len(r))


def _lcs(x: list[str], y: list[str]) -> int:
    row = [0] * (len(y) + 1)
    for a in x:
        prev, row[0] = 0, 0
        for j, b in enumerate(y, 1):
            prev, row[j] = row[j], prev + 1 if a == b else max(row[j], row[j - 1])
    return row[-1]


def _bleu4(hyp: list[str], ref: list[str]) -> float:
    """Sentence BLEU-4 with Chen & Cherry's smoothing 3 (NIST geometric), as nltk's method3 applies it:
    no unigram match scores 0; the k-th order without a match gets precision 1 / (2^k · its count)."""
    clipped, totals = [], []
    for n in range(1, 5):
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        clipped.append(sum(min(c, r[g]) for g, c in h.items()))
        totals.append(max(1, sum(h.values())))
    if clipped[0] == 0:
        return 0.0
    precisions, k = [], 1
    for c, t in zip(clipped, totals):
        if c == 0:
            precisions.append(1 / (2 ** k * t))
            k += 1
        else:
            precisions.append(c / t)
    bp = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return bp * math.exp(sum(0.25 * math.log(p) for p in precisions))


def recipe(prediction: str, reference: str) -> dict[str, float]:
    hyp, ref = words(prediction), words(reference)
    out = {"bleu4": 100 * _bleu4(list(prediction), list(reference))}
    if not hyp or not ref:
        return out | {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    return out | {"rouge1": 100 * _rouge_n(hyp, ref, 1), "rouge2": 100 * _rouge_n(hyp, ref, 2),
                  "rougeL": 100 * _f(_lcs(hyp, ref), len(hyp), len(ref))}


# --------------------------------------------------------------------------- hand-computed
def test_identical_strings_score_100():
    for text in ["今天天气很好，我们去公园。", "The quick brown fox jumps over the lazy dog."]:
        assert score([text], [text], TEXT) == pytest.approx({name: 100.0 for name in TEXT}, abs=1e-4)


def test_chinese_rouge_on_jieba_words_by_hand():
    pred, ref = "我爱北京天安门", "我爱北京的故宫"
    assert words(pred) == ["我", "爱", "北京", "天安门"] and words(ref) == ["我", "爱", "北京", "的", "故宫"]
    # ROUGE-1: 3 shared words → P = 3/4, R = 3/5, F = 2/3; ROUGE-2: {我爱, 爱北京} → P = 2/3, R = 2/4, F = 4/7;
    # ROUGE-L: LCS 我 爱 北京 = 3 → 2/3
    got = score([pred], [ref], ["rouge1", "rouge2", "rougeL"])
    assert got == pytest.approx({"rouge1": 200 / 3, "rouge2": 400 / 7, "rougeL": 200 / 3}, abs=1e-4)


def test_rouge_counts_ngram_sets_not_counts():
    """rouge-chinese's sets: a hypothesis repeating one shared word three times overlaps once."""
    got = score(["好 好 好"], ["好 天气"], ["rouge1"])["rouge1"]
    assert got == pytest.approx(100 * _f(1, 1, 2), abs=1e-4)  # count-based ROUGE would say 2·(1/3)(1/2)/(5/6) = 40


def test_bleu_is_on_characters_even_in_english_by_hand():
    # 6 characters each; p1..p4 = 5/6, 3/5, 2/4, 1/3 (no smoothing needed), BP = 1
    got = score(["今天天气很好"], ["今天天气不好"], ["bleu4"])["bleu4"]
    assert got == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-4)
    assert score(["ab"], ["ab"], ["bleu4"])["bleu4"] == pytest.approx(100 * _bleu4(["a", "b"], ["a", "b"]), abs=1e-4)


def test_empty_prediction_scores_zero():
    assert score([""], ["今天天气很好"], TEXT) == {name: 0.0 for name in TEXT}
    assert score(["  "], ["a reference"], ["rouge1", "rouge2", "rougeL"]) == {"rouge1": 0.0, "rouge2": 0.0,
                                                                             "rougeL": 0.0}


def test_scores_are_per_sample_means_across_languages():
    preds, refs = ["今天天气很好", "the cat sat on the mat"], ["今天天气不好", "the cat is on the mat"]
    mixed = score(preds, refs, TEXT)
    alone = [score([p], [r], TEXT) for p, r in zip(preds, refs)]
    assert mixed == pytest.approx({name: (alone[0][name] + alone[1][name]) / 2 for name in TEXT})


# --------------------------------------------------------------------------- the independent recipe
@pytest.mark.parametrize("pred, ref", [
    ("我爱北京天安门", "我爱北京的故宫"), ("我喜欢吃苹果", "我爱吃苹果和香蕉"),
    ("他们喜欢研究自然语言处理", "我们喜欢学习自然语言处理"), ("the cat sat on the mat", "the cat is on the mat."),
    ("好的好的好的，我明白了。你能再说说吗？", "我明白。你能多说一点吗？"), ("是", "是的，我理解你的感受。"),
])
def test_small_pairs_equal_the_written_out_recipe(pred, ref):
    assert score([pred], [ref], TEXT) == pytest.approx(recipe(pred, ref), abs=1e-4)


def test_committed_cpsycound_predictions_equal_the_written_out_recipe():
    """Every committed CPsyCounD prediction (16 per run): the worst per-sample gap is LLaMA-Factory's rounding."""
    rows = [json.loads(line) for path in PREDICTIONS for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(PREDICTIONS) >= 6 and len(rows) == 16 * len(PREDICTIONS)
    worst = max(abs(score([r["prediction"]], [r["reference"]], [name])[name] - recipe(r["prediction"],
                                                                                      r["reference"])[name])
                for r in rows for name in TEXT)
    assert worst <= 5e-5 + 1e-9


def test_is_chinese():
    assert is_chinese("你好") and is_chinese("hello 世界")
    assert not is_chinese("hello") and not is_chinese("，。") and not is_chinese("")
