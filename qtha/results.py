"""Run records (schema v2): one JSON per run at ``<results_dir>/runs/<experiment>/<label>__<hash>.json``.

Modelled on peft's ``method_comparison`` harness: a record carries the resolved config and its
hash (:mod:`qtha.identity`), scalar metrics, the training history, a summary and fingerprint of
the data, the decoding settings, per-phase timings (:func:`timed_phase`), the QNN's circuit and shot
account (``quantum_resources``; null without a QNN and in records written before it existed), the
error if any, and provenance. A record
is *the* run of its config: :func:`find_run` looks one up by comparing resolved configs, never
by file name, so a second spelling of a config finds the first record and a changed config
never does. Every record on disk is read through :func:`upgrade` (older schemas included) and
written atomically (temp file, fsync, rename), so a crash never leaves a half-written record.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from omegaconf import OmegaConf

from qtha.adapters import ADAPTERS
from qtha.config import DataConfig, ModelConfig, RunConfig
from qtha.errors import ConfigError
from qtha.identity import canonical, config_hash
from qtha.scrub import scrub

SCHEMA_VERSION = 2
KNOWN_SCHEMA_VERSIONS = (1, 2)
STATUSES = ("ok", "failed", "running")


@dataclass
class RunRecord:
    """What one run leaves behind (SPEC §4 and §6)."""

    status: str
    experiment: str
    label: str
    config_hash: str
    config: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # scalars only: losses, PPLs, generation scores
    history: list[dict[str, float]] = field(default_factory=list)  # per step: train_loss, lr, val_loss
    data_summary: dict[str, Any] = field(default_factory=dict)  # rows, tokens, truncation per split
    data_fingerprint: Optional[str] = None  # sha256 of the examples the run read (qtha.data.fingerprint)
    generation: Optional[dict[str, Any]] = None  # decoding settings and what came out
    timings: dict[str, float] = field(default_factory=dict)  # load / train / validate / generate / score seconds
    quantum_resources: Optional[dict[str, Any]] = None  # circuits and shots of the QNN modules (qtha.quantum.resources)
    precision: Optional[str] = None
    trainable_params: int = 0
    total_params: int = 0
    trainable_per_module: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0
    peak_rss_mb: float = 0.0
    git_sha: Optional[str] = None
    git_dirty: Optional[bool] = None
    versions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    wandb_run: Optional[str] = None
    adapter_path: Optional[str] = None
    predictions_path: Optional[str] = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    rescored: list[dict[str, Any]] = field(default_factory=list)  # metric values a redefinition replaced
    resumed_from: Optional[str] = None
    error: Optional[dict[str, str]] = None  # {type, message, traceback}
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    schema_version: int = SCHEMA_VERSION

    @property
    def stem(self) -> str:
        """The file name a new record of this run gets (without ``.json``)."""
        return f"{self.label}__{self.config_hash}"

    def to_json(self) -> str:
        """The record as written to disk: credentials scrubbed (see :func:`qtha.scrub.scrub`)."""
        return json.dumps(scrub(asdict(self)), indent=2, ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        """A record from any known schema (through :func:`upgrade`); unknown fields are an error."""
        data = upgrade(data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown record field {unknown[0]!r} (schema_version {data['schema_version']})")
        return cls(**data)


@contextlib.contextmanager
def timed_phase(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's seconds to ``timings[key]`` even when it raises, so a failed run's record keeps the
    phases that ran (and how long the failing one ran before it failed)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - start, 3)


# --------------------------------------------------------------------------- paths and I/O
def record_path(results_dir: str | Path, experiment: str, stem: str) -> Path:
    return Path(results_dir) / "runs" / experiment / f"{stem}.json"


def predictions_path(record_file: str | Path, tag: str = "") -> Path:
    """``<stem>.predictions[.<tag>].jsonl`` beside the record (tag: a re-evaluation)."""
    record_file = Path(record_file)
    stem = record_file.name[: -len(".json")] if record_file.name.endswith(".json") else record_file.stem
    return record_file.with_name(f"{stem}.predictions{'.' + tag if tag else ''}.jsonl")


def current_umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory, fsync, then rename over the target. The file gets the
    mode a plain ``open`` would give (0666 less the umask: collaborators on a shared results folder can read
    it), not ``mkstemp``'s 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def set_aside(path: Path) -> Optional[Path]:
    """Rename an existing file that is about to be replaced by a new record to ``<name>.corrupt[.k]``
    (not ``*.json``: no reader takes it for a record); returns the new name, None when there was no file."""
    if not path.exists():
        return None
    target, k = path.with_name(path.name + ".corrupt"), 1
    while target.exists():
        target, k = path.with_name(f"{path.name}.corrupt.{k}"), k + 1
    path.rename(target)
    return target


def write_record(record: RunRecord, path: Path) -> Path:
    atomic_write_text(path, record.to_json() + "\n")
    return path


def load_record(path: str | Path) -> RunRecord:
    """Read and upgrade one record file (ValueError with a one-line reason when it cannot be)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a record is a JSON object, not {type(data).__name__}")
    try:
        return RunRecord.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def record_files(folder: Path) -> list[Path]:
    """The record files of one experiment folder (not the predictions beside them)."""
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def find_run(results_dir: str | Path, experiment: str, config: Any) -> Optional[tuple[Path, RunRecord]]:
    """The record of this very config in ``experiment``, if any: an ``ok`` one first, else the latest.

    Compares the stored (upgraded) and the composed *semantic* configs, whatever the files are
    called, so what is reused or resumed is exactly what was asked for. Unreadable files are no match.
    """
    wanted = canonical(config)
    matches: list[tuple[Path, RunRecord]] = []
    for path in record_files(Path(results_dir) / "runs" / experiment):
        try:
            record = load_record(path)
        except (OSError, ValueError):
            continue
        if canonical(record.config) == wanted:
            matches.append((path, record))
    if not matches:
        return None
    return max(matches, key=lambda m: (m[1].status == "ok", m[1].finished_at or "", m[1].started_at or ""))


SEARCHED = ("workspace", "results")  # where an adapter file's record is looked for by default


def find_record(path: Path, results_dirs: Sequence[Path]) -> Path:
    """The record itself, or the record whose ``adapter_path`` is this checkpoint."""
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(f"record {str(path)!r} does not exist; allowed: a <results>/runs/<experiment>/<run>.json")
        return path
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist; allowed: a record .json or an adapter "
                          ".safetensors written by a run")
    target = path.resolve()
    for results in results_dirs:
        for folder in sorted((results / "runs").glob("*")):
            for candidate in record_files(folder):
                try:
                    saved = load_record(candidate).adapter_path
                except (OSError, ValueError):
                    continue
                if saved and Path(saved).resolve() == target:
                    return candidate
    raise ConfigError(f"no record under {', '.join(f'{d}/runs' for d in results_dirs)} names adapter {str(path)!r}; "
                      "allowed: pass the run's record .json (it holds the config the adapter was trained with)")


def finished_record(record_file: Path) -> tuple[RunRecord, Optional[str]]:
    """A finished (``ok``) record and its adapter file (``None`` when it trained nothing): what re-evaluating or
    exporting a run starts from; anything else is a one-line :class:`ConfigError` naming the file."""
    try:
        record = load_record(record_file)
    except (OSError, ValueError) as exc:  # a truncated or foreign file: one line naming it, no traceback
        raise ConfigError(f"{exc}; allowed: a run record written by python -m qtha.run") from None
    if record.status != "ok":
        raise ConfigError(f"record {record_file} has status={record.status!r}; allowed: a finished run (ok)")
    if record.trainable_params == 0:
        return record, None
    if not (record.adapter_path and Path(record.adapter_path).is_file()):
        raise ConfigError(f"the adapter of {record_file} ({record.adapter_path!r}) is missing; allowed: a record "
                          "whose adapter file still exists (trainer.save_adapter=true)")
    return record, record.adapter_path


# --------------------------------------------------------------------------- old schemas
def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A record dict of any known schema as schema v2: the one way records are read.

    The config gains the keys added to the schemas since it was written, at their defaults, and
    is hashed again, so it compares like a config composed today (a new key's default must
    therefore keep the old behaviour, else the schema version goes up); keys that no longer exist
    are kept (a config that set them never equals a new one). Schema 1 kept everything under
    ``metrics``: it is split into scalar metrics, history, data summary, generation settings and
    precision, and its error string becomes ``{type, message, traceback}``.
    """
    version = data.get("schema_version")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise ValueError(f"schema_version {version!r} is unknown; this qtha reads "
                         f"{', '.join(map(str, KNOWN_SCHEMA_VERSIONS))}")
    if not isinstance(data.get("config"), dict):
        raise ValueError("required field 'config' is missing or not an object")
    rec = dict(data)
    config = with_defaults(_legacy_v1(rec["config"]) if version == 1 else rec["config"])
    if version == SCHEMA_VERSION:
        return {**rec, "config": config, "config_hash": config_hash(config)}
    metrics = dict(rec.pop("metrics", None) or {})
    environment = dict(rec.get("environment") or {})
    error = rec.get("error")
    return {
        **{k: v for k, v in rec.items() if k not in ("run_key", "error", "environment", "config")},
        "label": rec.get("run_key") or "",
        "config_hash": config_hash(config),
        "config": config,
        **_split_metrics(metrics),
        "environment": environment,
        "error": None if not error else _error_dict(error, environment.pop("traceback", "")),
        "evaluations": [_upgrade_evaluation(e) for e in rec.get("evaluations") or []],
        "schema_version": SCHEMA_VERSION,
    }


# Keys added with schema 2 whose defaults changed the behaviour: a schema-1 record ran the earlier one.
_LEGACY_V1 = {"qtha": {"init": "spec_v1"}, "quanta": {"layout": "exact"}}


def _legacy_v1(config: dict[str, Any]) -> dict[str, Any]:
    adapter = dict(config.get("adapter") or {})
    for key, value in _LEGACY_V1.get(adapter.get("name"), {}).items():
        adapter.setdefault(key, value)
    return {**config, "adapter": adapter}


def _split_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Schema 1's all-in-one ``metrics`` → v2's scalar metrics and the structured fields."""
    history = metrics.pop("history", None) or []
    data_summary = metrics.pop("data", None) or {}
    generation = metrics.pop("generation", None)
    notes = metrics.pop("metric_notes", None)
    if generation is not None and notes is not None:
        generation = {**generation, "metric_notes": notes}
    precision = metrics.pop("precision", None)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"metrics": scalars, "history": history, "data_summary": data_summary, "generation": generation,
            "precision": precision}


def _upgrade_evaluation(entry: dict[str, Any]) -> dict[str, Any]:
    split = _split_metrics(dict(entry.get("metrics") or {}))
    return {**entry, "metrics": split["metrics"], "generation": split["generation"]}


def _error_dict(error: str, traceback: str) -> dict[str, str]:
    kind, sep, message = str(error).partition(": ")
    if not sep or not kind.isidentifier():
        kind, message = "Error", str(error)
    return {"type": kind, "message": message, "traceback": traceback}


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every schema key it lacks added at its default (existing values untouched)."""
    return _fill(config, _defaults((config.get("adapter") or {}).get("name")))


@functools.lru_cache(maxsize=None)
def _defaults(adapter: Optional[str]) -> dict[str, Any]:
    def schema(node: type) -> dict[str, Any]:
        return OmegaConf.to_container(OmegaConf.structured(node), resolve=False)  # type: ignore[return-value]

    defaults = schema(RunConfig)
    defaults["model"], defaults["data"] = schema(ModelConfig), schema(DataConfig)
    defaults["adapter"] = schema(ADAPTERS[adapter].config) if adapter in ADAPTERS else {}
    return defaults


def _fill(value: Any, defaults: Any) -> Any:
    if not (isinstance(value, dict) and isinstance(defaults, dict)):
        return value
    out = {k: _fill(v, defaults.get(k)) for k, v in value.items()}
    for key, default in defaults.items():
        out.setdefault(key, copy.deepcopy(default))
    return out
