"""Run identity: the experiment name plus a hash of the resolved config's semantic part.

Everything that can change a number is semantic; where a run is written, how it is logged
and how often it checkpoints are not (:data:`NON_SEMANTIC`). Two spellings of one config
(``a=1 b=2`` / ``b=2 a=1``, a value set by an experiment file or on the command line) hash
alike; a changed experiment file, a second seed or another system prompt hash differently.
The readable label only names the record file; it never decides what is reused.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from typing import Any, Iterable, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from qtha.scrub import scrub

# Dotted keys (a key covers its subtree) that never change a measured number. ``name`` is the
# experiment, the other half of a run's identity (its folder); ``resume`` continues the same run;
# ``reevaluate`` adds measurements of the finished run (recorded under its ``evaluations``);
# ``trainer.kill_at_step`` interrupts it (the resume tests); checkpoints, logging and adapter
# saving are bookkeeping; the QNN's retries and result cache only repeat identical executions.
NON_SEMANTIC = ("name", "force", "resume", "results_dir", "work_dir", "adapter_dir", "allow_hub", "logger", "reevaluate",
                "trainer.enable_progress_bar", "trainer.kill_at_step", "trainer.checkpoint_every",
                "trainer.log_every_n_steps", "trainer.save_adapter", "trainer.num_workers",
                "quantum.retries", "quantum.backoff_s", "quantum.cache_size")
FROZEN = ("model", "adapter")  # a trained adapter's weights fix these groups: re-evaluation may change neither
HASH_CHARS = 12
LABEL_CHARS = 80


def plain(cfg: Any) -> dict[str, Any]:
    """A resolved config as plain JSON-able data (a DictConfig is resolved; a schema dataclass or a dict is copied)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return copy.deepcopy(dict(cfg))


def semantic(config: Any) -> dict[str, Any]:
    """The config without the :data:`NON_SEMANTIC` keys."""
    out = plain(config)
    for dotted in NON_SEMANTIC:
        *parents, last = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def canonical(config: Any) -> str:
    """Key-sorted compact JSON of the semantic config: equal configs, equal text."""
    return json.dumps(semantic(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_hash(config: Any) -> str:
    """The first :data:`HASH_CHARS` hex digits of the sha256 of :func:`canonical`."""
    return hashlib.sha256(canonical(config).encode("utf-8")).hexdigest()[:HASH_CHARS]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"size": 3}}`` → ``{"data.size": 3}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def label(cfg: Any, overrides: Iterable[str]) -> str:
    """A short, filesystem-safe name for the record file: ``key=value`` for every semantic key the
    command line set, with its *resolved* value (a repeated key shows the value that won), group
    choices as chosen (``quantum=noisy_paper_low``), the seed last.

    Cosmetic only: lossy (cut at :data:`LABEL_CHARS`, non-ASCII replaced) because the hash beside
    it is the identity.
    """
    resolved = flatten(semantic(cfg))
    shown: dict[str, str] = {}
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.lstrip("+~").startswith("hydra")])
    for o in parsed:
        key = o.get_key_element().lstrip("+~").split("@")[0]
        if key in resolved:
            shown[key] = _show(resolved[key])
        elif f"{key}.name" in resolved:  # a config group: the preset as chosen (qtha_match_smollm2, not qtha)
            chosen = o.value()
            shown[key] = chosen if isinstance(chosen, str) else _show(resolved[f"{key}.name"])
        elif "." not in key and key not in ("experiment", *NON_SEMANTIC) and isinstance(o.value(), str):
            shown[key] = o.value()
    shown.pop("seed", None)
    parts = [scrub(f"{k}={v}") for k, v in sorted(shown.items())]  # a file name holds no secret
    text = "__".join([*parts, f"seed={plain(cfg).get('seed')}"])
    text = re.sub(r"[^A-Za-z0-9_.=,+\-]", "-", text)
    if len(text) <= LABEL_CHARS:
        return text
    return text[: LABEL_CHARS - 11] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
