"""Checks of how the QNN executes, written once: :class:`~qtha.quantum.layer.QNN` raises them as
ValueErrors, :func:`check_quantum` (the ``quantum`` group's owner check) as one-line ConfigErrors
naming ``quantum.<key>``."""
from __future__ import annotations

import numbers
from typing import Any, Optional

from qtha.errors import ConfigError, one_of
from qtha.quantum.noise import NoiseSpec, check_channels
from qtha.quantum.remote import check_device_name, load_device

BACKENDS = ("torch", "pennylane")
DIFF_METHODS = ("best", "backprop", "adjoint", "parameter-shift", "finite-diff")
# PennyLane plugin devices that do not run qubit circuits, and the simulators that implement the two
# non-transform gradient methods (PennyLane 0.4x; both need exact expectation values, i.e. shots=null).
NON_QUBIT_DEVICES = ("default.gaussian", "default.qutrit", "default.qutrit.mixed")
GRADIENT_DEVICES = {"backprop": ("default.mixed", "default.qubit"),
                    "adjoint": ("default.qubit", "lightning.gpu", "lightning.kokkos", "lightning.qubit")}


def is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


MAX_RETRIES = 16  # backoff_s · 2^16: already days of waiting at 1 s
MAX_BACKOFF_S = 3600.0

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
    if not is_int(retries) or not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"{prefix}retries={retries!r} is invalid; allowed: an int in 0..{MAX_RETRIES} (extra device "
                         "attempts, each waiting twice as long as the one before)")
    if not isinstance(backoff_s, numbers.Real) or isinstance(backoff_s, bool) or not 0 <= backoff_s <= MAX_BACKOFF_S:
        raise ValueError(f"{prefix}backoff_s={backoff_s!r} is invalid; allowed: seconds in 0..{MAX_BACKOFF_S:g}")
    if not is_int(cache_size) or cache_size < 0:
        raise ValueError(f"{prefix}cache_size={cache_size!r} is invalid; allowed: an int >= 0 (0: no result cache)")
    if backend == "pennylane" and isinstance(device, str):
        check_device_name(device, prefix)
        if probe and noise.gate_noise:
            check_channels(load_device(device, 2, prefix), noise, prefix)


def check_quantum(q: Any) -> None:
    """The ``quantum`` group's checks, with a noise device probed now (before any model loads)."""
    one_of("quantum.backend", q.backend, BACKENDS)
    one_of("quantum.diff_method", q.diff_method, DIFF_METHODS)
    one_of("quantum.dtype", q.dtype, ("float32", "float64"))
    try:
        check_settings(q.backend, q.device, q.shots, q.diff_method, NoiseSpec.of(q.noise, q.p1, q.p2, q.readout),
                       q.retries, q.backoff_s, q.cache_size, prefix="quantum.", probe=True)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_device(q)


def _check_device(q: Any) -> None:
    """What :func:`check_settings` leaves open: ``backend=pennylane`` needs a qubit device, and one that
    implements ``diff_method`` (exactly: backprop with shots fails in PennyLane)."""
    if q.backend != "pennylane":
        return
    if q.device in NON_QUBIT_DEVICES:
        raise ConfigError(f"quantum.device={q.device} does not run qubit circuits; allowed: a qubit device, "
                          "e.g. default.qubit, lightning.qubit, default.mixed")
    able = GRADIENT_DEVICES.get(q.diff_method)
    if able is None:
        return
    if q.device not in able:
        raise ConfigError(f"quantum.diff_method={q.diff_method} is not supported by quantum.device={q.device}; "
                          f"allowed: a device in {', '.join(able)}, or diff_method=best|parameter-shift|finite-diff")
    if q.shots is not None:
        raise ConfigError(f"quantum.diff_method={q.diff_method} needs exact expectation values but quantum.shots="
                          f"{q.shots}; allowed: quantum.shots=null, or diff_method=best|parameter-shift|finite-diff")
