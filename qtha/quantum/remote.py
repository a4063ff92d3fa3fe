"""Any PennyLane device by name — local simulators or remote hardware plugins — for the QNN branch.

Remote executions are slow, paid and can fail transiently, so the QNN's PennyLane path
* submits every token of a forward in **one** ``device.execute`` call (one broadcast tape, or
  ``broadcast_expand``'s batch of per-token tapes), and parameter-shift's shifted tapes in one
  more call during backward;
* keeps a :class:`ResultCache` of per-token outputs for evaluation (no gradient needed), keyed
  by device, shots, noise, the rounded weights and the rounded token angles;
* retries failed device executions with exponential backoff (:func:`with_retries`).
"""
from __future__ import annotations

import functools
import hashlib
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

import pennylane as qml
import torch
from torch import Tensor

CACHE_DECIMALS = 8  # angles equal to 1e-8 rad run the same circuit to well below shot or float32 noise


class DeviceExecutionError(RuntimeError):
    """A device execution that still failed after ``retries`` further attempts."""


def check_device_name(name: str, prefix: str = "") -> None:
    """One-line ValueError unless ``name`` is a device of an installed PennyLane plugin (entry points)."""
    if name not in qml.plugin_devices:
        raise ValueError(f"{prefix}device={name!r} is not an installed PennyLane device; allowed: "
                         f"{', '.join(sorted(qml.plugin_devices))} (or install the plugin that provides it)")


def load_device(name: str, wires: int, prefix: str = "") -> Any:
    """``qml.device(name, wires=wires)``; shots are set on the QNode (device shots are deprecated in PennyLane)."""
    check_device_name(name, prefix)
    try:
        return qml.device(name, wires=wires)
    except Exception as e:  # a plugin's own checks: credentials, wire limits, …
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{prefix}device={name!r} could not be created with wires={wires} "
                         f"({type(e).__name__}: {first}); allowed: a device that takes {wires} wires") from e


def with_retries(dev: Any, retries: int, backoff_s: float) -> Any:
    """Make ``dev.execute`` retry up to ``retries`` times, sleeping ``backoff_s · 2^k`` before retry k+1.

    Patching the device (not the QNode call) also covers the shifted tapes that parameter-shift
    executes inside autograd's backward. Re-wrapping replaces an earlier wrapper instead of nesting.
    """
    if hasattr(dev.execute, "_retrying"):
        del dev.execute  # drop an earlier wrapper (an instance attribute) instead of nesting it
    if retries == 0:
        return dev
    execute = dev.execute

    @functools.wraps(execute)
    def execute_with_retries(*args: Any, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return execute(*args, **kwargs)
            except NotImplementedError:  # a capability gap (e.g. broadcasting), not a transient failure
                raise
            except Exception as e:
                if attempt == retries:
                    first = (str(e).strip().splitlines() or [""])[0]
                    raise DeviceExecutionError(
                        f"device {dev.name!r} failed {retries + 1} times (retries={retries}, backoff_s={backoff_s}); "
                        f"last error: {type(e).__name__}: {first}") from e
                time.sleep(backoff_s * 2 ** attempt)
                attempt += 1

    execute_with_retries._retrying = True  # type: ignore[attr-defined]
    dev.execute = execute_with_retries
    return dev


class ResultCache:
    """LRU of per-token QNN outputs, for evaluation on devices where every circuit costs time or money.

    Only rows not cached are executed (duplicates within a batch once), in one call. With shots, a
    cached token keeps its first estimate instead of drawing new samples.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = self.misses = 0
        self._store: OrderedDict[tuple, tuple[float, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def _rounded(t: Tensor) -> Any:
        return (torch.round(t.detach().double(), decimals=CACHE_DECIMALS) + 0.0).cpu().numpy()  # + 0.0: no −0.0

    def run(self, x: Tensor, w: Tensor, execute: Callable[[Tensor], Tensor], tag: Hashable) -> Tensor:
        """Outputs (N, n_out) for the token angles ``x`` (N, n_q) under weights ``w``; ``execute(rows)``
        runs the missing rows. ``tag`` names everything else the result depends on (device, shots, noise)."""
        w_key = hashlib.blake2b(self._rounded(w).tobytes(), digest_size=16).hexdigest()
        keys = [(tag, w_key, row.tobytes()) for row in self._rounded(x)]
        found: dict[tuple, tuple[float, ...]] = {}
        missing: dict[tuple, int] = {}  # key -> first row holding it
        for i, key in enumerate(keys):
            if key in found or key in missing:
                continue
            if key in self._store:
                self._store.move_to_end(key)
                found[key] = self._store[key]
            else:
                missing[key] = i
        if missing:
            fresh = execute(x[list(missing.values())]).detach().double().cpu().tolist()
            for key, row in zip(missing, fresh):
                found[key] = self._store[key] = tuple(row)
            while len(self._store) > self.maxsize:
                self._store.popitem(last=False)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.tensor([found[k] for k in keys], dtype=x.dtype, device=x.device)
