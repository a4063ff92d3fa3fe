"""Checks of how the QNN executes, written once: :class:`~qtha.quantum.layer.QNN` raises them as
ValueErrors, config validation (``qtha.config``) as one-line ConfigErrors naming ``quantum.<key>``."""
from __future__ import annotations

import numbers
from typing import Any, Optional

from qtha.quantum.noise import NoiseSpec, check_channels
from qtha.quantum.remote import check_device_name, load_device


def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_settings(backend: str, device: Any, shots: Optional[int], diff_method: str, noise: NoiseSpec,
                   retries: int, backoff_s: float, cache_size: int, *, prefix: str = "", probe: bool = False) -> None:
    """Raise a one-line ValueError for the first bad setting.

    ``probe=True`` also asks a 2-wire instance of ``device`` whether it runs noise channels (config
    validation, before any model loads); the QNN asks its own device instead.
    """
    if shots is not None and (not is_int(shots) or shots < 1):
        raise ValueError(f"{prefix}shots={shots!r} is invalid; allowed: a positive int, or null (None) for exact "
                         "expectation values")
    if backend == "torch" and shots is not None:
        raise ValueError(f"{prefix}shots={shots} needs a sampling device; allowed: {prefix}backend=pennylane "
                         "(the torch kernel is exact)")
    noise.check(prefix)
    if backend == "torch" and noise.gate_noise:
        raise ValueError(f"{prefix}noise={noise.kind} needs a device that runs noise channels; allowed: "
                         f"{prefix}backend=pennylane {prefix}device=default.mixed (the torch kernel is exact)")
    if diff_method == "adjoint" and (shots is not None or noise.gate_noise):
        given = f"{prefix}shots={shots}" if shots is not None else f"{prefix}noise={noise.kind}"
        raise ValueError(f"{prefix}diff_method=adjoint needs exact pure states, not {given}; allowed: "
                         f"{prefix}diff_method=best, parameter-shift (or backprop on default.mixed without shots)")
    if not is_int(retries) or retries < 0:
        raise ValueError(f"{prefix}retries={retries!r} is invalid; allowed: an int >= 0 (extra device attempts)")
    if not isinstance(backoff_s, numbers.Real) or isinstance(backoff_s, bool) or backoff_s < 0:
        raise ValueError(f"{prefix}backoff_s={backoff_s!r} is invalid; allowed: seconds >= 0")
    if not is_int(cache_size) or cache_size < 0:
        raise ValueError(f"{prefix}cache_size={cache_size!r} is invalid; allowed: an int >= 0 (0: no result cache)")
    if backend == "pennylane" and isinstance(device, str):
        check_device_name(device, prefix)
        if probe and noise.gate_noise:
            check_channels(load_device(device, 2, prefix), noise, prefix)
