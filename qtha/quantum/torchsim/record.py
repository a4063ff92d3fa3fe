"""Stage 1 of the kernel: read a PennyLane ansatz's gates and angle maps off its recorded tape.

The circuit is never re-written here: :func:`record` runs the quantum function once through
``qml.tape.make_qscript`` with placeholder tensors ``inputs`` (n_q,) and ``weights`` (weight shape),
both float64 and ``requires_grad``. Every gate angle on the tape is a torch scalar still attached to
the placeholders, so autograd tells which single entry it depends on and with which slope:
angle = coeff · source[idx] + offset (source = inputs or weights; no dependence = a constant). A
second trace with other values checks that the map is affine. Gates outside
:data:`SUPPORTED_GATES` are decomposed with PennyLane's own ``op.decomposition()`` (angles stay
attached, so the mapping still works); a gate with no decomposition into supported gates raises
:class:`UnsupportedGateError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pennylane as qml
import torch
from torch import Tensor

ONE_QUBIT_PARAM = ("RX", "RY", "RZ", "PhaseShift")
ONE_QUBIT_FIXED = ("Hadamard", "PauliX", "PauliY", "PauliZ", "S", "T")
DIAG_MULTI = ("CRZ", "ControlledPhaseShift", "IsingZZ", "CZ")
PERMUTATIONS = ("CNOT", "SWAP")
IGNORED = ("Identity", "GlobalPhase", "Barrier")  # no effect on expectation values
SUPPORTED_GATES = frozenset(ONE_QUBIT_PARAM + ONE_QUBIT_FIXED + DIAG_MULTI + PERMUTATIONS)
_MAX_DECOMP_DEPTH = 8


class UnsupportedGateError(ValueError):
    """The recorded circuit holds a gate (or an angle map) the torch kernel cannot execute."""


@dataclass(frozen=True)
class Gate:
    """One gate of the recorded tape. ``angle = coeff · source[idx] + offset`` where source is
    the inputs (src="input"), the flattened weights (src="weight"); src="const" means
    ``angle = offset``; src="none" marks a parameter-free gate."""

    name: str
    wires: tuple[int, ...]
    src: str = "none"
    idx: int = 0
    coeff: float = 0.0
    offset: float = 0.0

    @property
    def is_data(self) -> bool:
        return self.src == "input"


def _expand(ops: Sequence[Any], depth: int = 0) -> list[Any]:
    out: list[Any] = []
    for op in ops:
        if op.name in SUPPORTED_GATES:
            out.append(op)
        elif op.name in IGNORED:
            continue
        elif depth < _MAX_DECOMP_DEPTH and getattr(op, "has_decomposition", False):
            out.extend(_expand(op.decomposition(), depth + 1))
        else:
            raise UnsupportedGateError(
                f"gate {op.name!r} on wires {op.wires.tolist()} is not supported by the torch kernel "
                f"and has no decomposition into supported gates; supported: {', '.join(sorted(SUPPORTED_GATES))} "
                f"(or run it with backend='pennylane')")
    return out


def _placeholders(n_qubits: int, wshape: tuple, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_qubits, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_(True)
    w = (torch.rand(wshape, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_(True)
    return x, w


def _angle_map(op1: Any, op2: Any, x1: Tensor, w1: Tensor, x2: Tensor, w2: Tensor) -> tuple:
    """(src, idx, coeff, offset) of a one-parameter gate, checked to be affine in one entry."""
    p1, p2 = op1.parameters[0], op2.parameters[0]
    if not (torch.is_tensor(p1) and p1.requires_grad):
        v1, v2 = float(p1), float(p2)
        if not math.isclose(v1, v2, rel_tol=1e-12, abs_tol=1e-12):
            raise UnsupportedGateError(f"gate {op1.name!r} on wires {op1.wires.tolist()}: its angle is neither "
                                       "a constant nor computed from the inputs/weights tensors")
        return ("const", 0, 0.0, v1)
    if p1.numel() != 1:
        raise UnsupportedGateError(f"gate {op1.name!r} on wires {op1.wires.tolist()}: angle of shape "
                                   f"{tuple(p1.shape)} for one token; index inputs as inputs[..., i]")
    gx, gw = torch.autograd.grad(p1.reshape(()), [x1, w1], allow_unused=True, retain_graph=True)
    hits = []
    for src, g, vals1, vals2 in (("input", gx, x1, x2), ("weight", gw, w1, w2)):
        if g is None:
            continue
        g = g.reshape(-1)
        for i in torch.nonzero(g).reshape(-1).tolist():
            hits.append((src, i, float(g[i]), float(vals1.detach().reshape(-1)[i]),
                         float(vals2.detach().reshape(-1)[i])))
    v1, v2 = float(p1.detach()), float(p2.detach())
    if not hits:
        return ("const", 0, 0.0, v1)
    if len(hits) > 1:
        raise UnsupportedGateError(f"gate {op1.name!r} on wires {op1.wires.tolist()}: its angle depends on "
                                   f"{len(hits)} input/weight entries; the torch kernel needs one per angle")
    src, i, coeff, s1, s2 = hits[0]
    offset = v1 - coeff * s1
    if not math.isclose(v2, coeff * s2 + offset, rel_tol=1e-9, abs_tol=1e-9):
        raise UnsupportedGateError(f"gate {op1.name!r} on wires {op1.wires.tolist()}: its angle is not an "
                                   f"affine function of {src}[{i}]; the torch kernel needs coeff·x + offset")
    return (src, i, coeff, offset)


def record(fn: Callable, n_qubits: int, wshape: tuple) -> list[Gate]:
    """Trace ``fn(inputs, weights, n_qubits)`` with PennyLane and return its gates, mapped."""
    # The angle map is read off autograd: keep it on even when called under no_grad / inference_mode.
    with torch.inference_mode(False), torch.enable_grad():
        return _record(fn, n_qubits, wshape)


def _record(fn: Callable, n_qubits: int, wshape: tuple) -> list[Gate]:
    (x1, w1), (x2, w2) = _placeholders(n_qubits, wshape, 1), _placeholders(n_qubits, wshape, 2)
    ops1 = _expand(qml.tape.make_qscript(fn)(x1, w1, n_qubits).operations)
    ops2 = _expand(qml.tape.make_qscript(fn)(x2, w2, n_qubits).operations)
    if [(o.name, o.wires.tolist()) for o in ops1] != [(o.name, o.wires.tolist()) for o in ops2]:
        raise UnsupportedGateError("the circuit's gate structure depends on the parameter values; "
                                   "the torch kernel needs a fixed structure (use backend='pennylane')")
    gates = []
    for op1, op2 in zip(ops1, ops2):
        wires = tuple(op1.wires.tolist())
        if not all(isinstance(wi, int) and 0 <= wi < n_qubits for wi in wires):
            raise UnsupportedGateError(f"gate {op1.name!r} acts on wires {list(wires)}; "
                                       f"allowed: integer wires 0..{n_qubits - 1}")
        if len(op1.parameters) == 0:
            gates.append(Gate(op1.name, wires))
        elif len(op1.parameters) == 1:
            gates.append(Gate(op1.name, wires, *_angle_map(op1, op2, x1, w1, x2, w2)))
        else:  # no supported gate has more than one parameter
            raise UnsupportedGateError(f"gate {op1.name!r} has {len(op1.parameters)} parameters")
    return gates
