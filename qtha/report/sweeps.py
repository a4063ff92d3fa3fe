"""REPRODUCTION.md's knob sweeps: what moving one adapter knob away from the method's default does to eval loss.

The ``*_sweep`` experiments (QTHA's qubit count, circuit depth and bond dimension; LoRA's and QTHA's rank) train
each value at the learning rate ``select_math_easy`` chose for the method's default config, three seeds, validation
loss only. A curve of means says little when seeds scatter as much as values do, so each value is set against the
default value seed by seed (the paired estimate of the claims, :mod:`qtha.report.paired`): **lower** / **higher**
when the 95 % CI of the loss change excludes 0, **no difference shown** when it does not. The default is the
method's schema default as the layer builds it (QTHA: rank 4, as many qubits as the rank, as many circuit layers
as qubits, bond dimension 8); a sweep that leaves it out is listed without comparisons.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pandas as pd

from qtha.config import CONF_DIR
from qtha.report.columns import KNOBS
from qtha.report.figures import ci95
from qtha.report.paired import Records, change, paired, reading
from qtha.report.records import effective, frame, knobs
from qtha.report.tables import markdown, summarise

SUFFIX = "_sweep"


def experiments() -> list[str]:
    """The sweep experiments qtha ships (``conf/experiment/*_sweep.yaml``)."""
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob(f"*{SUFFIX}.yaml"))


def default(adapter: str, knob: str) -> Any:
    """``knob``'s value in ``adapter``'s default config, resolved as the layer builds it."""
    from qtha.adapters import adapter_spec  # imports torch: only when a sweep is reported

    return knobs(dataclasses.asdict(adapter_spec(adapter).config()))[knob]


def swept(flats: list[dict[str, Any]]) -> Optional[str]:
    """The knob override (``adapter.n_qubits``) whose value varies among one method's records, or None."""
    varying = [o for o in KNOBS.values() if len({repr(f.get(o)) for f in flats}) > 1]
    return varying[0] if len(varying) == 1 else None


def _spread(times: pd.Series) -> str:
    """Mean step time, with the range over seeds when they differ (hosts of one VM image run at different speeds)."""
    times = times.dropna()
    if times.empty:
        return "—"
    spread = f" ({times.min():.2f}–{times.max():.2f})" if times.max() - times.min() >= 0.005 else ""
    return f"{times.mean():.2f}{spread}"


def _order(value: Any) -> tuple[int, float, str]:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, repr(value))


def table(records: Records, experiment: str) -> tuple[list[str], str]:
    """One sweep's knobs and rows: per method and value, n, seeds, parameters, eval loss ± 95 % CI half-width, and
    the paired loss change against the method's default value."""
    ok = [(p, r) for p, r in records if r.status == "ok" and r.experiment == experiment]
    runs = frame(ok)
    runs = runs[runs.eval_tag == ""]
    summary = summarise(runs)
    rows, swept_knobs = [], []
    for adapter in sorted({r.config["adapter"]["name"] for _, r in ok}):
        override = swept([effective(r) for _, r in ok if r.config["adapter"]["name"] == adapter])
        if override is None:
            continue
        knob = override.removeprefix("adapter.")
        swept_knobs.append(knob)
        ref = default(adapter, knob)
        lines = summary[summary.adapter == adapter]
        has_ref = (lines[knob] == ref).any()
        for row in sorted(lines.itertuples(), key=lambda r: _order(getattr(r, knob))):
            value = getattr(row, knob)
            if value == ref or not has_ref:
                vs = ["(default)" if has_ref else "— (default not run)", ""]
            else:
                method, comparator = ({"experiment": experiment, "where": {"adapter.name": adapter, override: v}}
                                      for v in (value, ref))
                est = paired(records, {"name": f"{knob}={value}", "method": method, "comparator": comparator},
                             "loss", "%")
                vs = [change(est), reading(est)]
            rows.append([adapter, f"{knob}={value}", f"{row.trainable_params_mean:,.0f}", str(row.n), row.seeds,
                         f"{row.loss_mean:.4f}", f"{ci95(row.loss_std, row.n):.4f}" if row.n > 1 else "—", *vs,
                         _spread(runs[(runs.adapter == adapter) & (runs[knob] == value)].step_time_s)])
    return sorted(set(swept_knobs)), markdown(["method", "value", "trainable params", "n", "seeds", "eval loss",
                                               "95% CI ±", "loss vs default (95% CI)", "reading", "step time (s): mean (range)"],
                                              rows)


INTRO = ("Each adapter knob moved away from the method's default config, at the learning rate `select_math_easy` "
         "chose for the default, validation loss only. **loss vs default**: the paired change of eval loss against "
         "the default value, seed by seed (negative: lower loss), with its 95% CI; **lower** / **higher** when the "
         "CI excludes 0. The qubit sweep moves the circuit depth with the qubit count (the authors' L = n_q); the "
         "depth sweep holds 4 qubits; QTHA's rank sweep moves qubits and depth with the rank. **step time**: mean "
         "seconds per training step on the machine each run ran on, with its range over seeds (the classical "
         "simulation's cost of a wider or deeper circuit; runs that shared the CPU read slower, and the lent 2-core "
         "hosts of one VM image differ in speed: compare values run side by side, or read the QNN benchmark "
         "`results/benchmarks/qnn.md`, timed on one machine).\n\n")


def section(records: Records) -> str:
    """A table per sweep with finished runs, and the command of each sweep that has none."""
    found = sorted({r.experiment for _, r in records if r.status == "ok" and r.experiment.endswith(SUFFIX)})
    parts = []
    for experiment in found:
        swept_knobs, rows = table(records, experiment)
        figures = ", ".join(f"[figures/{experiment}_vs_{k}.png](figures/{experiment}_vs_{k}.png)"
                            for k in swept_knobs)
        parts.append(f"### `{experiment}`\n\nTable: [tables/{experiment}.md](tables/{experiment}.md); figure: "
                     f"{figures or '—'}.\n\n{rows}")
    missing = [e for e in experiments() if e not in found]
    tail = ("\nNot run yet: " + "; ".join(f"`python -m qtha.run -m experiment={e} results_dir=results`"
                                         for e in missing) + ".\n") if missing else ""
    return INTRO + "\n".join(parts) + tail
