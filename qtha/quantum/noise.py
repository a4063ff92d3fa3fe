"""Noise for the QNN branch: depolarizing gate errors (PennyLane channels) and readout confusion (analytic).

Gate noise is a PennyLane :class:`~pennylane.noise.NoiseModel` inserted into the ansatz's
quantum function with ``qml.noise.add_noise``, so it needs a device that executes channels
(``default.mixed``; state-vector devices such as ``default.qubit`` and ``lightning.qubit``
reject them — :func:`check_channels` asks the device's own preprocessing). After every
1-qubit gate: ``qml.DepolarizingChannel(p1)``, i.e. ρ → (1−p)ρ + p/3 (XρX + YρY + ZρZ),
which scales ⟨Z⟩ by (1 − 4p/3). After every 2-qubit gate: the *two-qubit* depolarizing
channel with the same convention (PennyLane 0.45 has none built in, so it is a
``qml.QubitChannel`` with Kraus operators √(1−p)·I and √(p/15)·P for the 15 non-identity
two-qubit Paulis P), which scales ⟨Z_i⟩ on either wire by (1 − 16p/15).

Readout errors are applied to ⟨Z_i⟩ analytically rather than as a channel before each
measurement (PennyLane's ``meas_map`` would split the tape per measurement). With the
row-stochastic confusion matrix R = [[P(0|0), P(1|0)], [P(0|1), P(1|1)]] (row: true outcome,
column: measured), the same on every qubit, and z = ⟨Z⟩ = p0 − p1 of the noiseless readout:
measured P(0) = p0·P(0|0) + p1·P(0|1) with p0 = (1+z)/2, p1 = (1−z)/2, hence
⟨Z⟩_meas = 2·P(0)_meas − 1 = a + b·z with a = P(0|0) + P(0|1) − 1 and b = P(0|0) − P(0|1)
(the authors' [[0.95, 0.05], [0.1, 0.9]]: a = 0.05, b = 0.85). With shots this keeps the mean
of the estimate exact; its spread is b times the device's instead of the confused distribution's.
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pennylane as qml
from torch import Tensor

NOISE_KINDS = ("none", "depolarizing")
_PAULIS = (np.eye(2), np.array([[0, 1], [1, 0]]), np.array([[0, -1j], [1j, 0]]), np.diag([1, -1]))
Readout = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class NoiseSpec:
    """Hashable noise settings (they key the result cache): gate noise ``kind`` with rates ``p1``
    (after 1-qubit gates) and ``p2`` (after 2-qubit gates), and an optional readout matrix."""

    kind: str = "none"
    p1: float = 0.0
    p2: float = 0.0
    readout: Optional[Readout] = None

    @staticmethod
    def of(kind: str = "none", p1: float = 0.0, p2: float = 0.0, readout: Optional[Sequence] = None) -> "NoiseSpec":
        """Build from config values (a readout given as nested lists / a ListConfig becomes tuples)."""
        if readout is not None:
            try:
                readout = tuple(tuple(float(v) for v in row) for row in readout)
            except (TypeError, ValueError):
                raise ValueError(f"readout={readout!r} must be a 2x2 matrix of numbers, "
                                 "e.g. [[0.95, 0.05], [0.1, 0.9]]") from None
        return NoiseSpec(kind, p1, p2, readout)

    @property
    def gate_noise(self) -> bool:
        return self.kind != "none"

    def check(self, prefix: str = "") -> None:
        """One-line ValueErrors naming ``<prefix>key=value`` and what is allowed."""
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"{prefix}noise={self.kind!r} is not allowed; allowed: {', '.join(NOISE_KINDS)}")
        for key in ("p1", "p2"):
            p = getattr(self, key)
            if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{prefix}{key}={p!r} is not a probability; allowed: a number in [0, 1]")
            if p and not self.gate_noise:
                raise ValueError(f"{prefix}{key}={p} has no effect with {prefix}noise=none; "
                                 f"allowed: {prefix}noise=depolarizing, or {prefix}{key}=0")
        r = self.readout
        if r is not None and (len(r) != 2 or any(len(row) != 2 for row in r) or
                              any(not 0.0 <= v <= 1.0 for row in r for v in row) or
                              any(not math.isclose(sum(row), 1.0, abs_tol=1e-9) for row in r)):
            raise ValueError(f"{prefix}readout={[list(row) for row in r]} is not a 2x2 row-stochastic matrix; "
                             "allowed: [[P(0|0), P(1|0)], [P(0|1), P(1|1)]] with entries in [0, 1] and rows "
                             "summing to 1, or null")

    def readout_affine(self) -> tuple[float, float]:
        """(a, b) with ⟨Z⟩_meas = a + b·⟨Z⟩ (see the module docstring); (0, 1) without readout errors."""
        if self.readout is None:
            return 0.0, 1.0
        (p00, _), (p01, _) = self.readout  # P(0|0), P(0|1): the "measured 0" column
        return p00 + p01 - 1.0, p00 - p01

    def apply_readout(self, z: Tensor) -> Tensor:
        if self.readout is None:
            return z
        a, b = self.readout_affine()
        return a + b * z

    def add_gate_noise(self, qfunc: Callable) -> Callable:
        """``qfunc`` with the depolarizing channels inserted after its gates (unchanged without gate noise)."""
        if not self.gate_noise:
            return qfunc
        rules: dict[qml.BooleanFn, Callable] = {
            qml.BooleanFn(lambda op: len(op.wires) > 2, name="MoreThanTwoWires"): _refuse_wide_gate}
        if self.p1 > 0:
            rules[_acts_on(1)] = qml.noise.partial_wires(qml.DepolarizingChannel, self.p1)
        if self.p2 > 0:
            kraus = depolarizing2_kraus(self.p2)
            rules[_acts_on(2)] = lambda op, **_: qml.QubitChannel(kraus, wires=op.wires)
        return qml.noise.add_noise(qfunc, qml.NoiseModel(rules))


def _acts_on(n_wires: int) -> qml.BooleanFn:
    return qml.BooleanFn(lambda op: len(op.wires) == n_wires, name=f"On{n_wires}Wires")


def _refuse_wide_gate(op: Any, **_: Any) -> None:
    raise ValueError(f"gate {op.name} acts on {len(op.wires)} wires; the depolarizing noise model defines 1- and "
                     "2-qubit gate errors only (write the ansatz with 1- and 2-qubit gates)")


def depolarizing2_kraus(p: float) -> list[np.ndarray]:
    """Kraus operators of the two-qubit depolarizing channel: √(1−p)·I, √(p/15)·(P_a ⊗ P_b), (a, b) ≠ (0, 0)."""
    ops = [math.sqrt(1.0 - p) * np.eye(4, dtype=complex)]
    ops += [math.sqrt(p / 15.0) * np.kron(_PAULIS[a], _PAULIS[b]).astype(complex)
            for a, b in itertools.product(range(4), repeat=2) if (a, b) != (0, 0)]
    return ops


def check_channels(dev: Any, spec: NoiseSpec, prefix: str = "") -> None:
    """Raise a one-line ValueError unless ``dev``'s preprocessing accepts the noise channels (nothing runs)."""
    wires = dev.wires.tolist() if dev.wires is not None else [0, 1]
    ops = [qml.DepolarizingChannel(spec.p1, wires=wires[0])]
    if len(wires) > 1:
        ops.append(qml.QubitChannel(depolarizing2_kraus(spec.p2), wires=wires[:2]))
    probe = qml.tape.QuantumScript(ops, [qml.expval(qml.Z(wires[0]))])
    try:
        dev.preprocess_transforms()([probe])
    except Exception as e:  # DeviceError for devices without channels; plugins may raise their own
        raise ValueError(f"{prefix}noise={spec.kind} needs a device that runs noise channels and "
                         f"{prefix}device={dev.name!r} does not ({type(e).__name__}); allowed: "
                         f"{prefix}device=default.mixed") from e

