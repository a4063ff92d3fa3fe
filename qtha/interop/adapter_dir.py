"""An adapter as a folder that attaches to any transformers causal LM: ``adapter_config.json`` plus
``adapter_model.safetensors`` (peft's file names).

Two kinds of folder share the layout. A *qtha* folder (``"format": "qtha-adapter"``) holds any method: the
whole adapter config (the registered dataclass's fields, so no Hydra is needed to rebuild it), how a QNN branch
executes (``quantum``), the base model's name and the modules it wrapped; every run writes one
(``adapter_dir/<experiment>/<run>/``). A *peft* LoRA/DoRA folder (``peft_type`` in its config, see
:mod:`qtha.interop.peft_format`) is read as qtha's own LoRA/DoRA. :func:`load_adapter` takes either.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from qtha.adapters import (ADAPTERS, AdapterConfig, adapter_class, check_adapter, inject_adapters,
                           load_adapter_state_dict, save_adapter_file)
from qtha.config import QuantumConfig
from qtha.errors import ConfigError
from qtha.identity import plain
from qtha.interop.peft_format import from_peft
from qtha.provenance import versions
from qtha.quantum.settings import check_quantum
from qtha.results import atomic_write_text
from qtha.scrub import scrub

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "qtha-adapter"
FORMAT_VERSION = 1


def describe(adapter: Any, quantum: Any, base_model: Optional[str], wrapped: list[str]) -> dict[str, Any]:
    """The ``adapter_config.json`` of a qtha folder (``quantum`` only where the method has a QNN branch)."""
    uses_quantum = bool(getattr(adapter_class(adapter.name), "uses_quantum", False))
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "qtha_version": versions().get("qtha"),
            "adapter": plain(adapter), "quantum": plain(quantum) if uses_quantum and quantum is not None else None,
            "base_model_name_or_path": base_model, "wrapped_modules": sorted(wrapped)}


def save_adapter_dir(model: nn.Module, out: str | os.PathLike[str], description: Mapping[str, Any]) -> Path:
    """Write the folder: weights first, the config last (credentials scrubbed, as in a record), each atomically,
    so a folder with a config is whole."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    save_adapter_file(model, folder / WEIGHTS_FILE)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(scrub(dict(description)), indent=2, ensure_ascii=False) + "\n")
    return folder


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's ``adapter_config.json`` (one-line errors naming the file)."""
    path = folder / CONFIG_FILE
    if not (path.is_file() and (folder / WEIGHTS_FILE).is_file()):
        raise ConfigError(f"{str(folder)!r} is not an adapter folder; allowed: a folder with {CONFIG_FILE} and "
                          f"{WEIGHTS_FILE} (written by qtha or peft)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON adapter config ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _dataclass(schema: type, fields: Any, where: str) -> Any:
    """``schema(**fields)``, naming a field this qtha does not know instead of a TypeError."""
    if not isinstance(fields, dict):
        raise ConfigError(f"{where}: expected an object, got {type(fields).__name__}")
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(fields.keys() - known)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not a field of {schema.__name__} (written by a newer qtha?); "
                          f"allowed: {', '.join(sorted(known))}")
    return schema(**fields)


def read_adapter_dir(folder: str | os.PathLike[str]) -> tuple[AdapterConfig, Optional[QuantumConfig], dict, dict]:
    """(adapter config, quantum config, tensors in qtha's names, the folder's config) of a qtha or peft folder,
    each checked as a run's config is (one-line :class:`ConfigError`)."""
    folder = Path(folder)
    config = read_config(folder)
    where = str(folder / CONFIG_FILE)
    try:
        state = load_file(os.fspath(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{folder / WEIGHTS_FILE}: not a safetensors file ({exc})") from None
    if "peft_type" in config:
        adapter, state = from_peft(config, state, where)
        quantum = None
    elif config.get("format") == FORMAT and config.get("format_version") == FORMAT_VERSION:
        fields = config.get("adapter") if isinstance(config.get("adapter"), dict) else {}
        methods = sorted(n for n, spec in ADAPTERS.items() if spec.layer is not None)
        if fields.get("name") not in methods:
            raise ConfigError(f"{where}: adapter.name={fields.get('name')!r}; allowed: {', '.join(methods)}")
        adapter = _dataclass(ADAPTERS[fields["name"]].config, fields, f"{where}: adapter")
        quantum = _dataclass(QuantumConfig, config["quantum"], f"{where}: quantum") if config.get("quantum") else None
        if quantum is not None:
            check_quantum(quantum)
    else:
        raise ConfigError(f"{where}: neither a qtha adapter config (format={FORMAT!r}, format_version="
                          f"{FORMAT_VERSION}) nor a peft one (peft_type); got keys {sorted(config)[:6]}")
    check_adapter(adapter)
    return adapter, quantum, state, config


def load_adapter(model: nn.Module, folder: str | os.PathLike[str], quantum: Optional[QuantumConfig] = None) -> nn.Module:
    """Attach the adapter saved in ``folder`` (qtha's or peft's LoRA/DoRA) to a transformers causal LM, in place:
    the model is frozen, the target linears wrapped, the trained weights loaded strictly (no missing or extra
    tensor). ``quantum`` overrides how a QNN branch executes (e.g. shots or noise); default: as it was trained.
    Returns the model, so ``model = qtha.load_adapter(AutoModelForCausalLM.from_pretrained(base), folder)``."""
    adapter, saved_quantum, state, _ = read_adapter_dir(folder)
    inject_adapters(model, adapter, quantum=quantum or saved_quantum)
    load_adapter_state_dict(model, state, strict=True)
    return model
