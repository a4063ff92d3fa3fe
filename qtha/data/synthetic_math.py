"""Synthetic grade-school maths word problems in English and Chinese.

The embedded default dataset: it needs no hub, yet has the shape of the paper's maths data
(GSM8K / R1-Distill-SFT style): a word problem, a step-by-step solution in which every step
is an equation ``a op b = c``, and a final ``\\boxed{answer}``. Everything is drawn from a
local ``random.Random`` so a seed fixes the data in every process.

Templates are data: each :class:`_Template` pairs a ``draw`` function (numbers, vocabulary
and the arithmetic steps, language-free) with the English and Chinese wording.

Two difficulties: ``standard`` (one to three steps, numbers up to a few hundred: the embedded
model stays near 0 % accuracy) and ``easy`` (one step, two-digit numbers), the setting on which a
comparison of maths accuracy is possible at CPU scale.
"""
from __future__ import annotations

import itertools
import operator
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

LANGUAGES: tuple[str, ...] = ("en", "zh")
DIFFICULTIES: tuple[str, ...] = ("standard", "easy")
# Domain-separated seed for the test stream, so test problems never replay the train stream.
_TEST_STREAM = "qtha.synthetic_math/test"
# A split gives up after this many draws per requested problem (plus slack): enough for
# any realistic size, finite when the vocabulary cannot supply that many unique questions.
_DRAWS_PER_PROBLEM = 20
_DRAW_SLACK = 1000


@dataclass(frozen=True)
class Problem:
    """One word problem with its worked solution (ends in ``\\boxed{answer}``)."""

    question: str
    solution: str
    answer: str
    lang: str
    template: str


# --------------------------------------------------------------------------- vocabulary
class _Who(NamedTuple):
    """A person as one language writes them (``He`` starts a sentence)."""

    name: str
    he: str
    He: str
    his: str


class _Noun(NamedTuple):
    """A countable noun; ``mw`` is the Chinese measure word (empty in English)."""

    one: str
    many: str
    mw: str


class _Maker(NamedTuple):
    """Something that works at a steady rate, for unit-rate problems."""

    name: str
    mw: str
    does: str
    do: str
    unit: str


Bilingual = Mapping[str, NamedTuple]


def _who(en: str, zh: str, female: bool) -> Bilingual:
    """Keep pronouns in step with the name in both languages."""
    he, his = ("she", "her") if female else ("he", "his")
    zh_he = "她" if female else "他"
    return {"en": _Who(en, he, he.capitalize(), his), "zh": _Who(zh, zh_he, zh_he, zh_he + "的")}


def _noun(en_one: str, en_many: str, zh: str, mw: str) -> Bilingual:
    """Chinese nouns do not inflect; they take a measure word instead."""
    return {"en": _Noun(en_one, en_many, ""), "zh": _Noun(zh, zh, mw)}


def _maker(en: tuple[str, str, str, str], zh: tuple[str, str, str, str]) -> Bilingual:
    """English needs two verb forms and no measure word; Chinese the reverse."""
    en_name, does, do, unit = en
    zh_name, mw, verb, zh_unit = zh
    return {"en": _Maker(en_name, "", does, do, unit), "zh": _Maker(zh_name, mw, verb, verb, zh_unit)}


PEOPLE = (
    _who("Tom", "小明", False), _who("Lily", "小红", True), _who("Sam", "李华", False),
    _who("Emma", "王芳", True), _who("Jack", "张伟", False), _who("Mia", "小丽", True),
    _who("Leo", "刘洋", False), _who("Anna", "陈静", True), _who("Ben", "赵磊", False),
    _who("Grace", "孙悦", True),
)
ITEMS = (
    _noun("apple", "apples", "苹果", "个"), _noun("pencil", "pencils", "铅笔", "支"),
    _noun("book", "books", "书", "本"), _noun("sticker", "stickers", "贴纸", "张"),
    _noun("marble", "marbles", "弹珠", "颗"), _noun("orange", "oranges", "橙子", "个"),
    _noun("card", "cards", "卡片", "张"), _noun("balloon", "balloons", "气球", "个"),
    _noun("candy", "candies", "糖果", "颗"), _noun("shell", "shells", "贝壳", "个"),
)
GOODS = (
    _noun("notebook", "notebooks", "笔记本", "本"), _noun("pen", "pens", "钢笔", "支"),
    _noun("cup", "cups", "杯子", "个"), _noun("toy car", "toy cars", "玩具车", "辆"),
    _noun("T-shirt", "T-shirts", "T恤", "件"), _noun("kite", "kites", "风筝", "只"),
    _noun("bottle of juice", "bottles of juice", "果汁", "瓶"), _noun("ruler", "rulers", "尺子", "把"),
)
BIG_GOODS = (
    _noun("jacket", "jackets", "夹克", "件"), _noun("backpack", "backpacks", "书包", "个"),
    _noun("pair of shoes", "pairs of shoes", "鞋", "双"), _noun("bicycle", "bicycles", "自行车", "辆"),
    _noun("desk lamp", "desk lamps", "台灯", "盏"), _noun("watch", "watches", "手表", "块"),
)
FOODS = (
    _noun("cookie", "cookies", "饼干", "块"), _noun("muffin", "muffins", "松饼", "个"),
    _noun("bun", "buns", "包子", "个"), _noun("tart", "tarts", "蛋挞", "个"),
)
CARRIERS = (
    _noun("bus", "buses", "公交车", "辆"), _noun("train", "trains", "火车", "列"),
    _noun("ferry", "ferries", "渡轮", "艘"), _noun("tram", "trams", "有轨电车", "辆"),
)
VEHICLES = (
    _noun("car", "cars", "汽车", "辆"), _noun("truck", "trucks", "卡车", "辆"),
    _noun("train", "trains", "火车", "列"), _noun("motorbike", "motorbikes", "摩托车", "辆"),
)
MAKERS = (
    _maker(("printer", "prints", "print", "pages"), ("打印机", "台", "打印", "页")),
    _maker(("robot", "packs", "pack", "boxes"), ("机器人", "个", "包装", "个箱子")),
    _maker(("bottling machine", "fills", "fill", "bottles"), ("灌装机", "台", "灌装", "瓶")),
    _maker(("toy machine", "makes", "make", "toys"), ("玩具机", "台", "生产", "个玩具")),
)


# --------------------------------------------------------------------------- arithmetic
_OPS: Mapping[str, Callable[[int, int], int]] = {
    "+": operator.add, "-": operator.sub, "×": operator.mul, "÷": operator.floordiv,
}


class _Step(NamedTuple):
    """One solution step ``a op b = c``."""

    a: int
    op: str
    b: int
    c: int


def _step(a: int, op: str, b: int) -> _Step:
    """Compute the result, refusing steps a child could not write down (negative, inexact)."""
    c = _OPS[op](a, b)
    if c < 0 or (op == "÷" and a % b):
        raise ArithmeticError(f"template produced an invalid step {a} {op} {b}")
    return _Step(a, op, b, c)


Fields = dict[str, object]
Draw = tuple[Fields, list[_Step]]


# --------------------------------------------------------------------------- draws
def _draw_shop_add_sub(rng: random.Random) -> Draw:
    a, b = rng.randint(5, 40), rng.randint(2, 30)
    c = rng.randint(1, a + b - 1)
    s1 = _step(a, "+", b)
    return {"who": rng.choice(PEOPLE), "item": rng.choice(ITEMS), "a": a, "b": b, "c": c}, [
        s1, _step(s1.c, "-", c)]


def _draw_bus_passengers(rng: random.Random) -> Draw:
    a, b, d = rng.randint(10, 40), rng.randint(2, 20), rng.randint(1, 20)
    c = rng.randint(1, a + b - 1)
    s1 = _step(a, "+", b)
    s2 = _step(s1.c, "-", c)
    return {"v": rng.choice(CARRIERS), "a": a, "b": b, "c": c, "d": d}, [s1, s2, _step(s2.c, "+", d)]


def _draw_price_times_qty(rng: random.Random) -> Draw:
    p, q = rng.randint(2, 25), rng.randint(2, 12)
    return {"who": rng.choice(PEOPLE), "item": rng.choice(GOODS), "p": p, "q": q}, [_step(p, "×", q)]


def _draw_share_equally(rng: random.Random) -> Draw:
    k, m = rng.randint(2, 9), rng.randint(2, 15)
    fields = {"who": rng.choice(PEOPLE), "item": rng.choice(ITEMS), "t": k * m, "k": k}
    return fields, [_step(k * m, "÷", k)]


def _draw_two_item_cost(rng: random.Random) -> Draw:
    item, item2 = rng.sample(GOODS, 2)
    p1, q1, p2, q2 = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 20), rng.randint(2, 9)
    s1, s2 = _step(p1, "×", q1), _step(p2, "×", q2)
    fields = {"who": rng.choice(PEOPLE), "item": item, "item2": item2,
              "p1": p1, "q1": q1, "p2": p2, "q2": q2}
    return fields, [s1, s2, _step(s1.c, "+", s2.c)]


def _draw_share_leftover(rng: random.Random) -> Draw:
    k, share, e = rng.randint(2, 8), rng.randint(2, 10), rng.randint(1, 10)
    total = k * share + e
    a = rng.randint(1, total - 1)
    s1 = _step(a, "+", total - a)
    s2 = _step(s1.c, "-", e)
    fields = {"who": rng.choice(PEOPLE), "item": rng.choice(ITEMS),
              "a": a, "b": total - a, "e": e, "k": k}
    return fields, [s1, s2, _step(s2.c, "÷", k)]


def _draw_bakery(rng: random.Random) -> Draw:
    a, b, c = rng.randint(2, 8), rng.randint(6, 24), rng.randint(5, 40)
    s1 = _step(a, "×", b)
    s2 = _step(s1.c, "+", c)
    d = rng.randint(1, s2.c - 1)
    return {"food": rng.choice(FOODS), "a": a, "b": b, "c": c, "d": d}, [s1, s2, _step(s2.c, "-", d)]


def _draw_discount(rng: random.Random) -> Draw:
    price, pct = 20 * rng.randint(2, 15), rng.choice((10, 15, 20, 25, 30, 40, 50))
    s1 = _step(price, "×", pct)
    s2 = _step(s1.c, "÷", 100)
    fields = {"who": rng.choice(PEOPLE), "good": rng.choice(BIG_GOODS), "P": price, "d": pct}
    return fields, [s1, s2, _step(price, "-", s2.c)]


def _draw_speed_time(rng: random.Random) -> Draw:
    v, t1, t2 = 5 * rng.randint(6, 24), rng.randint(2, 5), rng.randint(2, 5)
    s1 = _step(t1, "+", t2)
    fields = {"who": rng.choice(PEOPLE), "veh": rng.choice(VEHICLES), "v": v, "t1": t1, "t2": t2}
    return fields, [s1, _step(v, "×", s1.c)]


def _draw_unit_rate(rng: random.Random) -> Draw:
    m, rate = rng.randint(2, 6), rng.randint(3, 20)
    n = rng.randint(m + 1, 15)
    s1 = _step(rate * m, "÷", m)
    return {"mk": rng.choice(MAKERS), "p": rate * m, "m": m, "n": n}, [s1, _step(s1.c, "×", n)]


def _draw_money_change(rng: random.Random) -> Draw:
    p, q = rng.randint(2, 12), rng.randint(2, 8)
    s1 = _step(p, "×", q)
    bill = rng.choice([b for b in (20, 50, 100) if b >= s1.c])
    fields = {"who": rng.choice(PEOPLE), "item": rng.choice(GOODS), "p": p, "q": q, "B": bill}
    return fields, [s1, _step(bill, "-", s1.c)]


def _draw_compare_more(rng: random.Random) -> Draw:
    who, who2 = rng.sample(PEOPLE, 2)
    a, k = rng.randint(3, 30), rng.randint(2, 5)
    s1 = _step(a, "×", k)
    return {"who": who, "who2": who2, "item": rng.choice(ITEMS), "a": a, "k": k}, [
        s1, _step(s1.c, "-", a)]


# One step with two-digit numbers: single-digit operands left LoRA on the embedded model at 81 % after the
# math_easy protocol (too little room above it to compare adapters); REPRODUCTION.md has the measured rate.
def _draw_easy_add(rng: random.Random) -> Draw:
    return {"who": rng.choice(PEOPLE), "item": rng.choice(ITEMS), "a": rng.randint(11, 49), "b": rng.randint(11, 49)}, []


def _draw_easy_sub(rng: random.Random) -> Draw:
    a = rng.randint(21, 60)
    return {"who": rng.choice(PEOPLE), "item": rng.choice(ITEMS), "a": a, "b": rng.randint(2, a - 1)}, []


def _draw_easy_mul(rng: random.Random) -> Draw:
    return {"who": rng.choice(PEOPLE), "item": rng.choice(ITEMS), "a": rng.randint(3, 12), "b": rng.randint(3, 12)}, []


def _one_step(draw: Callable[[random.Random], Draw], op: str) -> Callable[[random.Random], Draw]:
    """A one-step draw: the fields ``a`` and ``b``, and the single step ``a op b``."""
    def drawn(rng: random.Random) -> Draw:
        fields, _ = draw(rng)
        return fields, [_step(int(fields["a"]), op, int(fields["b"]))]  # type: ignore[call-overload]
    return drawn


# --------------------------------------------------------------------------- wording
class _Text(NamedTuple):
    """Wording in one language: alternative question phrasings, one explanation per step."""

    questions: tuple[str, ...]
    steps: tuple[str, ...]


@dataclass(frozen=True)
class _Template:
    """One problem type: language-free ``draw`` plus its wording per language."""

    id: str
    draw: Callable[[random.Random], Draw]
    text: Mapping[str, _Text]


_TEMPLATES: tuple[_Template, ...] = (
    _Template("shop_add_sub", _draw_shop_add_sub, {
        "en": _Text((
            "{who.name} has {a} {item.many}. {who.He} buys {b} more and gives {c} to a friend. "
            "How many {item.many} does {who.he} have now?",
            "{who.name} had {a} {item.many}, bought another {b}, then gave {c} away to friends. "
            "How many {item.many} does {who.name} have left?",
        ), ("Add the {item.many} bought", "Take away the {item.many} given away")),
        "zh": _Text((
            "{who.name}有 {a} {item.mw}{item.one}，又买了 {b} {item.mw}，送给朋友 {c} {item.mw}。"
            "{who.he}现在有多少{item.mw}{item.one}？",
            "{who.name}原来有 {a} {item.mw}{item.one}，后来买了 {b} {item.mw}，又送给同学 {c} {item.mw}。"
            "{who.name}还剩多少{item.mw}{item.one}？",
        ), ("先加上买来的{item.one}", "再减去送出的{item.one}")),
    }),
    _Template("bus_passengers", _draw_bus_passengers, {
        "en": _Text((
            "A {v.one} starts its route with {a} passengers. At the first stop {b} people get on "
            "and {c} get off. At the second stop {d} more get on. How many passengers are on the "
            "{v.one} now?",
        ), ("Add the people who got on at the first stop", "Subtract those who got off",
            "Add the people who got on at the second stop")),
        "zh": _Text((
            "一{v.mw}{v.one}出发时有 {a} 名乘客。第一站上来 {b} 人，下去 {c} 人；"
            "第二站又上来 {d} 人。现在{v.one}上有多少名乘客？",
        ), ("加上第一站上来的人", "减去第一站下去的人", "加上第二站上来的人")),
    }),
    _Template("price_times_qty", _draw_price_times_qty, {
        "en": _Text((
            "{who.name} buys {q} {item.many} at ${p} each. How much does {who.he} pay in dollars?",
            "One {item.one} costs ${p}. How many dollars do {q} {item.many} cost?",
        ), ("Multiply the price by the number of {item.many}",)),
        "zh": _Text((
            "{who.name}买了 {q} {item.mw}{item.one}，每{item.mw} {p} 元。{who.he}一共要付多少元？",
            "一{item.mw}{item.one} {p} 元，买 {q} {item.mw}需要多少元？",
        ), ("单价乘以数量",)),
    }),
    _Template("share_equally", _draw_share_equally, {
        "en": _Text((
            "{who.name} has {t} {item.many} and shares them equally among {k} friends. "
            "How many {item.many} does each friend get?",
            "{who.name} puts {t} {item.many} equally into {k} bags. How many {item.many} are in "
            "each bag?",
        ), ("Divide the {item.many} equally",)),
        "zh": _Text((
            "{who.name}有 {t} {item.mw}{item.one}，平均分给 {k} 个朋友。每个朋友分到多少{item.mw}？",
            "{who.name}把 {t} {item.mw}{item.one}平均装进 {k} 个袋子，每个袋子装多少{item.mw}？",
        ), ("把{item.one}平均分",)),
    }),
    _Template("two_item_cost", _draw_two_item_cost, {
        "en": _Text((
            "{who.name} buys {q1} {item.many} at ${p1} each and {q2} {item2.many} at ${p2} each. "
            "How many dollars does {who.he} spend altogether?",
        ), ("Cost of the {item.many}", "Cost of the {item2.many}", "Add the two costs")),
        "zh": _Text((
            "{who.name}买了 {q1} {item.mw}{item.one}，每{item.mw} {p1} 元；又买了 {q2} "
            "{item2.mw}{item2.one}，每{item2.mw} {p2} 元。{who.he}一共花了多少元？",
        ), ("{item.one}的钱数", "{item2.one}的钱数", "两项相加")),
    }),
    _Template("share_leftover", _draw_share_leftover, {
        "en": _Text((
            "{who.name} has {a} {item.many} and gets {b} more from {who.his} sister. {who.He} keeps "
            "{e} and shares the rest equally among {k} friends. How many {item.many} does each "
            "friend get?",
        ), ("Total {item.many}", "Take away the ones {who.he} keeps",
            "Share the rest among {k} friends")),
        "zh": _Text((
            "{who.name}有 {a} {item.mw}{item.one}，姐姐又给了{who.he} {b} {item.mw}。{who.he}自己留下 "
            "{e} {item.mw}，把剩下的平均分给 {k} 个朋友。每个朋友分到多少{item.mw}？",
        ), ("先求一共有多少{item.mw}", "减去自己留下的", "剩下的平均分给 {k} 个朋友")),
    }),
    _Template("bakery_three_step", _draw_bakery, {
        "en": _Text((
            "A bakery bakes {a} trays of {b} {food.many} in the morning and {c} more {food.many} in "
            "the afternoon. It sells {d} {food.many}. How many {food.many} are left?",
        ), ("Morning {food.many}", "Add the afternoon batch", "Subtract the ones sold")),
        "zh": _Text((
            "面包店上午烤了 {a} 盘{food.one}，每盘 {b} {food.mw}，下午又烤了 {c} {food.mw}。"
            "卖出 {d} {food.mw}后，还剩多少{food.mw}{food.one}？",
        ), ("上午烤的数量", "加上下午烤的", "减去卖出的")),
    }),
    _Template("discount_percent", _draw_discount, {
        "en": _Text((
            "A {good.one} costs ${P}. It is on sale for {d}% off. What is the sale price in dollars?",
            "{who.name} buys a {good.one} priced at ${P} with a {d}% discount. How many dollars "
            "does {who.he} pay?",
        ), ("Multiply the price by the percentage", "Divide by 100 to get the discount",
            "Subtract the discount from the price")),
        "zh": _Text((
            "一{good.mw}{good.one}原价 {P} 元，现在降价 {d}% 出售。现价是多少元？",
            "{who.name}买一{good.mw}{good.one}，原价 {P} 元，结账时便宜了 {d}%。{who.he}实际付了多少元？",
        ), ("原价乘以百分数", "再除以 100 得到便宜的钱数", "原价减去便宜的钱数")),
    }),
    _Template("speed_time", _draw_speed_time, {
        "en": _Text((
            "A {veh.one} travels at {v} km per hour for {t1} hours in the morning and {t2} hours in "
            "the afternoon. How many kilometres does it travel in total?",
            "{who.name} drives at a steady {v} km/h for {t1} hours, takes a break, then drives "
            "{t2} more hours at the same speed. How many kilometres does {who.he} drive?",
        ), ("Total time in hours", "Distance is speed times time")),
        "zh": _Text((
            "一{veh.mw}{veh.one}每小时行驶 {v} 公里，上午行驶了 {t1} 小时，下午行驶了 {t2} 小时。"
            "它一共行驶了多少公里？",
            "{who.name}开车每小时行驶 {v} 公里，先开了 {t1} 小时，休息后又以同样的速度开了 {t2} 小时。"
            "{who.he}一共开了多少公里？",
        ), ("一共行驶的时间", "路程等于速度乘以时间")),
    }),
    _Template("unit_rate", _draw_unit_rate, {
        "en": _Text((
            "A {mk.name} {mk.does} {p} {mk.unit} in {m} minutes. At the same rate, how many "
            "{mk.unit} does it {mk.do} in {n} minutes?",
        ), ("Work out the {mk.unit} per minute", "Multiply by {n} minutes")),
        "zh": _Text((
            "一{mk.mw}{mk.name} {m} 分钟{mk.does} {p} {mk.unit}。照这样的速度，{n} 分钟能{mk.do}"
            "多少{mk.unit}？",
        ), ("每分钟的数量", "乘以 {n} 分钟")),
    }),
    _Template("money_change", _draw_money_change, {
        "en": _Text((
            "{who.name} buys {q} {item.many} that cost ${p} each and pays with a ${B} bill. "
            "How many dollars of change does {who.he} get?",
        ), ("Total cost", "Change from ${B}")),
        "zh": _Text((
            "{who.name}买了 {q} {item.mw}{item.one}，每{item.mw} {p} 元，付了一张 {B} 元的纸币。"
            "应该找回多少元？",
        ), ("先算一共要付的钱", "用 {B} 元减去要付的钱")),
    }),
    _Template("compare_more", _draw_compare_more, {
        "en": _Text((
            "{who.name} has {a} {item.many}. {who2.name} has {k} times as many. How many more "
            "{item.many} does {who2.name} have than {who.name}?",
            "{who.name} collected {a} {item.many}, and {who2.name} collected {k} times as many. "
            "How many more {item.many} did {who2.name} collect?",
        ), ("{who2.name}'s {item.many}", "The difference")),
        "zh": _Text((
            "{who.name}有 {a} {item.mw}{item.one}，{who2.name}的{item.one}是{who.name}的 {k} 倍。"
            "{who2.name}比{who.name}多多少{item.mw}{item.one}？",
            "{who.name}收集了 {a} {item.mw}{item.one}，{who2.name}收集的是{who.name}的 {k} 倍。"
            "{who2.name}比{who.name}多收集了多少{item.mw}？",
        ), ("先求{who2.name}的数量", "再求相差多少")),
    }),
)
_EASY_TEMPLATES: tuple[_Template, ...] = (
    _Template("easy_add", _one_step(_draw_easy_add, "+"), {
        "en": _Text(("{who.name} has {a} {item.many} and gets {b} more. How many {item.many} does {who.he} have now?",),
                    ("Add the {item.many} {who.he} got",)),
        "zh": _Text(("{who.name}有 {a} {item.mw}{item.one}，又得到 {b} {item.mw}。{who.he}现在有多少{item.mw}{item.one}？",),
                    ("加上得到的{item.one}",)),
    }),
    _Template("easy_sub", _one_step(_draw_easy_sub, "-"), {
        "en": _Text(("{who.name} has {a} {item.many} and gives {b} to a friend. How many {item.many} are left?",),
                    ("Take away the {item.many} given away",)),
        "zh": _Text(("{who.name}有 {a} {item.mw}{item.one}，送给朋友 {b} {item.mw}。还剩多少{item.mw}{item.one}？",),
                    ("减去送出的{item.one}",)),
    }),
    _Template("easy_mul", _one_step(_draw_easy_mul, "×"), {
        "en": _Text(("{who.name} has {a} bags with {b} {item.many} in each bag. How many {item.many} are there?",),
                    ("Multiply the bags by the {item.many} in each",)),
        "zh": _Text(("{who.name}有 {a} 袋{item.one}，每袋 {b} {item.mw}。一共有多少{item.mw}{item.one}？",),
                    ("袋数乘以每袋的数量",)),
    }),
)
TEMPLATES: Mapping[str, tuple[_Template, ...]] = {"standard": _TEMPLATES, "easy": _EASY_TEMPLATES}
TEMPLATE_IDS: tuple[str, ...] = tuple(t.id for t in _TEMPLATES)

# How each language punctuates a step line and states the final answer.
_STEP_LINE = {"en": "{why}: {s.a} {s.op} {s.b} = {s.c}.", "zh": "{why}：{s.a} {s.op} {s.b} = {s.c}。"}
_ANSWER_LINE = {"en": "The answer is \\boxed{{{}}}.", "zh": "答案是 \\boxed{{{}}}。"}


# --------------------------------------------------------------------------- generation
def _render(template: _Template, rng: random.Random, lang: str) -> Problem:
    """Draw numbers once, then word them in ``lang``; the steps are shared by both languages."""
    fields, steps = template.draw(rng)
    text = template.text[lang]
    view = {k: v[lang] if isinstance(v, Mapping) else v for k, v in fields.items()}
    lines = [_STEP_LINE[lang].format(why=why.format(**view), s=s)
             for why, s in zip(text.steps, steps, strict=True)]
    answer = str(steps[-1].c)
    lines.append(_ANSWER_LINE[lang].format(answer))
    question = rng.choice(text.questions).format(**view)
    return Problem(question, "\n".join(lines), answer, lang, template.id)


def _stream(rng: random.Random, languages: Sequence[str], difficulty: str = "standard") -> Iterator[Problem]:
    """Endless problems; languages alternate so any prefix is evenly mixed."""
    templates = TEMPLATES[difficulty]
    for lang in itertools.cycle(languages):
        yield _render(rng.choice(templates), rng, lang)


def check_languages(languages: Sequence[str]) -> tuple[str, ...]:
    """Reject a bare string too: ``"en"`` would otherwise iterate as ``"e", "n"``."""
    if isinstance(languages, str) or not languages:
        raise ValueError(f"languages must be a non-empty sequence drawn from {LANGUAGES}, "
                         f"got {languages!r}")
    for lang in languages:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}; allowed: {LANGUAGES}")
    return tuple(dict.fromkeys(languages))


def generate(n: int, seed: int, languages: Sequence[str] = LANGUAGES) -> list[Problem]:
    """``n`` problems from ``seed`` (duplicates possible; :func:`make_splits` dedupes)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    langs = check_languages(languages)
    return list(itertools.islice(_stream(random.Random(seed), langs), n))


def _unique(stream: Iterator[Problem], size: int, taken: set[str], split: str) -> list[Problem]:
    """First ``size`` problems whose question is not in ``taken`` (which this extends)."""
    out: list[Problem] = []
    for p in itertools.islice(stream, _DRAWS_PER_PROBLEM * size + _DRAW_SLACK):
        if p.question not in taken:
            taken.add(p.question)
            out.append(p)
            if len(out) == size:
                return out
    raise ValueError(f"could only generate {len(out)} unique {split} problems of {size} requested")


def make_splits(pool_size: int, test_size: int, seed: int, languages: Sequence[str] = LANGUAGES,
                difficulty: str = "standard") -> tuple[list[Problem], list[Problem]]:
    """A train pool and a test split, each deduped and disjoint by question text.

    The test split comes from its own seed stream, so it is fixed by ``seed`` alone and does not
    shift when ``pool_size`` changes (except for the rare question it shares with the pool).
    """
    for name, size in (("pool_size", pool_size), ("test_size", test_size)):
        if size <= 0:
            raise ValueError(f"{name} must be a positive integer, got {size}")
    langs = check_languages(languages)
    if difficulty not in TEMPLATES:
        raise ValueError(f"unknown difficulty {difficulty!r}; allowed: {', '.join(TEMPLATES)}")
    taken: set[str] = set()
    stream = f"{seed}" if difficulty == "standard" else f"{difficulty}/{seed}"
    train = _unique(_stream(random.Random(seed if difficulty == "standard" else stream), langs, difficulty),
                    pool_size, taken, "train")
    test_rng = random.Random(f"{_TEST_STREAM}/{stream}")
    return train, _unique(_stream(test_rng, langs, difficulty), test_size, taken, "test")


def to_messages(p: Problem) -> list[dict[str, str]]:
    """Chat turns for a chat template: the question from the user, the solution from the model."""
    return [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.solution}]
