"""The quantum resource account: circuit counts from the ansatz's tape, checked against PennyLane's own
gradient transforms and against the executions a device really receives."""
from __future__ import annotations

import warnings

import pennylane as qml
import pytest
import torch
from torch import nn

from qtha.config import QuantumConfig
from qtha.quantum import QNN, weight_shape
from qtha.quantum.circuit import get_ansatz, make_qfunc
from qtha.quantum.resources import QuantumAccount, circuit_cost, gradient_method

F64 = torch.float64


def _tape(ansatz: str, n_qubits: int, n_layers: int) -> qml.tape.QuantumScript:
    """The circuit with every input and weight angle trainable (as in training QTHA)."""
    inputs = torch.rand(n_qubits, dtype=F64, requires_grad=True)
    weights = torch.rand(weight_shape(ansatz, n_qubits, n_layers), dtype=F64, requires_grad=True)
    return qml.tape.make_qscript(make_qfunc(get_ansatz(ansatz)[0], n_qubits))(inputs, weights)


def test_default_qtha_circuit_needs_57_circuits_per_token():
    """The QNN docstring's count for 4 qubits, 1 layer: 1 + 8·2 (RY weights) + 8·4 (CRZ) + 4·2 (input RYs)."""
    cost = circuit_cost("qtha", 4, 1)
    assert cost.gates == {"CRZ": 8, "RY": 12}
    assert (cost.weight_angles, cost.input_angles) == (16, 4)
    assert (cost.weight_shifts, cost.input_shifts) == (8 * 2 + 8 * 4, 4 * 2)
    assert 1 + cost.weight_shifts + cost.input_shifts == 57


@pytest.mark.parametrize("ansatz, n_qubits, n_layers", [("qtha", 4, 1), ("qtha", 4, 4), ("qtha", 2, 1),
                                                        ("qtha", 1, 2), ("hea", 3, 2)])
def test_shift_circuits_equal_the_tapes_pennylanes_parameter_shift_generates(ansatz, n_qubits, n_layers):
    cost = circuit_cost(ansatz, n_qubits, n_layers)
    tapes, _ = qml.gradients.param_shift(_tape(ansatz, n_qubits, n_layers))
    assert cost.weight_shifts + cost.input_shifts == len(tapes)


@pytest.mark.parametrize("method, shots", [pytest.param("parameter-shift", None, marks=pytest.mark.slow),
                                           ("finite-diff", None), pytest.param("best", 100, marks=pytest.mark.slow)])
def test_the_account_equals_the_executions_a_device_receives(method, shots):
    """Training tokens (input angles fed by a trained layer), then tokens without gradient: the account's
    circuits are exactly what PennyLane's tracker saw the device execute."""
    dev = qml.device("default.qubit", wires=4)
    qnn = QNN(4, 1, backend="pennylane", device=dev, diff_method=method, shots=shots, dtype=F64)
    model = nn.Sequential(nn.Linear(3, 4).double(), qnn)
    account = QuantumAccount(QuantumConfig(backend="pennylane", diff_method=method, shots=shots)).attach(model)
    with warnings.catch_warnings(), qml.Tracker(dev) as tracker:
        warnings.simplefilter("ignore")  # finite-diff's float32 warning (the input cast), shots' sampling notes
        model(torch.randn(5, 3, dtype=F64)).sum().backward()
        with torch.no_grad():
            model(torch.randn(2, 3, dtype=F64))
    s = account.summary(steps=1)
    assert s["circuits"] == tracker.totals["executions"]
    assert s["forward_circuits"] == {"train": 5, "validate": 0, "generate": 2}
    assert s["circuits_per_step"] == s["circuits"] - 2
    assert s["on_parameter_shift_device"]["circuits"] == 5 * 57 + 2 and s["parameter_shift_circuits_per_token"] == 57
    assert s["execution"]["gradient"] == ("parameter-shift" if method == "best" else method)
    assert s["shots"] == (s["circuits"] * shots if shots else None)


def test_an_exact_simulator_needs_no_gradient_circuits():
    qnn = QNN(4, 1)  # the torch kernel
    account = QuantumAccount(QuantumConfig()).attach(nn.Sequential(nn.Linear(3, 4), qnn))
    account.modules[0](torch.randn(2, 7, 4, requires_grad=True)).sum().backward()
    s = account.summary(steps=2)
    assert s["gradient_circuits"] == 0 and s["circuits"] == 14 and s["circuits_per_step"] == 7
    assert s["on_parameter_shift_device"]["gradient_circuits"] == 14 * 56
    assert QuantumAccount(QuantumConfig()).attach(nn.Linear(2, 2)).summary(steps=1) is None  # no QNN


@pytest.mark.parametrize("device, shots", [("default.qubit", None), ("default.qubit", 100), ("default.mixed", None),
                                           ("default.mixed", 100), ("lightning.qubit", None)])
def test_best_resolves_as_pennylane_resolves_it(device, shots):
    qnode = qml.QNode(make_qfunc(get_ansatz("qtha")[0], 2), qml.device(device, wires=2), diff_method="best",
                      shots=shots, interface="torch")
    args = (torch.rand(2, requires_grad=True), torch.rand(weight_shape("qtha", 2, 1), requires_grad=True))
    expected = qml.workflow.get_best_diff_method(qnode)(*args)
    assert gradient_method(QuantumConfig(backend="pennylane", device=device, shots=shots)) == expected
