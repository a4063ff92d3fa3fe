"""Paper-style figures from the summary and history frames: curves, sweeps, params vs metric.

Built on ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot state), so the report
runs headless and a notebook can display the very objects the report saves. Only finished
runs are plotted; re-evaluations (e.g. the same adapter with a noisy QNN) get a figure of
their own beside the loss as trained, and failures live in the tables.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from qtha.report.columns import ADAPTER_ORDER, GENERATION, KNOBS, PARAMS, PARETO_KNOBS, Column, column

EVAL_LOSS = column("loss")
FORMATS = ("png", "pdf")
MARKERS = "osD^vP*Xph"  # tells apart the labels of one adapter (QTHA's variants share its colour)
_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def _finished(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[(summary.status == "ok") & (summary.eval_tag == "")]


def _metrics(rows: pd.DataFrame) -> list[Column]:
    """Eval loss, plus every generation metric the runs have."""
    return [EVAL_LOSS, *(c for c in GENERATION if rows[f"{c.key}_mean"].notna().any())]


def _color(adapter: str) -> str:
    index = ADAPTER_ORDER.index(adapter) if adapter in ADAPTER_ORDER else len(ADAPTER_ORDER)
    return f"C{index % 10}"


def _panels(n: int, title: str) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(4.2 * n, 3.4), layout="constrained")
    fig.suptitle(title, fontsize=10)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _legend(ax: Any) -> None:
    """The legend under the panels, not over the curves: labels carry whole settings and run long."""
    handles, labels = ax.get_legend_handles_labels()
    width, height = ax.figure.get_size_inches()
    ax.figure.set_size_inches(width, height + 0.15 * len(labels))  # room for one 7-pt line per label
    ax.figure.legend(handles, labels, loc="outside lower center", fontsize=7)


def _without(setting: str, override: str) -> str:
    return " ".join(p for p in setting.split() if not p.startswith(f"{override}="))


def _lines(rows: pd.DataFrame, override: str) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """(adapter, legend label, rows) per adapter × the rest of the setting (what is held fixed)."""
    rest = rows.setting.map(lambda s: _without(s, override))
    for (label, fixed), group in rows.groupby([rows.label, rest], sort=True):
        yield group.adapter.iloc[0], f"{label} [{fixed}]" if fixed else label, group


def loss_curves(history: pd.DataFrame, experiment: str) -> Figure | None:
    """Training loss vs step, one line per adapter × setting, mean over seeds."""
    steps = history.dropna(subset=["train_loss"])
    if steps.empty:
        return None
    fig, (ax,) = _panels(1, f"{experiment}: training loss (mean over seeds)")
    for (label, setting), group in steps.groupby(["label", "setting"], sort=True):
        mean = group.groupby("step").train_loss.mean()
        ax.plot(mean.index, mean.to_numpy(), label=f"{label} [{setting}]" if setting else label, linewidth=1.2)
    ax.set(xlabel="step", ylabel="train loss")
    _legend(ax)
    return fig


def swept(rows: pd.DataFrame, x: str) -> pd.DataFrame:
    """The rows of the adapters whose finished runs take more than one value of column ``x``: a method held at one
    value (QTHA's rank beside LoRA's r = 4 and 8) is a lone point with nothing to read along the axis."""
    rows = rows.dropna(subset=[x])
    return rows[rows.groupby("label")[x].transform("nunique").gt(1)]


def metric_vs(summary: pd.DataFrame, x: str, override: str, experiment: str, log_x: bool = False) -> Figure | None:
    """Each metric vs a swept setting (``data_size`` or an adapter knob), mean ± std over seeds."""
    rows = swept(_finished(summary), x)
    if rows.empty:
        return None
    categorical = not all(pd.api.types.is_number(v) for v in rows[x])
    categories = sorted({str(v) for v in rows[x]})
    metrics = _metrics(rows)
    fig, axes = _panels(len(metrics), f"{experiment}: metrics vs {override}")
    for ax, metric in zip(axes, metrics):
        for adapter, label, group in _lines(rows, override):
            group = group.sort_values(x, key=lambda s: s.map(str) if categorical else s)
            xs = [categories.index(str(v)) for v in group[x]] if categorical else group[x]
            ax.errorbar(xs, group[f"{metric.key}_mean"], yerr=group[f"{metric.key}_std"].fillna(0), marker="o",
                        capsize=3, label=label, color=_color(adapter))
        if log_x:
            ax.set_xscale("log")
            ax.minorticks_off()
        ticks = range(len(categories)) if categorical else sorted(set(rows[x]))
        ax.set_xticks(list(ticks), categories if categorical else [f"{v:g}" for v in ticks])
        ax.set(xlabel=override, ylabel=metric.label)
    _legend(axes[0])
    return fig


def params_vs_metric(summary: pd.DataFrame, experiment: str) -> Figure | None:
    """Trainable parameters (log x) vs each metric: the efficiency frontier of the adapters. One marker per method
    (a selection's learning rates stack above its parameter count); the settings are in the tables, since a
    label per point is unreadable once a selection holds dozens of them."""
    rows = _finished(summary)
    rows = rows[rows[f"{PARAMS.key}_mean"] > 0]
    if rows.empty:
        return None
    metrics = _metrics(rows)
    fig, axes = _panels(len(metrics), f"{experiment}: trainable parameters vs metric")
    for ax, metric in zip(axes, metrics):
        for i, (label, group) in enumerate(rows.groupby("label", sort=True)):
            ax.errorbar(group[f"{PARAMS.key}_mean"], group[f"{metric.key}_mean"],
                        yerr=group[f"{metric.key}_std"].fillna(0), marker=MARKERS[i % len(MARKERS)], linestyle="none",
                        capsize=3, label=label, color=_color(group.adapter.iloc[0]))
        ax.set_xscale("log")
        ax.set(xlabel=PARAMS.label, ylabel=metric.label)
    _legend(axes[0])
    return fig


def reevaluations(summary: pd.DataFrame, experiment: str) -> Figure | None:
    """Eval loss as trained vs under each re-evaluation tag (exact vs finite-shot vs noisy QNN), mean ± std."""
    rows = summary[summary.status == "ok"]
    by_loss = rows[rows.eval_tag != ""].groupby("eval_tag").loss_mean.mean().sort_values(kind="stable")
    tags = ["", *by_loss.index]  # re-evaluations from least to most degraded
    if len(tags) == 1:
        return None
    fig, (ax,) = _panels(1, f"{experiment}: as trained vs re-evaluated")
    for (adapter, setting), group in rows.groupby(["adapter", "setting"], sort=True):
        if group.eval_tag.eq("").all():
            continue
        group = group.set_index("eval_tag").reindex(tags).dropna(subset=["loss_mean"])
        ax.errorbar([tags.index(t) for t in group.index], group.loss_mean, yerr=group.loss_std.fillna(0), marker="o",
                    linestyle="none", capsize=3, label=f"{adapter} [{setting}]" if setting else adapter, color=_color(adapter))
    ax.set_xticks(range(len(tags)), ["as trained", *tags[1:]], rotation=20, fontsize=7)
    ax.set(ylabel=f"{EVAL_LOSS.label} (mean ± std over seeds)")
    _legend(ax)
    return fig


def ci95(std: float, n: int) -> float:
    """Half-width of the 95 % t-interval of a mean over ``n`` seeds (0 for a single seed)."""
    if n < 2 or pd.isna(std):
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def pareto(summary: pd.DataFrame, metric: Column = EVAL_LOSS) -> Figure | None:
    """Validation loss vs trainable parameters (log x), one line per method over its size knob (QTHA: one per
    bottleneck, over the bond dimension), mean ± 95 % CI over seeds: the trade-off instead of one point per method
    (SPEC §5)."""
    rows = _finished(summary)
    rows = rows[rows[f"{PARAMS.key}_mean"] > 0].dropna(subset=[f"{metric.key}_mean"])
    if rows.adapter.nunique() < 2:
        return None
    fig, (ax,) = _panels(1, f"{metric.label} vs trainable parameters (mean ± 95% CI over seeds)")
    along = {a: f"adapter.{knobs[0]}" for a, knobs in PARETO_KNOBS.items()}  # the knob a line runs over
    fixed = pd.Series([_without(r.setting, along.get(r.adapter, "")) for r in rows.itertuples()], index=rows.index)
    for i, ((adapter, rest), group) in enumerate(rows.groupby([rows.adapter, fixed], sort=True)):
        group = group.sort_values(f"{PARAMS.key}_mean")
        ax.errorbar(group[f"{PARAMS.key}_mean"], group[f"{metric.key}_mean"],
                    yerr=[ci95(s, n) for s, n in zip(group[f"{metric.key}_std"], group.n)], capsize=3,
                    marker=MARKERS[i % len(MARKERS)], label=f"{adapter} [{rest}]" if rest else adapter,
                    color=_color(adapter))
    ax.set_xscale("log")
    ax.set_yscale("log")  # one badly sized point (QuanTA at 2 axes: 20 M parameters) must not flatten the rest
    ax.set(xlabel=PARAMS.label, ylabel=metric.label)
    _legend(ax)
    return fig


def write_pareto(summary: pd.DataFrame, out: Path) -> list[Path]:
    """``<out>/figures/pareto_loss_vs_params.{png,pdf}`` from the ``pareto_*`` experiments, when they hold two methods."""
    fig = pareto(summary[summary.experiment.str.startswith("pareto_")])
    return save(fig, out / "figures" / "pareto_loss_vs_params") if fig is not None else []


def _repeats(rows: pd.DataFrame, knob: str) -> bool:
    """Whether ``knob`` reads, on every row that has it, what a knob before it in ``KNOBS`` reads: QTHA's qubits
    resolve to its rank and its circuit layers to its qubits, so a sweep of one would draw the same plot twice."""
    have = rows.dropna(subset=[knob])
    earlier = list(KNOBS)[:list(KNOBS).index(knob)]
    return not have.empty and any(have[knob].tolist() == have[e].tolist() for e in earlier)


def build(summary: pd.DataFrame, history: pd.DataFrame, experiment: str) -> dict[str, Figure]:
    """Every figure this experiment's records support, by file-name suffix."""
    candidates = {
        "loss_curves": loss_curves(history, experiment),
        "vs_data_size": metric_vs(summary, "data_size", "data.size", experiment, log_x=True),
        "params_vs_metric": params_vs_metric(summary, experiment),
        "vs_evaluation": reevaluations(summary, experiment),
        **{f"vs_{knob}": metric_vs(summary, knob, override, experiment) for knob, override in KNOBS.items()
           if not _repeats(_finished(summary), knob)},
    }
    return {name: fig for name, fig in candidates.items() if fig is not None}


def save(fig: Figure, stem: Path) -> list[Path]:
    """``<stem>.png`` and ``<stem>.pdf``, each written to a temp file then renamed (never half-written)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format=fmt, dpi=150, bbox_inches="tight", metadata=_METADATA[fmt])
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths


def write_figures(summary: pd.DataFrame, history: pd.DataFrame, experiment: str, out: Path) -> list[Path]:
    """``<out>/figures/<experiment>_<name>.{png,pdf}`` for every figure ``build`` returns."""
    return [p for name, fig in build(summary, history, experiment).items()
            for p in save(fig, out / "figures" / f"{experiment}_{name}")]
