"""``score``'s contract, the perplexity helper, and the offline ``evaluate`` modules."""
from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest

from qtha.metrics import evaluate_path, perplexities, score

PREDS = ["今天天气很好", "the cat sat on the mat", r"<think>6 * 7</think> \boxed{42}", "#### 1,234"]
REFS = ["今天天气不好", "the cat is on the mat", "42", "1234"]


def test_names_keep_the_requested_order():
    assert list(score(["a b"], ["a b"], ["rougeL", "bleu4", "ac"])) == ["rougeL", "bleu4", "ac"]
    assert score(["a b"], ["a b"], "rouge1") == {"rouge1": 100.0}


@pytest.mark.parametrize("kwargs, message", [
    (dict(names=["bleu"]), "unknown metric 'bleu'; allowed: bleu4, rouge1, rouge2, rougeL, accuracy, "
                           "strict_accuracy, ctc, ac"),
    (dict(references=["x", "y"]), "1 predictions but 2 references"),
    (dict(predictions=[], references=[]), "score needs at least one prediction"),
    (dict(truncated=[True, False]), "2 truncated flags for 1 predictions"),
])
def test_bad_arguments_raise_one_line_value_errors(kwargs, message):
    call = dict(predictions=["x"], references=["x"], names=["bleu4"]) | kwargs
    with pytest.raises(ValueError) as err:
        score(**call)
    assert str(err.value) == message


def test_perplexities_by_hand():
    # token-weighted mean loss (1·1 + 2·3) / 4 = 1.75; per-sample exps e¹ and e² averaged
    got = perplexities([1.0, 2.0], [1, 3])
    assert got == pytest.approx({"ppl": math.exp(1.75), "ppl_sample": (math.e + math.e ** 2) / 2})
    assert perplexities([0.0], [5]) == {"ppl": 1.0, "ppl_sample": 1.0}


@pytest.mark.parametrize("losses, counts, message", [
    ([1.0], [1, 2], "1 losses but 2 token counts"),
    ([], [], "perplexities needs at least one sample"),
    ([1.0], [0], "every token count must be positive"),
])
def test_perplexities_reject_bad_input(losses, counts, message):
    with pytest.raises(ValueError, match=message):
        perplexities(losses, counts)


def test_evaluate_path_names_a_module_folder():
    path = evaluate_path("qtha_math")
    assert Path(path).name == "qtha_math" and (Path(path) / "qtha_math.py").is_file()
    with pytest.raises(ValueError) as err:
        evaluate_path("bleu")
    assert str(err.value) == "unknown evaluate module 'bleu'; allowed: qtha_bleu4, qtha_rouge, qtha_math"


@pytest.fixture(scope="module")
def offline_evaluate(tmp_path_factory):
    """``evaluate`` with the offline switches on, its module cache in a temp dir, and no sockets."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_EVALUATE_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        import evaluate

        mp.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
        mp.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path_factory.mktemp("hf_modules"))

        def no_network(*args, **kwargs):
            raise OSError("network access in an offline test")

        mp.setattr(socket.socket, "connect", no_network)
        yield evaluate, tmp_path_factory.mktemp("evaluate_cache")


@pytest.mark.parametrize("module, names", [
    ("qtha_bleu4", ["bleu4"]),
    ("qtha_rouge", ["rouge1", "rouge2", "rougeL"]),
    ("qtha_math", ["accuracy", "strict_accuracy", "ctc", "ac"]),
])
def test_evaluate_modules_load_offline_and_agree_with_score(offline_evaluate, module, names):
    evaluate, cache = offline_evaluate
    metric = evaluate.load(evaluate_path(module), cache_dir=str(cache), keep_in_memory=True)
    assert metric.name == module
    truncated = [False, False, False, True]
    got = metric.compute(predictions=PREDS, references=REFS, truncated=truncated)
    assert got == score(PREDS, REFS, names, truncated=truncated)


def test_evaluate_module_values(offline_evaluate):
    """Concrete numbers through evaluate: the hand-checked Chinese pair and the maths verdicts."""
    evaluate, cache = offline_evaluate
    bleu = evaluate.load(evaluate_path("qtha_bleu4"), cache_dir=str(cache), keep_in_memory=True)
    got = bleu.compute(predictions=["今天天气很好"], references=["今天天气不好"])
    assert got["bleu4"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    maths = evaluate.load(evaluate_path("qtha_math"), cache_dir=str(cache), keep_in_memory=True)
    got = maths.compute(predictions=PREDS[2:], references=REFS[2:], truncated=[False, True])
    assert got == {"accuracy": 100.0, "strict_accuracy": 50.0, "ctc": 50.0, "ac": 100.0}
