"""The one error type for bad input, and the two checks every owner words the same way.

A leaf: it imports nothing from qtha, so every module (schemas, owners, the compose-level
orchestrator) can raise it without an import circle.
"""
from __future__ import annotations

import math
from typing import Any, Iterable


class ConfigError(ValueError):
    """A bad config value; its message is one line naming the value and what is allowed."""


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """``key=value`` must be one of ``allowed`` (the message lists them)."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def positive(key: str, value: Any) -> None:
    """``key=value`` must be a finite number > 0 (NaN and inf are not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{key}={value!r} must be > 0")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number > 0")
