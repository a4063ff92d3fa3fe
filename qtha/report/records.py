"""Run records → pandas DataFrames: one row per record plus one per re-evaluation.

Every report reads records through here, and here through :func:`qtha.results.load_record`
(the one upgrade path for old schemas), so a record this code does not understand (an unknown
``schema_version``, a missing or mistyped field, a corrupt file) is named in one line with the file
and the field — left out of the report with that line in its header, never read as silently empty
columns.

Rows are grouped by what the resolved configs say, never by file names: a record's *setting*
is the ``key=value`` of every config value that varies inside its experiment (seed and adapter
name aside), so a knob set in an experiment file or on the command line shows alike.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from qtha.identity import flatten, semantic
from qtha.report.columns import KNOBS, RECORD_COLUMNS
from qtha.results import STATUSES, RunRecord, load_record, record_files

IDENTITY = ("experiment", "run", "config_hash", "status", "adapter", "label", "eval_tag", "setting", "seed", "model",
            "data", "data_size", "max_steps", "git_sha", "error", "path")
METRIC_KEYS = tuple(c.key for c in RECORD_COLUMNS)
NOT_A_SETTING = ("seed", "adapter.name")  # a table's rows already split by adapter; seeds are aggregated

Record = tuple[Path, RunRecord]
log = logging.getLogger("qtha")


class RecordError(ValueError):
    """A record the report cannot read; the message is one line naming the file and the field."""


def load(results: str | Path, experiments: Sequence[str] = (), skipped: Optional[list[str]] = None) -> list[Record]:
    """Every record under ``<results>/runs/<experiment>/`` (only the named experiments when given), checked,
    one per experiment and config (:func:`unique`). A record that cannot be read raises :class:`RecordError`,
    or, given a ``skipped`` list, is left out with its one-line reason appended there (the report goes on
    for everything else and says what it left out)."""
    root = Path(results) / "runs"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = [f.name for f in folders if record_files(f)]
    if not found:
        raise RecordError(f"{root}: no run records (*.json) found")
    missing = [e for e in experiments if e not in found]
    if missing:
        raise RecordError(f"{root}: no records for experiment {missing[0]!r}; found: {', '.join(found)}")
    wanted = set(experiments or found)
    readable: list[Record] = []
    for path in (p for f in folders if f.name in wanted for p in record_files(f)):
        try:
            readable.append((path, check(path)))
        except RecordError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
    kept, duplicates = unique(readable)
    for path in duplicates:
        log.warning("qtha: %s repeats the config of another record of its experiment; left out", path)
    return kept



def check(path: Path) -> RunRecord:
    """The record at ``path``, upgraded, when this report can read it; RecordError naming the field otherwise."""
    def fail(problem: str) -> None:
        raise RecordError(f"{path}: {problem}")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RecordError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        fail(f"a record is a JSON object, not {type(raw).__name__}")
    if "schema_version" not in raw:
        fail("required field 'schema_version' is missing")
    for name, kind in {"status": str, "experiment": str, "config": dict, "metrics": dict}.items():
        if name not in raw:
            fail(f"required field {name!r} is missing (schema_version {raw['schema_version']})")
        if not isinstance(raw[name], kind):
            fail(f"field {name!r} is {type(raw[name]).__name__}, expected {kind.__name__}")
    if raw["status"] not in STATUSES:
        fail(f"field 'status' is {raw['status']!r}; allowed: {', '.join(STATUSES)}")
    if not isinstance(raw["config"].get("adapter"), dict) or "name" not in raw["config"]["adapter"]:
        fail("required field 'config.adapter.name' is missing")
    if "seed" not in raw["config"]:
        fail("required field 'config.seed' is missing")
    try:
        rec = load_record(path)
    except ValueError as exc:
        raise RecordError(str(exc)) from exc
    if rec.status == "ok" and "loss" not in rec.metrics:
        fail("required field 'metrics.loss' is missing from an ok record")
    for i, ev in enumerate(rec.evaluations):
        if not (isinstance(ev, dict) and "tag" in ev and isinstance(ev.get("metrics"), dict)):
            fail(f"evaluations[{i}] needs 'tag' and a 'metrics' object")
    return rec


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def effective(rec: RunRecord) -> dict[str, Any]:
    """The record's flat config with ``trainer.precision: auto`` replaced by what it resolved to on the run's
    machine (``rec.precision``): auto means bf16 on a CPU with native bf16 and fp32 on one without, so two runs of
    one config on two CPUs can train at different precisions, and the report must tell them apart."""
    flat = flatten(semantic(rec.config))
    if flat.get("trainer.precision") == "auto" and rec.precision:
        flat["trainer.precision"] = rec.precision
    return flat


def settings(records: Iterable[Record]) -> dict[Path, str]:
    """Per record, ``key=value`` for each config value that differs between the records of its experiment.

    An ``adapter.*`` knob counts as varying only among records of the same adapter (LoRA's
    ``target_modules`` differing from ``adapter=none``'s says nothing the adapter column does not).
    """
    by_experiment: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, rec in records:
        by_experiment.setdefault(rec.experiment, []).append((path, effective(rec)))
    out: dict[Path, str] = {}
    for rows in by_experiment.values():
        values: dict[tuple[str, Any], set[str]] = {}
        for _, flat in rows:
            for key, value in flat.items():
                scope = flat["adapter.name"] if key.startswith("adapter.") else None
                values.setdefault((key, scope), set()).add(_show(value))
        varying = {k for (k, _), v in values.items() if len(v) > 1 and k not in NOT_A_SETTING}
        for path, flat in rows:
            out[path] = " ".join(f"{k}={_show(flat[k])}" for k in sorted(varying) if k in flat
                                 and len(values[(k, flat["adapter.name"] if k.startswith("adapter.") else None)]) > 1)
    return out


def unique(records: Sequence[Record]) -> tuple[list[Record], list[Path]]:
    """One record per experiment and config (schema-1 sweeps could store one config twice, under two
    spellings): a finished one first, then the latest. Returns (kept, the paths left out)."""
    def rank(i: int) -> tuple[bool, str, str]:
        path, rec = records[i]
        return rec.status == "ok", rec.finished_at or "", str(path)

    best: dict[tuple[str, str], int] = {}
    for i, (_, rec) in enumerate(records):
        key = (rec.experiment, rec.config_hash)
        if key not in best or rank(i) > rank(best[key]):
            best[key] = i
    chosen = set(best.values())
    return ([r for i, r in enumerate(records) if i in chosen],
            [p for i, (p, _) in enumerate(records) if i not in chosen])


def knobs(adapter: dict[str, Any]) -> dict[str, Any]:
    """Adapter knobs as the layer builds them: QTHA's ``n_qubits`` resolves to its default (the rank) and
    ``qnn_layers`` to its (the qubit count); lists read ``8-16-8``."""
    values = {k: adapter.get(k) for k in KNOBS}
    if isinstance(values["bond_dim"], list):
        values["bond_dim"] = "-".join(map(str, values["bond_dim"]))
    if adapter["name"] == "qtha":
        if values["n_qubits"] is None:
            values["n_qubits"] = values["rank"]
        if values["qnn_layers"] is None:
            values["qnn_layers"] = values["n_qubits"]
    return values


def _label(adapter: dict[str, Any]) -> str:
    """The adapter column: its name, with the ablation and the classical branch when they are not QTHA's own
    (``qtha (mlp_qnn)``, ``qtha (silu_mlp L2)``), so an experiment that runs one of them alone does not read as
    QTHA itself."""
    parts = [adapter["variant"]] if adapter.get("variant") not in (None, "full") else []
    if adapter.get("branch") not in (None, "qnn"):
        parts.append(f"{adapter['branch']} L{adapter.get('mlp_layers')}")
    return f"{adapter['name']} ({', '.join(parts)})" if parts else adapter["name"]


def _identity(path: Path, rec: RunRecord, setting: str) -> dict[str, Any]:
    cfg = rec.config
    adapter = cfg["adapter"]["name"]
    error = (rec.error or {}).get("message", "")
    return {
        "experiment": rec.experiment, "run": path.stem, "config_hash": rec.config_hash, "status": rec.status,
        "adapter": adapter, "label": _label(cfg["adapter"]), "eval_tag": "", "setting": setting, "seed": cfg["seed"],
        "model": (cfg.get("model") or {}).get("name"), "data": (cfg.get("data") or {}).get("name"),
        "data_size": (cfg.get("data") or {}).get("size"), "max_steps": (cfg.get("trainer") or {}).get("max_steps"),
        "git_sha": rec.git_sha,
        "error": f"{rec.error['type']}: {error.strip().splitlines()[0] if error.strip() else ''}" if rec.error else "",
        "path": str(path), **knobs(cfg["adapter"]),
    }


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in METRIC_KEYS if isinstance(metrics.get(k), (int, float))}


def frame(records: Sequence[Record]) -> pd.DataFrame:
    """One row per record and per re-evaluation (label ``adapter (eval: <tag>)``), every column present."""
    setting = settings(records)
    rows = []
    for path, rec in records:
        base = _identity(path, rec, setting[path])
        params = {"trainable_params": rec.trainable_params}
        rows.append({**base, **_metrics(rec.metrics), **params})
        for ev in rec.evaluations:
            rows.append({**base, "label": f"{base['label']} (eval: {ev['tag']})", "eval_tag": ev["tag"],
                         **_metrics(ev["metrics"]), **params})
    return pd.DataFrame(rows, columns=[*IDENTITY, *KNOBS, *METRIC_KEYS])


def history(records: Sequence[Record]) -> pd.DataFrame:
    """Per-step ``train_loss`` / ``val_loss`` of the finished runs, long format, for the curves."""
    setting = settings(records)
    rows = []
    for path, rec in records:
        if rec.status != "ok":
            continue
        for h in rec.history:
            rows.append({"experiment": rec.experiment, "label": _label(rec.config["adapter"]),
                         "setting": setting[path], "seed": rec.config["seed"], "step": h.get("step"),
                         "train_loss": h.get("train_loss"), "val_loss": h.get("val_loss")})
    return pd.DataFrame(rows, columns=["experiment", "label", "setting", "seed", "step", "train_loss", "val_loss"])
