"""Local ``evaluate`` modules, loadable offline with ``evaluate.load(evaluate_path(name))``.

Each module folder is a package only so that setuptools ships its script; the scripts themselves
delegate to ``qtha.metrics.score``.
"""
from __future__ import annotations

from pathlib import Path

MODULES = ("qtha_bleu4", "qtha_rouge", "qtha_math")


def evaluate_path(name: str) -> str:
    """The folder to pass to ``evaluate.load`` for one of ``MODULES``."""
    if name not in MODULES:
        raise ValueError(f"unknown evaluate module {name!r}; allowed: {', '.join(MODULES)}")
    return str(Path(__file__).resolve().parent / name)
