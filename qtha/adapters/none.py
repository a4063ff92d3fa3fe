"""``adapter=none``: the frozen model with no adapter, the zero-shot baseline (trains nothing)."""
from __future__ import annotations

from dataclasses import dataclass, field

from qtha.adapters.base import AdapterConfig
from qtha.adapters.registry import register_adapter


@dataclass
class NoAdapterConfig(AdapterConfig):
    """Full freeze, no adapter layers."""

    name: str = "none"
    target_modules: list[str] = field(default_factory=list)


register_adapter("none", NoAdapterConfig, None)
