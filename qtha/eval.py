"""``python -m qtha.eval <record.json | adapter.safetensors> [overrides …] [--tag NAME]``.

Re-evaluates a trained adapter without retraining: the record's own command line plus the new
overrides go through the same compose as ``python -m qtha.run`` (so group swaps such as
``data=cmath`` or ``quantum=noisy_paper_low`` work as they do there), the changes they make are
applied to the config the run was *recorded* with, and the same build and measure step as
training run on it. The result is appended to the record's ``evaluations`` list (the run's own
metrics stay untouched; the record is rewritten atomically). A change of model or adapter is
refused: the saved weights fix both.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from qtha import offline
from qtha.build import build
from qtha.compose import compose_job, validate
from qtha.errors import ConfigError
from qtha.evaluation import measure, write_predictions
from qtha.identity import FROZEN, NON_SEMANTIC, config_hash, flatten, semantic
from qtha.provenance import git_dirty, git_sha, versions
from qtha.results import (SEARCHED, RunRecord, atomic_write_text, find_record, finished_record, load_record,
                          predictions_path)
from qtha.trainer import is_global_zero_process



def changes(record: RunRecord, overrides: list[str]) -> dict[str, Any]:
    """What ``overrides`` change, as dotted keys of the semantic config: every key they name (a group
    choice names its whole group) at its newly composed value, plus whatever else composing the
    record's command line with them changes. Refuses (one line) anything under ``model`` or ``adapter``."""
    before = flatten(semantic(compose_job(list(record.overrides))))
    after = flatten(semantic(compose_job([*record.overrides, *overrides])))
    named = [o.get_key_element().lstrip("+~").split("@")[0] for o in OverridesParser.create().parse_overrides(overrides)]
    delta = {k: v for k, v in after.items()
             if k not in before or before[k] != v or any(k == n or k.startswith(n + ".") for n in named)}
    stored = flatten(semantic(record.config))
    frozen = sorted(k for k in delta if k.split(".")[0] in FROZEN and (k not in stored or stored[k] != delta[k]))
    if frozen:
        raise ConfigError(f"{frozen[0]} cannot change at evaluation (the saved weights fix model and adapter); "
                          "allowed: data=<set>, data.*, eval.*, quantum=<preset>, quantum.*, trainer.*, seed")
    return delta


def eval_config(record: RunRecord, overrides: list[str]) -> tuple[DictConfig, dict[str, Any]]:
    """The recorded config with the overrides' changes applied, checked as ``qtha.run`` checks a job."""
    delta = changes(record, overrides)
    cfg = OmegaConf.create(record.config)
    for key, value in delta.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    validate(cfg, trains=False)
    return cfg, delta


def _tag(overrides: list[str], given: Optional[str]) -> str:
    """``--tag``, else the overrides that can change a number (``trainer.enable_progress_bar=false`` cannot)."""
    shown = [o for o in overrides if not any(o.lstrip("+~").split("=")[0] == k or o.lstrip("+~").startswith(k + ".")
                                             for k in NON_SEMANTIC)]
    text = given or ("__".join(sorted(shown)) if shown else "reeval")
    return re.sub(r"[^A-Za-z0-9_.=,+\-]", "-", text)[:120]


def reevaluate(record_file: Path, overrides: list[str], tag: Optional[str] = None) -> dict[str, Any]:
    """Load the adapter the record names, measure it, append the evaluation to the record."""
    record, adapter_path = finished_record(record_file)
    cfg, delta = eval_config(record, overrides)
    if cfg.allow_hub:
        offline.allow_hub()
    built = build(cfg, adapter_path=adapter_path)
    measured = measure(built, cfg.eval, cfg.data.max_length)
    tag = _tag(overrides, tag)
    entry = {"tag": tag, "overrides": overrides, "changes": delta, "config_hash": config_hash(cfg),
             "metrics": measured.metrics, "generation": measured.generation,
             "timings": {"load_s": built.load_s, **measured.timings},
             "data_fingerprint": built.data_fingerprint, "git_sha": git_sha(), "git_dirty": git_dirty(),
             "versions": versions(), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if not is_global_zero_process():
        return entry
    if measured.generation is not None:
        entry["predictions_path"] = str(write_predictions(predictions_path(record_file, tag), measured.predictions))
    # Re-read just before writing: a concurrent evaluation of the same record must not be lost.
    latest = load_record(record_file)
    latest.evaluations = [e for e in latest.evaluations if e.get("tag") != tag] + [entry]
    atomic_write_text(record_file, latest.to_json() + "\n")
    return entry


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qtha.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a run record (.json) or the adapter checkpoint (.safetensors) it names")
    parser.add_argument("overrides", nargs="*", help="overrides as for python -m qtha.run, e.g. eval.limit=8 data=cmath")
    parser.add_argument("--tag", help="name of this evaluation in the record (default: from the overrides)")
    parser.add_argument("--results-dir", action="append", type=Path,
                        help=f"where to look up a checkpoint's record (repeatable; default: {', '.join(SEARCHED)})")
    args = parser.parse_args(argv)
    try:
        record_file = find_record(Path(args.target), args.results_dir or [Path(d) for d in SEARCHED])
        entry = reevaluate(record_file, args.overrides, args.tag)
    except ConfigError as exc:
        print(f"qtha: error: {exc}", file=sys.stderr)
        return 2
    if is_global_zero_process():
        shown = {k: round(v, 4) for k, v in entry["metrics"].items()}
        print(f"qtha: {json.dumps({'record': str(record_file), 'tag': entry['tag'], **shown})}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
