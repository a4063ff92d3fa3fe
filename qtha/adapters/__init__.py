"""Adapters: the layer contract (``base``), injection/counting/saving (``inject``), the registry, and
one module per method.

Every module here other than the infrastructure is a method that registers itself on import
(:func:`~qtha.adapters.registry.register_adapter`); they are all imported below, so a new method is
one new file — no list to extend.
"""
from __future__ import annotations

import importlib
import pkgutil

from qtha.adapters.base import AdapterConfig, AdapterLayer, AdapterMergeError
from qtha.adapters.inject import (
    LoadResult,
    adapter_class,
    adapter_layers,
    adapter_state_dict,
    count_total,
    count_trainable,
    expected_trainable,
    inject_adapters,
    load_adapter_file,
    load_adapter_state_dict,
    merge_adapters,
    save_adapter_file,
    unmerge_adapters,
    unwrap_merged,
)
from qtha.adapters.registry import ADAPTERS, AdapterSpec, adapter_spec, check_adapter, register_adapter

_INFRASTRUCTURE = {"base", "inject", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "AdapterLayer",
    "AdapterMergeError",
    "AdapterSpec",
    "LoadResult",
    "adapter_class",
    "adapter_layers",
    "adapter_spec",
    "adapter_state_dict",
    "check_adapter",
    "count_total",
    "count_trainable",
    "expected_trainable",
    "inject_adapters",
    "load_adapter_file",
    "load_adapter_state_dict",
    "merge_adapters",
    "register_adapter",
    "save_adapter_file",
    "unmerge_adapters",
    "unwrap_merged",
]
