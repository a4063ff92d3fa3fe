"""The adapter registry: ``adapter.name`` → (config schema, layer), one entry per method.

Each method's module registers itself once (peft's ``register_peft_method`` / fairseq's
``register_*`` shape): its config dataclass, its layer class and, through the layer, its own
checks. Everything that lists adapters — Hydra's schemas, validation, injection, counting —
reads this table, so a new adapter is one ``.py`` (found by ``qtha/adapters/__init__.py``), one
``conf/adapter/<name>.yaml`` and one case in ``tests/adapters/test_contract.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from qtha.adapters.base import AdapterConfig, AdapterLayer
from qtha.errors import ConfigError, one_of, positive


@dataclass(frozen=True)
class AdapterSpec:
    """A registered method: its schema and its layer (``None``: freeze only, ``adapter=none``)."""

    name: str
    config: type[AdapterConfig]
    layer: Optional[type[AdapterLayer]]


ADAPTERS: dict[str, AdapterSpec] = {}


def register_adapter(name: str, config: type[AdapterConfig], layer: Optional[type[AdapterLayer]]) -> AdapterSpec:
    """Add a method; registering a second, different method under a taken name is an error."""
    spec = AdapterSpec(name, config, layer)
    if ADAPTERS.get(name, spec) != spec:
        raise ValueError(f"adapter {name!r} is already registered by {ADAPTERS[name].config.__module__}")
    if config.name != name:
        raise ValueError(f"register_adapter({name!r}): {config.__name__}.name defaults to {config.name!r}")
    ADAPTERS[name] = spec
    return spec


def adapter_spec(name: str) -> AdapterSpec:
    """The registered method ``name`` (ValueError listing the registered ones otherwise)."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; allowed: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name]


def check_adapter(cfg: Any) -> None:
    """The ``adapter`` group's checks: the shared fields, then the method's own (one-line ConfigErrors)."""
    one_of("adapter.name", cfg.name, sorted(ADAPTERS))
    positive("adapter.rank", cfg.rank)
    if cfg.alpha is not None:
        positive("adapter.alpha", cfg.alpha)
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"adapter.dropout={cfg.dropout!r} must be in [0, 1)")
    layer = ADAPTERS[cfg.name].layer
    if layer is not None and not cfg.target_modules:
        raise ConfigError(f"adapter.target_modules is empty; adapter={cfg.name} needs at least one module name")
    if layer is not None:
        layer.check_config(cfg)
