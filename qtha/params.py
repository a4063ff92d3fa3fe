"""``python -m qtha.params model=<m> adapter=<a> [overrides] [--json]``: exact trainable counts.

The model is built on the ``meta`` device from the architecture in its config (no weights,
no download), so a 7B model is counted in seconds on a laptop. Counts come from each
adapter's ``num_params`` formula and are cross-checked against the parameters of adapter
layers actually injected on the meta model. Every count is set against LoRA at r = 4 (the
paper's rank) and r = 8 (LLaMA-Factory's default, the likeliest baseline of the paper's "76 %
fewer") on the same targets.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Optional

from qtha import adapters
from qtha.backbone import meta_model
from qtha.compose import check_adapter_fits, compose_checked, group_options
from qtha.adapters.lora import LoRAConfig
from qtha.errors import ConfigError


LORA_RANKS = (4, 8)


def count(overrides: list[str]) -> dict[str, Any]:
    """SPEC §4 JSON: total trainable, per target module type, base params, and the same counts against
    LoRA at r = 4 and r = 8 (``versus_lora``: LoRA's total, the ratio, and how many % fewer)."""
    cfg = compose_checked(overrides, needs_weights=False)
    per_module = check_adapter_fits(cfg)
    model = meta_model(cfg.model)
    base = adapters.count_total(model)
    targets = list(cfg.adapter.target_modules) or ["q_proj", "v_proj"]
    loras = {r: sum(adapters.expected_trainable(model, LoRAConfig(rank=r, target_modules=targets)).values())
             for r in LORA_RANKS}
    adapters.inject_adapters(model, cfg.adapter, quantum=cfg.quantum)
    total = adapters.count_trainable(model)
    if total != sum(per_module.values()):
        raise AssertionError(f"formula {sum(per_module.values())} != injected {total} for adapter={cfg.adapter.name}")
    layers = cfg.model.arch.num_hidden_layers
    return {
        "model": cfg.model.name, "adapter": cfg.adapter.name, "rank": cfg.adapter.rank,
        "total_trainable": total, "per_module": per_module,
        "per_layer": {k: v // layers for k, v in per_module.items()}, "base_params": base,
        "versus_lora": {f"r{r}": {"total_trainable": n, "ratio": round(total / n, 4),
                                  "fewer_pct": round(100 * (1 - total / n), 2)} for r, n in loras.items()},
    }


def _table(rows: list[dict[str, Any]]) -> str:
    versus = [f"vs LoRA r={r}" for r in LORA_RANKS]
    lines = ["| " + " | ".join(["model", "adapter", "rank", "per layer", "total trainable", "% of base", *versus]) + " |",
             "|" + "---|" * (6 + len(versus))]
    for r in rows:
        per_layer = ", ".join(f"{k} {v:,}" for k, v in r["per_layer"].items()) or "—"
        vs = [f"{v['ratio']:.3f} ({abs(v['fewer_pct']):.1f}% {'fewer' if v['fewer_pct'] >= 0 else 'more'})"
              for v in r["versus_lora"].values()]
        lines.append(f"| {r['model']} | {r.get('preset', r['adapter'])} | {r['rank']} | {per_layer} | {r['total_trainable']:,} | "
                     f"{100 * r['total_trainable'] / r['base_params']:.4f} | " + " | ".join(vs) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(f"usage: {__doc__.split(':', 1)[0].strip('`')} [--all-adapters]\n\n{__doc__.split(chr(10) * 2, 1)[1]}")
        return 0
    as_json = "--json" in argv
    every = "--all-adapters" in argv
    overrides = [a for a in argv if not a.startswith("--")]
    try:
        if every:
            rows = [{**count([*overrides, f"adapter={a}"]), "preset": a} for a in group_options("adapter") if a != "none"]
        else:
            rows = [count(overrides)]
    except ConfigError as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(rows if every else rows[0], indent=2))
    else:
        print(_table(rows))
        print(f"base model parameters: {rows[0]['base_params']:,} (meta device, no weights loaded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
