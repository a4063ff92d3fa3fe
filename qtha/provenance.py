"""What produced a number: code version (git sha, uncommitted changes), library versions, machine."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

_VERSIONED = ("torch", "lightning", "transformers", "hydra-core", "pennylane", "pennylane-lightning",
              "wandb", "datasets", "evaluate", "peft", "qtha")
_HERE = Path(__file__).resolve().parent


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=_HERE, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_sha() -> Optional[str]:
    """The commit qtha's code is at (None outside a git checkout, e.g. an installed wheel)."""
    out = _git("rev-parse", "HEAD")
    return out.strip() or None if out is not None else None


def git_dirty() -> Optional[bool]:
    """Whether the checkout has changes outside ``results/`` (tracked or untracked, not ignored), i.e.
    whether ``git_sha`` alone reproduces the code; records written during a sweep do not count."""
    out = _git("status", "--porcelain", "--", ".", ":(exclude)results")
    return None if out is None else bool(out.strip())


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def environment() -> dict[str, Any]:
    """Machine facts that explain a number: CPU count, platform, accelerator, threads."""
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
