"""Tests for the embedded synthetic maths dataset (English + Chinese word problems)."""
from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections import Counter

import pytest

from qtha.data import synthetic_math as sm
from qtha.data.synthetic_math import Problem, generate, make_splits, to_messages

# An independent checker: it knows nothing of the generator beyond the solution text format.
EQUATION = re.compile(r"(-?\d+)\s*([+\-−×÷*/])\s*(-?\d+)\s*=\s*(-?\d+)")
BOXED = re.compile(r"\\boxed\{([^}]*)\}")
CJK = re.compile(r"[\u4e00-\u9fff]")
EVAL = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "−": lambda a, b: a - b,
    "×": lambda a, b: a * b, "*": lambda a, b: a * b,
    "÷": lambda a, b: a / b, "/": lambda a, b: a / b,
}
N_CHECKED = 2000


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return generate(N_CHECKED, seed=1234)


def _digest(ps: list[Problem]) -> str:
    return hashlib.sha256(repr(ps).encode()).hexdigest()


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_problems_different_seed_different():
    assert generate(300, seed=7) == generate(300, seed=7)
    assert generate(300, seed=7) != generate(300, seed=8)
    assert [p.question for p in generate(300, seed=7)] != [p.question for p in generate(300, seed=8)]


def test_generation_ignores_hash_randomisation_and_global_rng(python_process):
    """Other processes (different PYTHONHASHSEED) and global RNG state must not matter."""
    import random

    random.seed(999)
    expected = _digest(generate(500, seed=42) + make_splits(50, 20, seed=42)[1])
    random.seed(1)
    assert _digest(generate(500, seed=42) + make_splits(50, 20, seed=42)[1]) == expected
    code = ("import hashlib; from qtha.data.synthetic_math import generate, make_splits; "
            "ps = generate(500, seed=42) + make_splits(50, 20, seed=42)[1]; "
            "print(hashlib.sha256(repr(ps).encode()).hexdigest())")
    for hash_seed in ("0", "12345"):
        out = python_process(["-c", code], env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == expected


def test_generate_prefix_is_stable():
    """A larger n extends a smaller one, so sizes can be changed without reshuffling."""
    assert generate(1000, seed=3)[:200] == generate(200, seed=3)


# --------------------------------------------------------------------------- correctness
def test_every_step_is_true_and_boxed_answer_matches(problems):
    for p in problems:
        lines = p.solution.split("\n")
        *step_lines, final = lines
        assert step_lines, p
        boxed = BOXED.findall(p.solution)
        assert boxed == [p.answer], p
        assert BOXED.search(final), p
        assert p.answer.isdigit(), p
        results = []
        for line in step_lines:
            eqs = EQUATION.findall(line)
            assert len(eqs) == 1, f"step without exactly one equation: {line!r}"
            a, op, b, c = eqs[0]
            a, b, c = int(a), int(b), int(c)
            assert min(a, b, c) >= 0, f"negative quantity in {line!r}"
            assert EVAL[op](a, b) == c, f"wrong arithmetic in {line!r} ({p.template})"
            results.append(c)
        assert results[-1] == int(p.answer), p


def test_every_operand_comes_from_the_question_or_an_earlier_step(problems):
    """The chain of steps really solves *this* question, not some other one."""
    for p in problems:
        known = {int(x) for x in re.findall(r"\d+", p.question)} | {100}  # 100: percent
        for a, _, b, c in EQUATION.findall(p.solution):
            assert int(a) in known and int(b) in known, (p.question, p.solution)
            known.add(int(c))


def test_numbers_stay_in_a_grade_school_range(problems):
    for p in problems:
        assert all(int(x) <= 1000 for x in re.findall(r"\d+", p.question)), p.question
        assert int(p.answer) <= 2000, p


def test_answer_line_matches_language(problems):
    for p in problems:
        final = p.solution.split("\n")[-1]
        expected = ("The answer is \\boxed{%s}." if p.lang == "en" else "答案是 \\boxed{%s}。")
        assert final == expected % p.answer, p


# --------------------------------------------------------------------------- coverage
def test_languages_mixed_evenly_and_chinese_is_chinese(problems):
    counts = Counter(p.lang for p in problems)
    assert counts == {"en": N_CHECKED // 2, "zh": N_CHECKED // 2}
    for p in problems:
        if p.lang == "zh":
            assert CJK.search(p.question) and CJK.search(p.solution), p
        else:
            assert p.question.isascii() and not CJK.search(p.solution), p


def test_all_templates_used_in_both_languages(problems):
    assert len(sm.TEMPLATE_IDS) >= 8
    assert len(set(sm.TEMPLATE_IDS)) == len(sm.TEMPLATE_IDS)
    used = {(p.template, p.lang) for p in problems}
    assert used == set(itertools.product(sm.TEMPLATE_IDS, ("en", "zh")))


def test_questions_are_varied(problems):
    assert len({p.question for p in problems}) > 0.95 * len(problems)
    # names and items vary within a template, not just numbers
    shop = [p.question for p in problems if p.template == "shop_add_sub" and p.lang == "en"]
    assert len({q.split()[0] for q in shop}) >= 5


@pytest.mark.parametrize("languages", [("en",), ("zh",), ("zh", "en")])
def test_language_subset_respected(languages):
    ps = generate(100, seed=0, languages=languages)
    assert {p.lang for p in ps} == set(languages)


# --------------------------------------------------------------------------- splits
def test_splits_have_requested_sizes_are_deduped_and_disjoint():
    train, test = make_splits(3000, 200, seed=5)
    assert len(train) == 3000 and len(test) == 200
    train_q, test_q = [p.question for p in train], [p.question for p in test]
    assert len(set(train_q)) == len(train_q)
    assert len(set(test_q)) == len(test_q)
    assert not set(train_q) & set(test_q)
    assert abs(sum(p.lang == "en" for p in train) - 1500) < 100


def test_splits_are_deterministic_and_test_fixed_by_seed():
    assert make_splits(400, 50, seed=11) == make_splits(400, 50, seed=11)
    test_small_pool = make_splits(100, 50, seed=11)[1]
    test_large_pool = make_splits(400, 50, seed=11)[1]
    assert test_small_pool == test_large_pool
    assert make_splits(100, 50, seed=12)[1] != test_small_pool


def test_test_split_is_not_a_replay_of_train_stream():
    train, test = make_splits(50, 50, seed=2)
    assert [p.question for p in generate(50, seed=2)][:10] != [p.question for p in test][:10]
    assert train[0].question == generate(1, seed=2)[0].question


@pytest.mark.parametrize("pool_size,test_size,bad", [(0, 10, "pool_size"), (10, -3, "test_size")])
def test_bad_split_sizes_raise(pool_size, test_size, bad):
    with pytest.raises(ValueError, match=rf"{bad}.*{min(pool_size, test_size)}"):
        make_splits(pool_size, test_size, seed=0)


def test_not_enough_unique_problems_raises(monkeypatch):
    one = generate(1, seed=0)[0]
    monkeypatch.setattr(sm, "_stream", lambda rng, languages, difficulty="standard": itertools.repeat(one))
    with pytest.raises(ValueError, match="unique"):
        make_splits(5, 1, seed=0)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("languages,bad", [(("en", "fr"), "fr"), (("de",), "de"), ((), "()"),
                                           ("en", "'en'")])
def test_bad_languages_raise_naming_value_and_allowed(languages, bad):
    for call in (lambda: generate(3, 0, languages), lambda: make_splits(3, 3, 0, languages)):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert bad in msg and "'en'" in msg and "'zh'" in msg and "\n" not in msg


def test_negative_n_raises_and_zero_is_empty():
    with pytest.raises(ValueError, match="-1"):
        generate(-1, seed=0)
    assert generate(0, seed=0) == []


# --------------------------------------------------------------------------- misc
def test_to_messages_shape(problems):
    p = problems[1]
    msgs = to_messages(p)
    assert msgs == [{"role": "user", "content": p.question},
                    {"role": "assistant", "content": p.solution}]


def test_problem_is_frozen(problems):
    with pytest.raises(AttributeError):
        problems[0].answer = "0"  # type: ignore[misc]


def test_the_easy_difficulty_is_one_small_step_and_its_own_stream():
    train, test = make_splits(300, 20, seed=0, difficulty="easy")
    standard, _ = make_splits(300, 20, seed=0)
    assert not {p.question for p in train} & {p.question for p in standard}
    assert not {p.question for p in train} & {p.question for p in test}
    for p in train + test:
        steps = [line for line in p.solution.splitlines() if "=" in line]
        assert len(steps) == 1 and p.template.startswith("easy_") and int(p.answer) <= 144
        a, op, b = re.search(r"(\d+) ([-+×]) (\d+) = ", steps[0]).groups()
        assert int(p.answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]
    assert {p.template for p in train} == {"easy_add", "easy_sub", "easy_mul"} and {p.lang for p in train} == {"en", "zh"}
    with pytest.raises(ValueError, match="unknown difficulty 'hard'; allowed: standard, easy"):
        make_splits(10, 2, seed=0, difficulty="hard")
