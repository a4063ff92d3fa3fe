"""Dataset registry: ``data.name`` → a loader returning (training pool, fixed test split).

Each example is ``{"messages": [...chat turns, last one the assistant target...], ...}``
plus optional fields (``answer`` for maths). Adding a dataset = one module + one entry here
+ one YAML in ``conf/data/``.
"""
from __future__ import annotations

from typing import Any, Callable

from qtha.config import ConfigError, DataConfig
from qtha.data import synthetic_math

Example = dict[str, Any]
Loader = Callable[[DataConfig], tuple[list[Example], list[Example]]]


def _synthetic_math(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    train, test = synthetic_math.make_splits(cfg.pool_size, cfg.test_size, cfg.data_seed, cfg.languages)
    as_example = lambda p: {"messages": synthetic_math.to_messages(p), "answer": p.answer, "lang": p.lang}  # noqa: E731
    return [as_example(p) for p in train], [as_example(p) for p in test]


DATASETS: dict[str, Loader] = {
    "synthetic_math": _synthetic_math,
}


def load_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    """The training pool and the fixed test split of ``cfg.name``."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"data.name={cfg.name!r} is unknown; allowed: {', '.join(sorted(DATASETS))}")
    return DATASETS[cfg.name](cfg)
