"""Run records → pandas DataFrames: one row per record plus one per re-evaluation.

Every report reads records through here, so a record this code does not understand (an
unknown ``schema_version``, a missing or mistyped field) stops the report with one line
naming the file and the field, instead of yielding a table with silently empty columns.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from qtha.report.columns import KNOBS, RECORD_COLUMNS
from qtha.results import SCHEMA_VERSION, STATUSES

KNOWN_SCHEMA_VERSIONS = (SCHEMA_VERSION,)
REQUIRED: dict[str, type] = {"status": str, "experiment": str, "run_key": str, "config": dict, "overrides": list,
                             "metrics": dict}
IDENTITY = ("experiment", "run_key", "status", "adapter", "label", "eval_tag", "setting", "seed", "model", "data",
            "data_size", "max_steps", "git_sha", "error", "path")
METRIC_KEYS = tuple(c.key for c in RECORD_COLUMNS)

Record = tuple[Path, dict[str, Any]]


class RecordError(ValueError):
    """A record the report cannot read; the message is one line naming the file and the field."""


def load(results: str | Path, experiments: Sequence[str] = ()) -> list[Record]:
    """Every ``<results>/runs/<experiment>/*.json`` (only the named experiments when given), checked."""
    root = Path(results) / "runs"
    paths = sorted(root.rglob("*.json")) if root.is_dir() else []
    if not paths:
        raise RecordError(f"{root}: no run records (*.json) found")
    found = sorted({p.relative_to(root).parts[0] for p in paths})
    missing = [e for e in experiments if e not in found]
    if missing:
        raise RecordError(f"{root}: no records for experiment {missing[0]!r}; found: {', '.join(found)}")
    wanted = set(experiments or found)
    return [(p, check(p, _read(p))) for p in paths if p.relative_to(root).parts[0] in wanted]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RecordError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from exc


def check(path: Path, rec: Any) -> dict[str, Any]:
    """The record itself when this report knows its schema; RecordError naming the field otherwise."""
    def fail(problem: str) -> None:
        raise RecordError(f"{path}: {problem}")

    if not isinstance(rec, dict):
        fail(f"a record is a JSON object, not {type(rec).__name__}")
    if "schema_version" not in rec:
        fail("required field 'schema_version' is missing")
    version = rec["schema_version"]
    if version not in KNOWN_SCHEMA_VERSIONS:
        fail(f"schema_version {version!r} is unknown; this report reads {', '.join(map(str, KNOWN_SCHEMA_VERSIONS))}")
    for name, kind in REQUIRED.items():
        if name not in rec:
            fail(f"required field {name!r} is missing (schema_version {version})")
        if not isinstance(rec[name], kind):
            fail(f"field {name!r} is {type(rec[name]).__name__}, expected {kind.__name__}")
    if rec["status"] not in STATUSES:
        fail(f"field 'status' is {rec['status']!r}; allowed: {', '.join(STATUSES)}")
    if not isinstance(rec["config"].get("adapter"), dict) or "name" not in rec["config"]["adapter"]:
        fail("required field 'config.adapter.name' is missing")
    if "seed" not in rec["config"]:
        fail("required field 'config.seed' is missing")
    if rec["status"] == "ok" and "loss" not in rec["metrics"]:
        fail("required field 'metrics.loss' is missing from an ok record")
    for i, ev in enumerate(rec.get("evaluations") or []):
        if not (isinstance(ev, dict) and "tag" in ev and isinstance(ev.get("metrics"), dict)):
            fail(f"evaluations[{i}] needs 'tag' and a 'metrics' object")
    return rec


def _setting(run_key: str) -> str:
    """The run key minus adapter and seed: what defines a comparable setting (e.g. ``data.size=300``)."""
    return " ".join(p for p in run_key.split("__") if not p.startswith(("seed=", "adapter=")))


def _knobs(adapter: dict[str, Any]) -> dict[str, Any]:
    """Adapter knobs; QTHA's ``n_qubits`` resolves to its default (the rank), lists read ``8-16-8``."""
    values = {k: adapter.get(k) for k in KNOBS}
    if isinstance(values["bond_dim"], list):
        values["bond_dim"] = "-".join(map(str, values["bond_dim"]))
    if adapter["name"] == "qtha" and values["n_qubits"] is None:
        values["n_qubits"] = values["rank"]
    return values


def _identity(path: Path, rec: dict[str, Any]) -> dict[str, Any]:
    cfg = rec["config"]
    adapter = cfg["adapter"]["name"]
    return {
        "experiment": rec["experiment"], "run_key": rec["run_key"], "status": rec["status"], "adapter": adapter,
        "label": adapter, "eval_tag": "", "setting": _setting(rec["run_key"]), "seed": cfg["seed"],
        "model": (cfg.get("model") or {}).get("name"), "data": (cfg.get("data") or {}).get("name"),
        "data_size": (cfg.get("data") or {}).get("size"), "max_steps": (cfg.get("trainer") or {}).get("max_steps"),
        "git_sha": rec.get("git_sha"), "error": (rec.get("error") or "").strip().split("\n")[0], "path": str(path),
        **_knobs(cfg["adapter"]),
    }


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in METRIC_KEYS if isinstance(metrics.get(k), (int, float))}


def frame(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record and per re-evaluation (label ``adapter (eval: <tag>)``), every column present."""
    rows = []
    for path, rec in records:
        base = _identity(path, rec)
        params = {"trainable_params": rec.get("trainable_params", 0)}
        rows.append({**base, **_metrics(rec["metrics"]), **params})
        for ev in rec.get("evaluations") or []:
            rows.append({**base, "label": f"{base['adapter']} (eval: {ev['tag']})", "eval_tag": ev["tag"],
                         **_metrics(ev["metrics"]), **params})
    return pd.DataFrame(rows, columns=[*IDENTITY, *KNOBS, *METRIC_KEYS])


def history(records: Iterable[Record]) -> pd.DataFrame:
    """Per-step ``train_loss`` / ``val_loss`` of the finished runs, long format, for the curves."""
    rows = []
    for path, rec in records:
        if rec["status"] != "ok":
            continue
        base = _identity(path, rec)
        for h in rec["metrics"].get("history") or []:
            rows.append({"experiment": base["experiment"], "label": base["label"], "setting": base["setting"],
                         "seed": base["seed"], "step": h.get("step"), "train_loss": h.get("train_loss"),
                         "val_loss": h.get("val_loss")})
    return pd.DataFrame(rows, columns=["experiment", "label", "setting", "seed", "step", "train_loss", "val_loss"])
