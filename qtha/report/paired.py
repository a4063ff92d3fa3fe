"""Paired comparisons of two sides of run records by seed (SPEC §5): the estimate every verdict, scoreboard row
and knob-sweep row is read from.

A side is an experiment narrowed by ``where`` values of the flat config; the two sides pair by seed (same data
order), a seed whose two runs trained at different precisions is left unpaired, and the per-seed differences
(signed so that a positive difference favours the method side) give a mean, a 95 % t-interval, the effect
relative to the comparator's mean (or in points) and a two-sided paired t-test p-value. The relative interval
divides the difference's interval by the comparator's mean (its own seed spread is not propagated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev
from typing import Any, Sequence

from scipy import stats

from qtha.report.columns import column
from qtha.report.records import effective
from qtha.results import RunRecord

MIN_PAIRS = 3  # fewer pairs is never a verdict nor a win, loss or tie
Records = Sequence[tuple[Path, RunRecord]]


@dataclass(frozen=True)
class Estimate:
    """One paired comparison's numbers."""

    name: str
    metric: str
    n: int
    seeds: tuple[int, ...]
    method_mean: float = math.nan
    comparator_mean: float = math.nan
    effect: float = math.nan  # in the claim's unit, positive = the method side better
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    lr: str = ""  # the learning rates the two sides trained at (a shared rate is visible here)
    mismatched: tuple[int, ...] = ()  # seeds both sides ran, left unpaired: they trained at different precisions


def side_values(records: Records, side: dict[str, Any], metric: str) -> dict[int, tuple[float, float, str]]:
    """seed → (metric, lr, precision) of the finished records of ``side``'s experiment that match its ``where`` values.

    Two matching records of one seed (say one run on a GPU and one on the CPU) make the declaration ambiguous:
    a ValueError names them, rather than one silently standing in for the other."""
    out: dict[int, tuple[float, float, str]] = {}
    seen: dict[int, Path] = {}
    for path, rec in records:
        if rec.experiment != side["experiment"] or rec.status != "ok":
            continue
        flat = effective(rec)
        if all(flat.get(k) == v for k, v in (side.get("where") or {}).items()):
            seed = int(rec.config["seed"])
            if seed in seen:
                raise ValueError(f"claims: {seen[seed].name} and {path.name} both match {side['experiment']} "
                                 f"{side.get('where')} at seed {seed}; allowed: pin the key that tells them apart "
                                 "in claims.yaml")
            seen[seed] = path
            value = rec.metrics.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[seed] = (float(value), float(rec.config["trainer"]["lr"]), str(flat.get("trainer.precision")))
    return out


def shortfall(records: Records, side: dict[str, Any]) -> str:
    """Why ``side`` has few records: its experiment's finished records, narrowed by each ``where`` value in turn,
    with the values found where the narrowing runs dry (old records are then seen to predate a protocol)."""
    pool = [effective(r) for _, r in records if r.experiment == side["experiment"] and r.status == "ok"]
    if not pool:
        return f"no finished records of `{side['experiment']}`"
    total = len(pool)
    for key, value in (side.get("where") or {}).items():
        narrowed = [flat for flat in pool if flat.get(key) == value]
        if not narrowed:
            found = ", ".join(sorted({str(flat.get(key)) for flat in pool}))
            return (f"`{side['experiment']}` has {total} finished records; none of the {len(pool)} left has "
                    f"{key}={value} (found: {found})")
        pool = narrowed
    seeds = sorted({flat.get("seed") for flat in pool})
    return f"`{side['experiment']}` has {len(pool)} matching finished records (seeds {seeds})"


def paired(records: Records, comparison: dict[str, Any], metric: str, unit: str) -> Estimate:
    """The comparison's estimate over the seeds both sides finished at one precision (a seed whose two runs
    trained at different precisions, ``auto`` having resolved differently on two machines, is not a pair)."""
    metric = comparison.get("metric", metric)
    method, comparator = (side_values(records, comparison[k], metric) for k in ("method", "comparator"))
    both = sorted(method.keys() & comparator.keys())
    seeds = tuple(s for s in both if method[s][2] == comparator[s][2])
    mismatched = tuple(s for s in both if s not in seeds)
    lrs = sorted({f"{method[s][1]:g}" for s in seeds}), sorted({f"{comparator[s][1]:g}" for s in seeds})
    base = Estimate(comparison["name"], metric, len(seeds), seeds,
                    lr=f"{'/'.join(lrs[0])} vs {'/'.join(lrs[1])}" if seeds else "", mismatched=mismatched)
    if not seeds:
        return base
    return estimate(base.name, metric, seeds, [method[s][0] for s in seeds], [comparator[s][0] for s in seeds], unit,
                    base.lr, mismatched)


def estimate(name: str, metric: str, seeds: Sequence[int], m: Sequence[float], c: Sequence[float], unit: str,
             lr: str = "", mismatched: tuple[int, ...] = ()) -> Estimate:
    """The paired estimate from the method side's and the comparator's values, seed by seed (``m[i]`` and ``c[i]``
    at ``seeds[i]``): the mean difference signed so that a positive one favours the method side, its 95 %
    t-interval and p-value, relative to the comparator's mean when ``unit`` is ``%``."""
    seeds = tuple(seeds)
    better_high = column(metric).higher_is_better
    diffs = [(a - b) if better_high else (b - a) for a, b in zip(m, c)]
    scale = 100 / fmean(c) if unit == "%" else 1.0
    mean = fmean(diffs)
    if len(diffs) < 2:
        return Estimate(name, metric, 1, seeds, fmean(m), fmean(c), mean * scale, lr=lr, mismatched=mismatched)
    half = stats.t.ppf(0.975, len(diffs) - 1) * stdev(diffs) / math.sqrt(len(diffs))
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue) if stdev(diffs) > 0 else (0.0 if mean else 1.0)
    return Estimate(name, metric, len(diffs), seeds, fmean(m), fmean(c), mean * scale, (mean - half) * scale,
                    (mean + half) * scale, p, lr, mismatched)


def change(est: Estimate) -> str:
    """A lower-is-better metric's relative change from the comparator to the method side, with its 95 % CI
    (``-11.5% (-78.8 … +55.8)``; the estimate's effect is positive when the method side's value is the lower)."""
    if est.n < 2 or math.isnan(est.low):
        return "—"
    loss_change = [0.0 - v for v in (est.effect, est.high, est.low)]  # 0.0 - 0.0 is +0.0, not -0.0
    return "{:+.1f}% ({:+.1f} … {:+.1f})".format(*loss_change)


def reading(est: Estimate) -> str:
    """**lower** / **higher** when the CI of :func:`change` excludes 0, below three pairs ``n < 3``."""
    if est.n < MIN_PAIRS or math.isnan(est.low):
        return f"n < {MIN_PAIRS}"
    return "**lower**" if est.low > 0 else "**higher**" if est.high < 0 else "no difference shown"


def outcome(est: Estimate) -> str:
    """``wins`` / ``loses`` when the 95 % CI excludes 0 in the method side's favour / against it, ``ties`` when it does not,
    ``—`` below three pairs: what a comparison says, whatever effect size the paper claimed."""
    if est.n < MIN_PAIRS or math.isnan(est.low):
        return "—"
    return "wins" if est.low > 0 else "loses" if est.high < 0 else "ties"
