"""REPRODUCTION.md's Pareto section: eval loss against trainable parameters over each method's size knob.

One point per method per parameter budget says little about a method that can be made bigger or smaller;
the ``pareto_*`` experiments sweep each one's size knob (LoRA's rank, QTHA's bond dimension and bottleneck,
QuanTA's axes) at its selected learning rate, and this section lists every point with the frontier marked:
the points no other point beats with at most as many parameters. A frontier orders means; whether a method
beats LoRA *at its size* is a paired question, so each other point is also set against the LoRA rank nearest it
in parameters (within ``NEAR``×), seed by seed (:func:`qtha.report.paired.estimate`). The figure is
``figures/pareto_loss_vs_params`` (``qtha.report.figures.pareto``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from qtha.report.columns import PARETO_KNOBS
from qtha.report.figures import ci95
from qtha.report.paired import change, estimate, reading
from qtha.report.records import effective, frame, settings
from qtha.report.tables import markdown, summarise
from qtha.results import RunRecord

PREFIX = "pareto_"
FIGURE = "figures/pareto_loss_vs_params.png"
NEAR = 1.5  # a LoRA rank within this factor of a point's parameter count is "its size"
COMMANDS = tuple(f"python -m qtha.run -m experiment={PREFIX}{m} results_dir=results" for m in ("lora", "qtha", "quanta"))


def frontier(params: Sequence[float], loss: Sequence[float]) -> list[bool]:
    """Per point, whether no other point has at most its parameters and a lower loss, or fewer parameters and
    the same loss (the lower-left staircase of a loss-vs-size plot)."""
    points = list(zip(params, loss))
    return [not any((q <= p and m < l) or (q < p and m <= l) for j, (q, m) in enumerate(points) if j != i)
            for i, (p, l) in enumerate(points)]


def _seeds(ok: Sequence[tuple[Path, RunRecord]]) -> dict[tuple[str, str], dict[int, tuple[float, str]]]:
    """Per point (experiment, setting): seed → (eval loss, precision) of its finished runs."""
    setting = settings(ok)
    out: dict[tuple[str, str], dict[int, tuple[float, str]]] = {}
    for path, rec in ok:
        loss = rec.metrics.get("loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            out.setdefault((rec.experiment, setting[path]), {})[int(rec.config["seed"])] = (
                float(loss), str(effective(rec).get("trainer.precision")))
    return out


def matched(ok: Sequence[tuple[Path, RunRecord]], rows: pd.DataFrame) -> str:
    """Each non-LoRA point against the LoRA point nearest it in trainable parameters (within ``NEAR``×): the
    paired change of eval loss over the seeds both ran at one precision, with its 95 % CI; "" without LoRA points."""
    lora = rows[rows.adapter == "lora"]
    if lora.empty:
        return ""
    seeds = _seeds(ok)
    lines = []
    for r in rows[rows.adapter != "lora"].itertuples():
        gap = (lora.trainable_params_mean / r.trainable_params_mean).map(lambda x: abs(math.log(x)))
        near = lora.loc[gap.idxmin()]
        if gap.min() > math.log(NEAR):
            lines.append([r.label, r.knobs, f"{r.trainable_params_mean:,.0f}", f"none within {NEAR:g}×", "", "0", "",
                          "", "—", ""])
            continue
        mine, theirs = seeds.get((r.experiment, r.setting), {}), seeds.get((near.experiment, near.setting), {})
        both = sorted(s for s in mine.keys() & theirs.keys() if mine[s][1] == theirs[s][1])
        est = estimate(f"{r.label} vs lora", "loss", both, [mine[s][0] for s in both], [theirs[s][0] for s in both],
                       "%") if both else None
        lines.append([r.label, r.knobs, f"{r.trainable_params_mean:,.0f}", near.knobs,
                      f"{near.trainable_params_mean:,.0f}", str(len(both)), ",".join(map(str, both)),
                      f"{est.method_mean:.4f} vs {est.comparator_mean:.4f}" if est else "—",
                      change(est) if est else "—", reading(est) if est else ""])
    return ("\n\nEach other point against the LoRA rank nearest it in trainable parameters (within "
            f"{NEAR:g}×), paired by seed at one precision: **loss vs LoRA** is the change of eval loss from LoRA's "
            "(negative: lower), with its 95% CI; **lower** / **higher** when the CI excludes 0.\n\n"
            + markdown(["method", "size", "trainable params", "LoRA", "LoRA params", "n", "seeds",
                        "eval loss (vs LoRA)", "loss vs LoRA (95% CI)", "reading"], lines))


def section(records: Sequence[tuple[Path, RunRecord]]) -> str:
    """The Pareto table (method, size knobs, parameters, n, eval loss ± 95 % CI half-width, frontier), or
    what to run when no ``pareto_*`` record has finished."""
    ok = [(p, r) for p, r in records if r.status == "ok" and r.experiment.startswith(PREFIX)]
    if not ok:
        return ("Not run yet: " + "; ".join(f"`{c}`" for c in COMMANDS) + ", then `python -m qtha.report`.\n")
    setting = settings(ok)
    size = {(rec.experiment, setting[path]): " ".join(f"{k}={rec.config['adapter'].get(k)}"
                                                       for k in PARETO_KNOBS.get(rec.config["adapter"]["name"], ()))
            for path, rec in ok}
    rows = summarise(frame(ok))
    rows = rows[rows.eval_tag == ""].sort_values(["trainable_params_mean", "loss_mean"]).reset_index(drop=True)
    rows["knobs"] = [size[(r.experiment, r.setting)] or "—" for r in rows.itertuples()]
    on = frontier(rows.trainable_params_mean.tolist(), rows.loss_mean.tolist())
    table = markdown(
        ["method", "size", "trainable params", "n", "seeds", "eval loss", "95% CI ±", "frontier"],
        [[r.label, r.knobs, f"{r.trainable_params_mean:,.0f}", str(r.n), r.seeds, f"{r.loss_mean:.4f}",
          f"{ci95(r.loss_std, r.n):.4f}" if r.n > 1 else "—", "**yes**" if f else ""]
         for r, f in zip(rows.itertuples(), on)])
    best = rows.loc[rows.loss_mean.idxmin()]
    few = int(rows.n.min())
    return (f"Eval loss after training against trainable parameters, each method over its size knob at the "
            f"learning rate `select_math_easy` chose for its default config, validation loss only (no generation); "
            f"figure: [{FIGURE}]({FIGURE}). **frontier**: no other point has at most its parameters and a lower "
            f"mean loss. Lowest loss: {best.label} [{best.knobs}] {best.loss_mean:.4f} at "
            f"{best.trainable_params_mean:,.0f} parameters. On the frontier: "
            + ", ".join(f"{r.label} [{r.knobs}]" for r, f in zip(rows.itertuples(), on) if f) + "."
            + (f" Some points have {few} seed{'s' * (few > 1)} ("
               + ("no interval" if few == 1 else "an interval on one degree of freedom, wide")
               + "): there the frontier orders means whose seed-to-seed spread is barely measured, a sketch rather "
               "than a ranking." if few < 3 else "")
            + "\n\n" + table + matched(ok, rows))
