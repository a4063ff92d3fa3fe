"""Exact trainable-parameter counts at the paper's scale (7B), without weights.

Claim 1 (parameter savings) is a property of the architecture, not of a training run, so it
is checked on the paper's own models through ``qtha.params.count`` even where only the
embedded 135M model was trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from qtha.report.columns import ADAPTER_ORDER
from qtha.report.tables import markdown
from qtha.results import atomic_write_text

PAPER_MODELS = ("qwen2_7b", "deepseek_r1_distill_qwen_7b")
COLUMNS = ["model", "adapter", "rank", "total_trainable", "per_layer", "base_params", "pct_of_base", "ratio_to_lora"]


def count_rows(models: Sequence[str] = PAPER_MODELS, adapters: Sequence[str] = ADAPTER_ORDER) -> pd.DataFrame:
    """One row per model × adapter from ``qtha.params.count`` (meta device, seconds per model)."""
    from qtha.params import count  # imports torch/transformers: only when counts are asked for

    rows = []
    for model in models:
        for adapter in adapters:
            c = count([f"model={model}", f"adapter={adapter}"])
            per_layer = ", ".join(f"{k} {v:,}" for k, v in c["per_layer"].items()) or "—"
            rows.append({**{k: c[k] for k in ("model", "adapter", "rank", "total_trainable", "base_params",
                                               "ratio_to_lora")},
                         "per_layer": per_layer, "pct_of_base": 100 * c["total_trainable"] / c["base_params"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_counts(counts: pd.DataFrame, out: Path) -> list[Path]:
    """``<out>/tables/params_7b.{md,csv}``."""
    header = ["model", "adapter", "rank", "per layer", "total trainable", "% of base", "ratio to LoRA"]
    cells = [[r.model, r.adapter, str(r.rank), r.per_layer, f"{r.total_trainable:,}", f"{r.pct_of_base:.4f}",
              f"{r.ratio_to_lora:.3f}"] for r in counts.itertuples()]
    md = ("# Trainable parameters at the paper's scale\n\n" + markdown(header, cells) +
          "\nExact counts from `qtha.params.count` on the meta device (no weights); adapters on q_proj, v_proj "
          "with each adapter's default config; ratio to LoRA at the same rank.\n")
    paths = [out / "tables" / "params_7b.md", out / "tables" / "params_7b.csv"]
    atomic_write_text(paths[0], md)
    atomic_write_text(paths[1], counts.to_csv(index=False))
    return paths
