"""Adapter registry: config ``name`` -> layer class (``None`` = freeze only).

Adding a method: write ``<method>.py`` with an :class:`AdapterLayer` subclass, register
its config dataclass in ``qtha.config.ADAPTER_SCHEMAS`` and its class here, and append a
case to ``tests/adapters/test_contract.py``.
"""
from __future__ import annotations

from qtha.adapters.base import AdapterLayer, AdapterMergeError
from qtha.adapters.inject import (
    LoadResult,
    adapter_class,
    adapter_layers,
    adapter_state_dict,
    count_total,
    count_trainable,
    expected_trainable,
    inject_adapters,
    load_adapter,
    load_adapter_state_dict,
    merge_adapters,
    save_adapter,
    unmerge_adapters,
)
from qtha.adapters.dora import DoRALayer
from qtha.adapters.lora import LoRALayer
from qtha.adapters.qtha import QTHALayer
from qtha.adapters.quanta import QuanTALayer

# inject.py looks this up at call time, so the import order above does not matter.
ADAPTERS: dict[str, type[AdapterLayer] | None] = {
    "none": None,
    "lora": LoRALayer,
    "dora": DoRALayer,
    "quanta": QuanTALayer,
    "qtha": QTHALayer,
}

__all__ = [
    "ADAPTERS",
    "AdapterLayer",
    "AdapterMergeError",
    "DoRALayer",
    "LoRALayer",
    "QTHALayer",
    "LoadResult",
    "QuanTALayer",
    "adapter_class",
    "adapter_layers",
    "adapter_state_dict",
    "count_total",
    "count_trainable",
    "expected_trainable",
    "inject_adapters",
    "load_adapter",
    "load_adapter_state_dict",
    "merge_adapters",
    "save_adapter",
    "unmerge_adapters",
]
