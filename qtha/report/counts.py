"""Exact trainable-parameter counts at the paper's scale (7B), without weights.

Claim 1 (parameter savings) is a property of the architecture, not of a training run, so it
is checked on the paper's own models through ``qtha.params.count`` even where only the
embedded 135M model was trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from qtha.report.tables import markdown
from qtha.results import atomic_write_text

PAPER_MODELS = ("qwen2_7b", "deepseek_r1_distill_qwen_7b")
# The adapter configs (conf/adapter options) counted at 7B: each method's default, the earlier readings.
CONFIGS = ("lora", "dora", "quanta", "quanta_spec", "qtha", "qtha_spec_v1", "qtha_match_7b")
COLUMNS = ["model", "config", "adapter", "rank", "total_trainable", "per_layer", "base_params", "pct_of_base",
           "lora_r4", "ratio_lora_r4", "fewer_than_lora_r4_pct", "lora_r8", "ratio_lora_r8", "fewer_than_lora_r8_pct"]


def count_rows(models: Sequence[str] = PAPER_MODELS, configs: Sequence[str] = CONFIGS) -> pd.DataFrame:
    """One row per model × adapter config from ``qtha.params.count`` (meta device, seconds per model), each
    against LoRA r = 4 and r = 8 on the same targets."""
    from qtha.params import count  # imports torch/transformers: only when counts are asked for

    rows = []
    for model in models:
        for config in configs:
            c = count([f"model={model}", f"adapter={config}"])
            per_layer = ", ".join(f"{k} {v:,}" for k, v in c["per_layer"].items()) or "—"
            row = {"config": config, **{k: c[k] for k in ("model", "adapter", "rank", "total_trainable", "base_params")},
                   "per_layer": per_layer, "pct_of_base": 100 * c["total_trainable"] / c["base_params"]}
            for r, vs in c["versus_lora"].items():
                row.update({f"lora_{r}": vs["total_trainable"], f"ratio_lora_{r}": vs["ratio"],
                            f"fewer_than_lora_{r}_pct": vs["fewer_pct"]})
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _versus(ratio: float, fewer: float) -> str:
    return f"{ratio:.3f} ({abs(fewer):.1f}% {'fewer' if fewer >= 0 else 'more'})"


def write_counts(counts: pd.DataFrame, out: Path) -> list[Path]:
    """``<out>/tables/params_7b.{md,csv}``."""
    header = ["model", "config", "rank", "per layer", "total trainable", "% of base", "vs LoRA r=4", "vs LoRA r=8"]
    cells = [[r.model, r.config, str(r.rank), r.per_layer, f"{r.total_trainable:,}", f"{r.pct_of_base:.4f}",
              _versus(r.ratio_lora_r4, r.fewer_than_lora_r4_pct), _versus(r.ratio_lora_r8, r.fewer_than_lora_r8_pct)]
             for r in counts.itertuples()]
    md = ("# Trainable parameters at the paper's scale\n\n" + markdown(header, cells) +
          "\nExact counts from `qtha.params.count` on the meta device (no weights); adapters on q_proj, v_proj "
          "with each config's defaults (`conf/adapter/<config>.yaml`); against LoRA at r = 4 (the paper's rank) and "
          "r = 8 (LLaMA-Factory's default) on the same targets.\n")
    paths = [out / "tables" / "params_7b.md", out / "tables" / "params_7b.csv"]
    atomic_write_text(paths[0], md)
    atomic_write_text(paths[1], counts.to_csv(index=False))
    return paths
