"""The QNN ansätze (SPEC §1.5), each written ONCE as a PennyLane quantum function.

An ansatz is ``fn(inputs, weights, n_qubits)``: it queues gates and returns nothing. ``inputs``
is the per-token angle vector u, indexed as ``inputs[..., i]`` so that the same function runs
unbatched (shape ``(n_qubits,)``) and with PennyLane's parameter broadcasting over tokens
(shape ``(N, n_qubits)``); ``weights`` has the ansatz's weight shape, ``weights.shape[0]``
being the number of layers. The measurement (⟨Z_i⟩ on every qubit) is added by
:func:`make_qfunc`, not by the ansatz.

Every backend runs these functions: a PennyLane QNode on any device, and the torch kernel in
:mod:`qtha.quantum.torchsim`, which records the function's tape and executes the same gates
batched over tokens. A new ansatz is one PennyLane function plus :func:`register_ansatz`.
"""
from __future__ import annotations

from typing import Any, Callable

import pennylane as qml

AnsatzFn = Callable[[Any, Any, int], None]
WeightShapeFn = Callable[[int, int], tuple]


def _ring(n_qubits: int, step: int) -> list[tuple[int, int]]:
    """(control, target) pairs i → (i + step) mod n for every qubit i; empty for one qubit."""
    if n_qubits < 2:
        return []
    return [(i, (i + step) % n_qubits) for i in range(n_qubits)]


def qtha_ansatz(inputs: Any, weights: Any, n_qubits: int) -> None:
    """SPEC §1.5, the authors' circuit. ``weights``: shape (L, 4, n_qubits).

    Per layer ℓ: RY(u_i) re-upload on every qubit (from |0…0⟩ at ℓ = 1); CRZ(w[ℓ,0,i]) ring
    control i → target (i+1) mod n; RY(w[ℓ,1,i]); CRZ(w[ℓ,2,i]) ring control i → target
    (i−1) mod n; RY(w[ℓ,3,i]). For n = 1 the rings are empty; for n = 2 both rings are the
    two gates 0→1 and 1→0 (as the spec's formula gives).
    """
    for layer in range(weights.shape[0]):
        for i in range(n_qubits):
            qml.RY(inputs[..., i], wires=i)
        for i, (c, t) in enumerate(_ring(n_qubits, +1)):
            qml.CRZ(weights[layer, 0, i], wires=[c, t])
        for i in range(n_qubits):
            qml.RY(weights[layer, 1, i], wires=i)
        for i, (c, t) in enumerate(_ring(n_qubits, -1)):
            qml.CRZ(weights[layer, 2, i], wires=[c, t])
        for i in range(n_qubits):
            qml.RY(weights[layer, 3, i], wires=i)


def qtha_weight_shape(n_qubits: int, n_layers: int) -> tuple:
    return (n_layers, 4, n_qubits)


def hea_ansatz(inputs: Any, weights: Any, n_qubits: int) -> None:
    """"Hardware-efficient" RY + CNOT ring. ``weights``: shape (L, 1, n_qubits).

    Per layer ℓ: RY(u_i) re-upload on every qubit; RY(w[ℓ,0,i]) on every qubit; CNOT ring
    control i → target (i+1) mod n (no CNOT for n = 1, just 0→1 for n = 2).
    """
    if n_qubits == 2:
        cnots = [(0, 1)]
    else:
        cnots = _ring(n_qubits, +1)
    for layer in range(weights.shape[0]):
        for i in range(n_qubits):
            qml.RY(inputs[..., i], wires=i)
        for i in range(n_qubits):
            qml.RY(weights[layer, 0, i], wires=i)
        for c, t in cnots:
            qml.CNOT(wires=[c, t])


def hea_weight_shape(n_qubits: int, n_layers: int) -> tuple:
    return (n_layers, 1, n_qubits)


# name -> (ansatz function, weight_shape(n_qubits, n_layers) function)
ANSATZE: dict[str, tuple[AnsatzFn, WeightShapeFn]] = {
    "qtha": (qtha_ansatz, qtha_weight_shape),
    "hea": (hea_ansatz, hea_weight_shape),
}


def register_ansatz(name: str, fn: AnsatzFn, weight_shape_fn: WeightShapeFn) -> None:
    """Add (or replace) an ansatz: a PennyLane quantum function ``fn(inputs, weights, n_qubits)``
    and ``weight_shape_fn(n_qubits, n_layers) -> tuple`` (first entry = layers).

    Every backend picks it up, the torch kernel included, as long as its gates are among
    :data:`qtha.quantum.torchsim.SUPPORTED_GATES` (or decompose into them) and each gate angle
    is an affine function of one input or one weight entry. Config validation reads this table,
    so ``adapter.ansatz=<name>`` is accepted once the ansatz is registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"ansatz name={name!r} must be a non-empty string")
    if not callable(fn) or not callable(weight_shape_fn):
        raise ValueError(f"register_ansatz({name!r}): fn and weight_shape_fn must be callables")
    ANSATZE[name] = (fn, weight_shape_fn)


def get_ansatz(name: str) -> tuple[AnsatzFn, WeightShapeFn]:
    try:
        return ANSATZE[name]
    except (KeyError, TypeError):
        raise ValueError(f"ansatz={name!r} is unknown; allowed: {', '.join(sorted(ANSATZE))}") from None


def weight_shape(ansatz: str, n_qubits: int, n_layers: int) -> tuple:
    """Shape of the trainable angle tensor of ``ansatz`` ((L, 4, n_q) for qtha, (L, 1, n_q) for hea)."""
    return tuple(int(s) for s in get_ansatz(ansatz)[1](n_qubits, n_layers))


def make_qfunc(fn: AnsatzFn, n_qubits: int) -> Callable[[Any, Any], list]:
    """``qfunc(inputs, weights)``: the ansatz followed by ⟨Z_i⟩ on every qubit (a QNode body)."""

    def qfunc(inputs, weights):
        fn(inputs, weights, n_qubits)
        return [qml.expval(qml.PauliZ(i)) for i in range(n_qubits)]

    qfunc.__name__ = f"{getattr(fn, '__name__', 'ansatz')}_expvalZ"
    return qfunc
