"""Run records: one JSON per run under ``results/runs/<experiment>/<run-key>.json``.

Modelled on peft's ``method_comparison`` harness: each record carries the resolved config,
metrics, trainable-parameter count, git hash, versions and status, and a run whose record
is already ``ok`` is skipped. Records are written atomically (temp file, fsync, rename), so
a crash never leaves a half-written or corrupted record behind.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "running")
_VERSIONED = ("torch", "lightning", "transformers", "hydra-core", "pennylane", "pennylane-lightning",
              "wandb", "datasets", "evaluate", "peft", "qtha")


@dataclass
class RunRecord:
    """What one run leaves behind (SPEC §4 fields plus provenance)."""

    status: str
    experiment: str
    run_key: str
    config: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    trainable_params: int = 0
    total_params: int = 0
    trainable_per_module: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0
    peak_rss_mb: float = 0.0
    git_sha: Optional[str] = None
    versions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    wandb_run: Optional[str] = None
    adapter_path: Optional[str] = None
    predictions_path: Optional[str] = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: Optional[str] = None
    error: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """The record as written to disk: credentials scrubbed (see :func:`scrub`)."""
        return json.dumps(scrub(asdict(self)), indent=2, ensure_ascii=False, sort_keys=False)


# Overrides that change where or how a run is reported, not what it computes (``resume`` continues
# the same run; ``trainer.kill_at_step`` is a testing aid that interrupts it).
NON_SEMANTIC_KEYS = ("seed", "force", "resume", "results_dir", "work_dir", "name", "experiment", "logger",
                     "trainer.enable_progress_bar", "trainer.kill_at_step")

REDACTED = "<redacted>"
CREDENTIAL_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Env-style names (WANDB_API_KEY, HF_TOKEN, DB_PASSWORD) and config-style ones (logger.api_key, hf_token,
# password); not run_key, max_new_tokens or pad_token, which are no secrets.
_SECRET_NAME = re.compile(r"[A-Z0-9_]*(KEY|TOKEN|SECRET|PASSWORD|PASSWD)[A-Z0-9_]*"
                          r"|(?i:([\w.]*[_.])?(api_?key|access_?key|private_?key|secret(_?key)?|password|passwd"
                          r"|(hf|api|auth|access)_?token))")


def _secret_name(name: str) -> bool:
    return _SECRET_NAME.fullmatch(name.lstrip("+~")) is not None


def scrub(value: Any, secrets: Optional[list[str]] = None) -> Any:
    """``value`` with credentials redacted, so a record can be shared or committed as it is.

    Redacts what sits under a secret-looking name (a dict key, or the key of a ``key=value``
    override string) and, anywhere in any string, the value of a credential variable from the
    environment (``CREDENTIAL_ENV``): an API key pasted into an override or an error message.
    """
    if secrets is None:
        secrets = [v for v in (os.environ.get(k, "") for k in CREDENTIAL_ENV) if len(v) >= 8]
    if isinstance(value, dict):
        return {k: REDACTED if _secret_name(str(k)) and v is not None else scrub(v, secrets)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if not isinstance(value, str):
        return value
    name, eq, _ = value.partition("=")
    if eq and _secret_name(name):
        return f"{name}={REDACTED}"
    for secret in secrets:
        value = value.replace(secret, REDACTED)
    return value


def run_key(overrides: Iterable[str], seed: int) -> str:
    """A readable, filesystem-safe key from the task overrides and the seed.

    Sorted so ``a=1 b=2`` and ``b=2 a=1`` give the same record; the seed always appears
    because two seeds of the same setting are two records.
    """
    def semantic(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        return not any(key == k or key.startswith(k + ".") for k in NON_SEMANTIC_KEYS)

    parts = sorted(scrub(o) for o in overrides if semantic(o))
    parts.append(f"seed={seed}")
    key = "__".join(parts)
    key = re.sub(r"[^A-Za-z0-9_.=,+\-]", "-", key)
    return key[:200]


def record_path(results_dir: str | Path, experiment: str, key: str) -> Path:
    return Path(results_dir) / "runs" / experiment / f"{key}.json"


def predictions_path(record_file: str | Path, tag: str = "") -> Path:
    """``<run-key>.predictions[.<tag>].jsonl`` beside the record (tag: a re-evaluation)."""
    record_file = Path(record_file)
    stem = record_file.name[: -len(".json")] if record_file.name.endswith(".json") else record_file.stem
    return record_file.with_name(f"{stem}.predictions{'.' + tag if tag else ''}.jsonl")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def write_record(record: RunRecord, results_dir: str | Path) -> Path:
    path = record_path(results_dir, record.experiment, record.run_key)
    atomic_write_text(path, record.to_json() + "\n")
    return path


def load_record(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def is_done(results_dir: str | Path, experiment: str, key: str) -> bool:
    """True when a record for this key exists and finished ``ok`` (unreadable ⇒ not done)."""
    path = record_path(results_dir, experiment, key)
    try:
        return load_record(path).get("status") == "ok"
    except (OSError, ValueError):
        return False


def git_sha(cwd: str | Path | None = None) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def environment() -> dict[str, Any]:
    """Machine facts that explain a number: CPU count, platform, accelerator."""
    import torch

    env: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
