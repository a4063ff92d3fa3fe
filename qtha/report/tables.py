"""Per-experiment tables: adapter × setting rows, mean ± std over seeds, best per column marked.

Markdown (reviews, REPRODUCTION.md), LaTeX (the paper) and CSV (re-plotting) all come from one
summary frame, so the three never disagree. Failed and killed runs stay in as rows of their
own: a sweep with holes must look like one.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from qtha.report.columns import (ADAPTER_ORDER, GENERATION, KNOBS, LOSSES, ONE_SETTING, PARAMS, PPL_NOTE, RATIO,
                                 STEP_TIME, Column)
from qtha.report.records import METRIC_KEYS
from qtha import selection
from qtha.results import atomic_write_text

GROUP = ["experiment", "label", "setting", "status"]
CONSTANT = ["adapter", "eval_tag", "model", "data", "data_size", "max_steps", *KNOBS]
STATUS_SHOWN = {"ok": "ok", "failed": "failed", "running": "incomplete"}
STAT_COLUMNS = [f"{k}_{s}" for k in (*METRIC_KEYS, RATIO.key) for s in ("mean", "std")]
FOOTNOTE = ("Mean ± sample std over seeds (n = records in the row). " + PPL_NOTE + " Bold: best in its column (lower "
            "for losses, PPL, parameters, ratio and step time, where 0 parameters never counts; higher for generation "
            "metrics). Ratio to LoRA: trainable parameters over those of the LoRA run with the same experiment and "
            "setting, else the same model and rank, else the same model. Failed rows give the error's first line; "
            "incomplete rows are runs that were killed before they finished.")


def _natural(text: str) -> tuple[Any, ...]:
    """``data.size=300`` before ``data.size=3000`` (digits compare as numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    adapter = row["adapter"]
    rank = ADAPTER_ORDER.index(adapter) if adapter in ADAPTER_ORDER else len(ADAPTER_ORDER)
    return (row["experiment"], rank, adapter, _natural(row["setting"]), row["eval_tag"],
            list(STATUS_SHOWN).index(row["status"]))


def _lora_params(lora: pd.DataFrame, row: dict[str, Any]) -> float:
    """LoRA's trainable count for this row: same experiment + setting, else same model + rank, else same model."""
    masks = ((lora.experiment == row["experiment"]) & (lora.setting == row["setting"]),
             (lora.model == row["model"]) & (lora["rank"] == row["rank"]),
             lora.model == row["model"])
    for mask in masks:
        hit = lora.loc[mask, "trainable_params"]
        if len(hit):
            return float(hit.mode().iloc[0])
    return math.nan


def summarise(df: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per experiment × label × setting × status; ``<metric>_mean/_std`` over the ok seeds.

    ``reference`` (default ``df``) holds the LoRA runs the ratio is taken against, so a table of
    one experiment can fall back to another experiment's LoRA run on the same model.
    """
    reference = df if reference is None else reference
    lora = reference[(reference.adapter == "lora") & (reference.status == "ok") & (reference.eval_tag == "")
                     & (reference.trainable_params > 0)]
    rows = []
    for key, group in df.groupby(GROUP, sort=False, dropna=False):
        row: dict[str, Any] = dict(zip(GROUP, key))
        row.update({c: group[c].iloc[0] for c in CONSTANT})
        row.update(n=len(group), seeds=",".join(str(s) for s in sorted(group.seed)), note="")
        if row["status"] == "ok":
            for metric in METRIC_KEYS:
                row[f"{metric}_mean"], row[f"{metric}_std"] = group[metric].mean(), group[metric].std()
            row[f"{RATIO.key}_mean"] = row["trainable_params_mean"] / _lora_params(lora, row)
        else:
            errors = " | ".join(dict.fromkeys(e for e in group.error if e))
            row["note"] = errors or "killed before it finished (status running)"
        rows.append(row)
    return pd.DataFrame(sorted(rows, key=_order), columns=[*GROUP, *CONSTANT, "n", "seeds", "note", *STAT_COLUMNS])


def shown_columns(summary: pd.DataFrame) -> list[Column]:
    """The fixed columns plus the generation metrics some row of this table actually has."""
    present = [c for c in GENERATION if summary[f"{c.key}_mean"].notna().any()]
    return [PARAMS, RATIO, *LOSSES, *present, STEP_TIME]


def best_flags(summary: pd.DataFrame, columns: Sequence[Column]) -> pd.Series:
    """Per row, the ``;``-joined keys of the columns where its mean is the best of the table (ties all win)."""
    flags: dict[Any, list[str]] = {i: [] for i in summary.index}
    for col in columns:
        values = summary.loc[summary.status == "ok", f"{col.key}_mean"].dropna()
        if col.count:
            values = values[values > 0]
        if values.empty:
            continue
        target = values.max() if col.higher_is_better else values.min()
        for i in values.index[np.isclose(values.to_numpy(dtype=float), target, rtol=1e-9, atol=0.0)]:
            flags[i].append(col.key)
    return pd.Series({i: ";".join(v) for i, v in flags.items()}, dtype=object)


def _number(value: float, col: Column) -> str:
    return f"{value:,.{col.digits}f}"


def cell(row: pd.Series, col: Column) -> str:
    """``mean ± std`` (std only when there are several seeds; never ``± 0`` for an exact count)."""
    mean, std = row[f"{col.key}_mean"], row[f"{col.key}_std"]
    if row["status"] != "ok" or pd.isna(mean):
        return "—"
    text = _number(mean, col)
    if pd.notna(std) and not (col.count and std == 0):
        text += f" ± {_number(std, col)}"
    return text


def grid(summary: pd.DataFrame, columns: Sequence[Column]) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, text cells and bold flags: the table independent of its markup."""
    header = ["adapter", "setting", "status", "n", *(c.label for c in columns), "note"]
    cells, bold = [], []
    for _, row in summary.iterrows():
        best = set(filter(None, row.get("best", "").split(";")))
        cells.append([row["label"], row["setting"] or ONE_SETTING, STATUS_SHOWN[row["status"]], str(row["n"]),
                      *(cell(row, c) for c in columns), row["note"]])
        bold.append([False] * 4 + [c.key in best for c in columns] + [False])
    return header, cells, bold


def markdown(header: Sequence[str], cells: Sequence[Sequence[str]], bold: Sequence[Sequence[bool]] = ()) -> str:
    def text(value: str, strong: bool) -> str:
        value = str(value).replace("|", "\\|")
        return f"**{value}**" if strong and value != "—" else value

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(cells):
        flags = bold[i] if bold else [False] * len(row)
        lines.append("| " + " | ".join(text(v, b) for v, b in zip(row, flags)) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex(header: Sequence[str], cells: Sequence[Sequence[str]], bold: Sequence[Sequence[bool]], title: str) -> str:
    """A booktabs ``tabular``; ``±`` becomes ``$\\pm$`` and best cells ``\\textbf``."""
    def text(value: str, strong: bool) -> str:
        value = "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(value)).replace("±", r"$\pm$")
        return rf"\textbf{{{value}}}" if strong and value != "—" else value

    spec = "llrr" + "r" * (len(header) - 5) + "l"
    lines = [f"% {title} (generated by python -m qtha.report; needs \\usepackage{{booktabs}})",
             *(f"% {part}" for part in FOOTNOTE.split(". ")),
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(text(h, False) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(text(v, b) for v, b in zip(row, flags)) + r" \\" for row, flags in zip(cells, bold)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_selection(results: Path, experiment: str, out: Path) -> list[Path]:
    """``<out>/tables/<experiment>_selection.{md,csv}`` when the experiment is a learning-rate selection (its
    records carry ``heldout_loss``): per method, the mean over seeds at every rate, the selected one in bold."""
    found = [m for m in selection.methods(results, experiment) if len(m.losses) + len(m.failed) > 1]
    if not found:  # no method tried two rates: a probe with a selection split (a calibration), not a selection
        return []
    header, rows = selection.table(found)
    md = (f"# {experiment}: learning-rate selection\n\n{markdown(header, rows)}\nMean heldout_loss (the loss on the "
          "selection split carved from the training pool, never the test split) over the finished seeds; bold: the "
          "selected rate (lowest mean; ties: the smaller rate); failed: no seed finished (e.g. diverged); grid edge: "
          "the selected rate is the smallest or largest tried, so a better one may lie beyond the grid (extend it "
          "before reading the comparison).\n")
    csv = pd.DataFrame([{"method": selection.describe(m.adapter), "lr": lr, "heldout_loss": loss, "seeds": m.seeds[lr],
                         "selected": lr == m.selected, "at_edge": m.at_edge} for m in found for lr, loss in m.losses.items()]).to_csv(index=False)
    paths = [out / "tables" / f"{experiment}_selection.md", out / "tables" / f"{experiment}_selection.csv"]
    atomic_write_text(paths[0], md)
    atomic_write_text(paths[1], csv)
    return paths


def write_experiment(summary: pd.DataFrame, experiment: str, out: Path) -> list[Path]:
    """``<out>/tables/<experiment>.{md,tex,csv}`` for one experiment's summary rows."""
    columns = shown_columns(summary)
    summary = summary.assign(best=best_flags(summary, columns))
    header, cells, bold = grid(summary, columns)
    n_records = int(summary.n.sum())
    title = f"{experiment}: {n_records} records"
    md = f"# {title}\n\n{markdown(header, cells, bold)}\n{FOOTNOTE}\n"
    stats = [f"{c.key}_{s}" for c in columns for s in ("mean", "std")]
    csv = summary.assign(status=summary.status.map(STATUS_SHOWN))[
        [*GROUP, *CONSTANT, "n", "seeds", *stats, "best", "note"]].to_csv(index=False)
    paths = {ext: out / "tables" / f"{experiment}.{ext}" for ext in ("md", "tex", "csv")}
    atomic_write_text(paths["md"], md)
    atomic_write_text(paths["tex"], latex(header, cells, bold, title))
    atomic_write_text(paths["csv"], csv)
    return list(paths.values())
