"""peft's on-disk LoRA / DoRA format, both ways: qtha's LoRA and DoRA layers are peft's computation with peft's
parameter names, so a checkpoint converts by renaming keys and writing (or reading) peft's config keys.

peft saves ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` and DoRA's magnitude as
``<module>.lora_magnitude_vector`` (no ``.weight``, no adapter name); its scale is ``lora_alpha / r``
(``lora_alpha / √r`` with ``use_rslora``). The config written here holds peft's keys only, so peft needs no
qtha, and qtha needs no peft to write it (peft is the oracle in the tests).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional

from torch import Tensor

from qtha.adapters import AdapterConfig, adapter_spec
from qtha.adapters.base import alpha_of
from qtha.errors import ConfigError

PREFIX = "base_model.model."
USE_DORA = {"lora": False, "dora": True}  # the qtha methods peft's LoRA format holds
MAGNITUDE = "lora_magnitude_vector"
_PARTS = ("lora_A.weight", "lora_B.weight", MAGNITUDE)
# peft options that change what a LoRA checkpoint computes and that qtha's layers do not implement: a file that
# sets one of them is refused, never loaded as something else.
_UNSUPPORTED = {"bias": "none", "fan_in_fan_out": False, "modules_to_save": None, "lora_bias": False,
                "rank_pattern": {}, "alpha_pattern": {}, "layer_replication": None, "use_qalora": False,
                "trainable_token_indices": None, "target_parameters": None, "alora_invocation_tokens": None}


def peft_config(cfg: Any, wrapped: list[str], base_model: Optional[str]) -> dict[str, Any]:
    """peft's ``adapter_config.json`` for a qtha LoRA/DoRA config. ``target_modules``: the config's plain names
    when it has only those (peft matches them as qtha does), else the wrapped modules by full name (a ``re:``
    pattern has no exact peft spelling)."""
    if cfg.name not in USE_DORA:
        raise ConfigError(f"--format peft holds LoRA and DoRA; adapter={cfg.name} is not one of them; allowed: "
                          "--format merged (mergeable adapters) or --format qtha (any adapter)")
    patterns = list(cfg.target_modules)
    plain = not any(p.startswith("re:") for p in patterns)
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model, "revision": None,
            "r": int(cfg.rank), "lora_alpha": alpha_of(cfg), "lora_dropout": float(cfg.dropout),
            "target_modules": patterns if plain else sorted(wrapped), "use_dora": USE_DORA[cfg.name],
            "use_rslora": False, "init_lora_weights": True, "inference_mode": True,
            "layers_to_transform": None, "layers_pattern": None, **_UNSUPPORTED}


def to_peft_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """qtha's LoRA/DoRA adapter tensors under peft's saved names."""
    out = {}
    for key, tensor in state.items():
        peft_key = key[: -len(".weight")] if key.endswith(f".{MAGNITUDE}.weight") else key
        out[PREFIX + peft_key] = tensor.contiguous()
    return out


def from_peft(config: Mapping[str, Any], state: Mapping[str, Tensor], where: str) -> tuple[AdapterConfig, dict[str, Tensor]]:
    """A peft LoRA/DoRA checkpoint as qtha's adapter config and tensors. The modules to wrap are read from the
    weights themselves (each by its full name), so any peft targeting — a list, a regex, ``all-linear``,
    ``layers_to_transform``, ``exclude_modules`` — gives exactly the modules the file trained."""
    if config.get("peft_type") != "LORA":
        raise ConfigError(f"{where}: peft_type={config.get('peft_type')!r}; allowed: LORA (with or without use_dora)")
    for key, default in _UNSUPPORTED.items():
        value = config.get(key)
        if value is not None and value != default and (default or value):  # [] / {} / False mean "unset" too
            raise ConfigError(f"{where}: {key}={config[key]!r} is a peft option qtha does not implement; "
                              f"allowed: {key}={default!r}")
    tensors: dict[str, Tensor] = {}
    for key, tensor in state.items():
        name = key.removeprefix(PREFIX)
        part = next((p for p in _PARTS if name.endswith("." + p)), None)
        if part is None or not key.startswith(PREFIX):
            raise ConfigError(f"{where}: tensor {key!r} is not a LoRA weight; allowed: {PREFIX}<module>."
                              f"{{{', '.join(_PARTS)}}}")
        tensors[name + ".weight" if part == MAGNITUDE else name] = tensor
    modules = sorted({k.rsplit(".", 2)[0] for k in tensors})
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1 or not tensors:
        raise ConfigError(f"{where}: expected r (a positive int, got {rank!r}) and LoRA tensors (got {len(tensors)})")
    alpha = float(config["lora_alpha"]) * (math.sqrt(rank) if config.get("use_rslora") else 1.0)
    name = "dora" if config.get("use_dora") else "lora"
    cfg = adapter_spec(name).config(target_modules=[f"re:{re.escape(m)}" for m in modules], rank=rank, alpha=alpha,
                                    dropout=float(config.get("lora_dropout") or 0.0))
    return cfg, tensors
