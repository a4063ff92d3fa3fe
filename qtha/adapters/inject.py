"""Put adapters into a model: match target linears, wrap, freeze, count, save, merge.

Target matching follows peft: a plain entry matches the last component of a module's
qualified name (``q_proj`` matches ``model.layers.3.self_attn.q_proj``); an entry
``re:<pattern>`` must ``re.fullmatch`` the whole qualified name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from qtha.adapters.base import AdapterConfig, AdapterLayer, AdapterMergeError
from qtha.adapters.registry import adapter_spec
from qtha.config import QuantumConfig

REGEX_PREFIX = "re:"


class LoadResult(NamedTuple):
    """Keys skipped by a non-strict load (both empty after a strict one)."""

    missing: list[str]
    unexpected: list[str]


# --------------------------------------------------------------------------- matching
def adapter_class(name: str) -> type[AdapterLayer] | None:
    """The layer class registered for a config name (``None`` for ``"none"``)."""
    return adapter_spec(name).layer


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every replaceable linear by qualified name; a wrapped one is listed under its wrapper's name,
    so matching and counting give the same answer before and after injection."""
    found: list[tuple[str, nn.Linear]] = []
    wrappers: set[str] = set()
    for name, module in model.named_modules():  # pre-order: a wrapper comes before its base
        if isinstance(module, AdapterLayer):
            wrappers.add(name)
            found.append((name, module.base))
        elif isinstance(module, nn.Linear) and name and not _is_wrapped_base(name, wrappers):
            found.append((name, module))
    return found


def _is_wrapped_base(name: str, wrappers: set[str]) -> bool:
    parent, _, last = name.rpartition(".")
    return last == "base" and parent in wrappers


def _matches(name: str, patterns: list[str]) -> bool:
    last = name.rpartition(".")[2]
    return any(
        re.fullmatch(p[len(REGEX_PREFIX):], name) if p.startswith(REGEX_PREFIX) else p == last
        for p in patterns
    )


def _targets(model: nn.Module, cfg: AdapterConfig) -> list[tuple[str, nn.Linear]]:
    """The linears ``cfg.target_modules`` selects; an empty selection is always a config error."""
    patterns = list(cfg.target_modules)
    if not patterns:
        raise ValueError(f"adapter {cfg.name!r} needs target_modules (got an empty list)")
    linears = _linears(model)
    chosen = [(n, m) for n, m in linears if _matches(n, patterns)]
    if not chosen:
        kinds = sorted({n.rpartition(".")[2] for n, _ in linears})
        example = f" (e.g. {linears[0][0]})" if linears else ""
        raise ValueError(
            f"adapter {cfg.name!r}: target_modules {patterns} match no nn.Linear; "
            f"available: {', '.join(kinds[:12]) or 'none'}{example}"
        )
    return chosen


# --------------------------------------------------------------------------- inject
def inject_adapters(model: nn.Module, cfg: AdapterConfig, *, dtype: torch.dtype = torch.float32,
                    quantum: QuantumConfig | None = None) -> list[str]:
    """Freeze the whole model, then wrap each target linear in the adapter layer (in place).

    Returns the wrapped qualified names. Adapter parameters are created in ``dtype`` (see
    :class:`AdapterLayer` for why float32 is the default); ``quantum`` (how a QNN branch
    executes) reaches only layers that declare ``uses_quantum``. Config errors raise before
    the model is touched.
    """
    cls = adapter_class(cfg.name)
    if cls is None:
        model.requires_grad_(False)
        return []
    if any(isinstance(m, AdapterLayer) for m in model.modules()):
        raise ValueError("model already holds adapter layers; inject into a fresh model")
    targets = _targets(model, cfg)
    model.requires_grad_(False)
    for name, linear in targets:
        parent, _, child = name.rpartition(".")
        extra = {"quantum": quantum} if cls.uses_quantum else {}
        setattr(model.get_submodule(parent), child, cls(linear, cfg, dtype=dtype, **extra))
    return [name for name, _ in targets]


def adapter_layers(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterLayer)]


# --------------------------------------------------------------------------- counting
def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_total(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_trainable(model: nn.Module, cfg: AdapterConfig) -> dict[str, int]:
    """Trainable count per target module kind (last name component) from shapes alone.

    Needs no forward pass and no weights, so a model built on the ``meta`` device can be
    counted; works before or after injection.
    """
    cls = adapter_class(cfg.name)
    if cls is None:
        return {}
    counts: dict[str, int] = {}
    for name, linear in _targets(model, cfg):
        kind = name.rpartition(".")[2]
        counts[kind] = counts.get(kind, 0) + cls.num_params(cfg, linear.in_features, linear.out_features)
    return counts


# --------------------------------------------------------------------------- state
def _adapter_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Each adapter layer's state minus its wrapped base: parameters and persistent buffers
    (a frozen reference copy such as QuanTA's T0 must travel with the checkpoint)."""
    out: dict[str, Tensor] = {}
    for prefix, layer in adapter_layers(model):
        for key, tensor in layer.state_dict().items():
            if not key.startswith("base."):
                out[f"{prefix}.{key}" if prefix else key] = tensor
    return out


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Adapter weights only (never the LM), as detached CPU clones safe to serialise."""
    return {k: v.detach().cpu().clone() for k, v in _adapter_tensors(model).items()}


@torch.no_grad()
def load_adapter_state_dict(model: nn.Module, state: dict[str, Tensor], strict: bool = True) -> LoadResult:
    """Copy adapter weights into an injected model (cast to its device and dtype).

    ``strict`` rejects missing or unexpected keys; a shape mismatch is always an error.
    """
    if any(layer.merged for _, layer in adapter_layers(model)):
        raise AdapterMergeError("unmerge adapters before loading new adapter weights")
    for prefix, layer in adapter_layers(model):  # a layer may read (or switch to) an earlier format
        start = f"{prefix}." if prefix else ""
        mine = {k[len(start):]: v for k, v in state.items() if k.startswith(start)}
        state = {k: v for k, v in state.items() if not k.startswith(start)}
        state.update({start + k: v for k, v in layer.adapt_to_state(mine).items()})
    live = _adapter_tensors(model)
    missing = sorted(live.keys() - state.keys())
    unexpected = sorted(state.keys() - live.keys())
    if strict and (missing or unexpected):
        raise ValueError(
            f"adapter state does not fit the model: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}"
        )
    shared = sorted(live.keys() & state.keys())
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(live[k].shape)}" for k in shared if state[k].shape != live[k].shape]
    if bad:
        raise ValueError(f"adapter state shape mismatch (file vs model) for {len(bad)} tensors: {bad[:3]}")
    for k in shared:
        live[k].copy_(state[k])
    return LoadResult(missing, unexpected)


def save_adapter_file(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Adapter weights only (safetensors), written to a temp file and renamed: never half-written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    save_file(adapter_state_dict(model), os.fspath(tmp))
    os.replace(tmp, target)


def load_adapter_file(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> LoadResult:
    return load_adapter_state_dict(model, load_file(os.fspath(path)), strict=strict)


# --------------------------------------------------------------------------- merge
def merge_adapters(model: nn.Module, safe: bool = True) -> list[str]:
    """Merge every adapter layer, or none: all are checked first, and a failed safe merge
    rolls back the layers already merged."""
    layers = adapter_layers(model)
    for name, layer in layers:
        try:
            layer.check_mergeable()
        except AdapterMergeError as e:
            raise AdapterMergeError(f"{name}: {e}") from None
    done: list[AdapterLayer] = []
    try:
        for name, layer in layers:
            layer.merge(safe=safe)
            done.append(layer)
    except AdapterMergeError as e:
        for layer in done:
            layer.unmerge()
        raise AdapterMergeError(f"{name}: {e}") from None
    return [name for name, _ in layers]


def unmerge_adapters(model: nn.Module) -> list[str]:
    """Unmerge every adapter layer; all must be merged (a half-merged model is a bug upstream)."""
    layers = adapter_layers(model)
    not_merged = [name for name, layer in layers if not layer.merged]
    if not_merged:
        raise AdapterMergeError(f"{len(not_merged)} adapter layers are not merged, e.g. {not_merged[0]}")
    for _, layer in layers:
        layer.unmerge()
    return [name for name, _ in layers]


def unwrap_merged(model: nn.Module) -> list[str]:
    """Put each merged adapter layer's base linear (which now holds the merged weight) back in its place, so the
    model is a plain transformers model again: what ``save_pretrained`` must see for a folder that loads without
    qtha. Every layer must be merged first (:func:`merge_adapters`), else the adapter would be dropped."""
    layers = adapter_layers(model)
    not_merged = [name for name, layer in layers if not layer.merged]
    if not_merged:
        raise AdapterMergeError(f"{len(not_merged)} adapter layers are not merged, e.g. {not_merged[0]}; "
                                "merge_adapters(model) first")
    for name, layer in layers:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.base)
    return [name for name, _ in layers]
