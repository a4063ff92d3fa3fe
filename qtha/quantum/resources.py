"""What a run asks of a quantum device: circuit evaluations and shots, per training step and over the run.

Every QNN module evaluates one circuit per token it is given (padding positions included: the adapter
runs on every position of a padded batch). Training also needs gradients: the torch kernel and the
PennyLane simulators differentiate in one pass (backprop, adjoint), but a device that only samples
(finite shots, hardware, ``diff_method=parameter-shift``) runs shifted circuits — per token, 2 for every
RX/RY/RZ angle and 4 for every CRZ angle (two-frequency rule; in general 2 per frequency of the gate's
generator) that needs a gradient: the weights', and the input angles' when the layer feeding the QNN
trains (QTHA's A_lin). QTHA at 4 qubits, 1 layer (``adapter=qtha_spec_v1``): 1 + 8·2 + 8·4 + 4·2 = 57
circuits per token per QNN; at the default L = 4 layers 1 + 4·56 = 225. ``diff_method=finite-diff`` runs one
shifted circuit per trainable angle plus an unshifted one (PennyLane's forward difference); a circuit on a
finite-shot device costs ``quantum.shots`` shots. :func:`circuit_cost` reads the gates off the ansatz's
PennyLane tape; :class:`QuantumAccount` counts the tokens each QNN module actually evaluates, by phase,
and :meth:`QuantumAccount.summary` is the record's ``quantum_resources``: as configured, and what a
parameter-shift device ("real hardware") would be asked for the same run. Forward counts are the tokens evaluated; a PennyLane result cache
(``quantum.cache_size``, calls without gradient) can serve repeated tokens without a device call.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import lightning as L
import pennylane as qml
import torch
from torch import nn

from qtha.quantum.circuit import get_ansatz, make_qfunc, weight_shape
from qtha.quantum.layer import QNN
from qtha.quantum.settings import GRADIENT_DEVICES

PHASES = ("train", "validate", "generate")


@dataclass(frozen=True)
class CircuitCost:
    """One circuit's gates, its gate angles by source, and the parameter-shift circuits per token that
    the angles of each source need (2 per frequency of their gate's generator)."""

    gates: dict[str, int]
    weight_angles: int
    input_angles: int
    weight_shifts: int
    input_shifts: int


def circuit_cost(ansatz: str, n_qubits: int, n_layers: int) -> CircuitCost:
    """The gates of ``ansatz``'s tape, and which angles come from the token's inputs or from the weights
    (traced by autograd through the ansatz's indexing, so an affine angle counts like a plain one)."""
    inputs = torch.zeros(n_qubits, requires_grad=True)
    weights = torch.zeros(weight_shape(ansatz, n_qubits, n_layers), requires_grad=True)
    tape = qml.tape.make_qscript(make_qfunc(get_ansatz(ansatz)[0], n_qubits))(inputs, weights)
    gates: Counter[str] = Counter()
    angles, shifts = Counter(), Counter()
    for op in tape.operations:
        gates[op.name] += 1
        for k, angle in enumerate(op.data):
            if not (isinstance(angle, torch.Tensor) and angle.requires_grad):
                continue
            terms = 2 * len(op.parameter_frequencies[k])
            d_in, d_w = torch.autograd.grad(angle, (inputs, weights), retain_graph=True, allow_unused=True)
            for source, grad in (("inputs", d_in), ("weights", d_w)):
                if grad is not None and bool(grad.any()):
                    angles[source] += 1
                    shifts[source] += terms
    return CircuitCost(dict(sorted(gates.items())), angles["weights"], angles["inputs"], shifts["weights"],
                       shifts["inputs"])


def gradient_method(q: Any) -> str:
    """How the configured execution differentiates the QNN: ``backprop``/``adjoint`` (a simulator, no extra
    circuits) or a gradient transform, ``parameter-shift``/``finite-diff``. ``best`` resolves as PennyLane
    does: a simulator's own method when its expectation values are exact (lightning: adjoint, default.qubit
    and default.mixed: backprop), else parameter-shift (shots, hardware)."""
    if q.backend == "torch":
        return "backprop"
    if q.diff_method != "best":
        return q.diff_method
    if q.shots is None and q.device.startswith("lightning.") and q.device in GRADIENT_DEVICES["adjoint"]:
        return "adjoint"
    if q.shots is None and q.device in GRADIENT_DEVICES["backprop"]:
        return "backprop"
    return "parameter-shift"


_cost = functools.lru_cache(maxsize=None)(circuit_cost)  # one tape per circuit shape, not one per QNN call


@dataclass
class _Counts:
    """Circuits by phase: forward ones, and the parameter-shift ones the training tokens need."""

    forward: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    shift: int = 0  # parameter-shift circuits of the training tokens
    angles: int = 0  # training tokens × trainable angles (finite-diff: one circuit each, plus one per token)

    def vector(self) -> torch.Tensor:
        return torch.tensor([*self.forward.values(), self.shift, self.angles], dtype=torch.float64)

    def add(self, v: torch.Tensor) -> None:
        for i, phase in enumerate(PHASES):
            self.forward[phase] += int(v[i])
        self.shift += int(v[len(PHASES)])
        self.angles += int(v[len(PHASES) + 1])


class QuantumAccount(L.Callback):
    """Counts the circuits every QNN module of the model evaluates, by phase (forward hooks).

    A call with gradients enabled is a training token; otherwise the token is validation while Lightning
    validates, else generation. Under a multi-process strategy the counts are summed over the processes
    after every batch (every process then holds the same totals); generation runs on one process. The
    totals are saved in checkpoints, so a resumed run accounts for the whole run, as an uninterrupted one.
    """

    def __init__(self, quantum: Any) -> None:
        self.quantum, self.method = quantum, gradient_method(quantum)
        self.modules: list[QNN] = []
        self.total, self.pending = _Counts(), _Counts()
        self.phase = "generate"

    def attach(self, model: nn.Module) -> "QuantumAccount":
        """Hook every QNN module of ``model`` (once); a model without one leaves the account empty."""
        if self.modules:
            return self
        self.modules = [m for m in model.modules() if isinstance(m, QNN)]
        for m in self.modules:
            m.register_forward_hook(self._count)
        return self

    def _count(self, module: QNN, args: tuple[Any, ...], output: Any) -> None:
        tokens = args[0].numel() // module.n_qubits
        if not torch.is_grad_enabled():
            self.pending.forward[self.phase] += tokens
            return
        cost = _cost(module.ansatz, module.n_qubits, module.n_layers)
        inputs, weights = bool(args[0].requires_grad), module.weights.requires_grad
        self.pending.forward["train"] += tokens
        self.pending.shift += tokens * ((cost.weight_shifts if weights else 0) + (cost.input_shifts if inputs else 0))
        self.pending.angles += tokens * ((cost.weight_angles if weights else 0) + (cost.input_angles if inputs else 0))

    def _flush(self, trainer: Optional[L.Trainer] = None) -> None:
        v = self.pending.vector()
        if trainer is not None and trainer.world_size > 1:
            v = trainer.strategy.reduce(v.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        self.total.add(v)
        self.pending = _Counts()

    # Lightning hooks: phase, per-batch sums over processes, checkpoint state
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self.phase = "validate"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self.phase = "generate"

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._flush(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._flush(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"forward": dict(self.total.forward), "shift": self.total.shift, "angles": self.total.angles}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = _Counts(dict(state["forward"]), state["shift"], state["angles"])
        self.pending = _Counts()

    def summary(self, steps: int) -> Optional[dict[str, Any]]:
        """The record's ``quantum_resources`` (None without a QNN): circuits as configured and on a
        parameter-shift device, per optimiser step (``steps``) and over the run, with shots."""
        if not self.modules:
            return None
        self._flush()
        c, q, first = self.total, self.quantum, self.modules[0]  # one adapter config: every QNN has one circuit
        cost = _cost(first.ansatz, first.n_qubits, first.n_layers)
        gradient = {"backprop": 0, "adjoint": 0, "parameter-shift": c.shift,
                    "finite-diff": c.angles + c.forward["train"]}[self.method]
        forward = sum(c.forward.values())
        shots = q.shots if q.backend == "pennylane" else None

        def totals(grad: int) -> dict[str, Any]:
            circuits = forward + grad
            return {"gradient_circuits": grad, "circuits": circuits,
                    "circuits_per_step": round((c.forward["train"] + grad) / steps, 1) if steps else None,
                    "shots": circuits * shots if shots else None}

        return {
            "qnn_modules": len(self.modules),
            "circuit": {"ansatz": first.ansatz, "n_qubits": first.n_qubits, "n_layers": first.n_layers,
                        "gates": cost.gates,
                        "angles": {"weights": cost.weight_angles, "inputs": cost.input_angles}},
            "execution": {"backend": q.backend, "device": q.device if q.backend == "pennylane" else None,
                          "gradient": self.method, "shots_per_circuit": shots},
            "parameter_shift_circuits_per_token": 1 + cost.weight_shifts + cost.input_shifts,
            "steps": steps,
            "forward_circuits": dict(c.forward),
            **totals(gradient),
            "on_parameter_shift_device": totals(c.shift),
        }
