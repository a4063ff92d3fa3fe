"""``QNN``: the quantum layer of SPEC §1.5 as a torch module, on the torch kernel or a PennyLane device.

Whatever the backend, the circuit is the ansatz's PennyLane function from ``circuit.py``:
``backend="torch"`` executes its recorded tape with :mod:`qtha.quantum.torchsim` (exact, the
training default); ``backend="pennylane"`` builds a ``qml.QNode`` on ``device`` with
``interface="torch"``, ``diff_method`` and ``shots`` (set on the QNode, PennyLane's
non-deprecated place), and passes all tokens in one broadcast call (devices without
broadcasting support get PennyLane's own per-token split). Gradient transforms
(parameter-shift, finite-diff, and "best" with shots) cannot differentiate broadcast inputs in
PennyLane 0.45, so for them the QNode is wrapped in ``qml.transforms.broadcast_expand``.

The branch always computes in float32 or float64: autocast is disabled inside ``forward`` and
the inputs and weights are cast to the module's dtype.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterator, Optional

import pennylane as qml
import torch
from torch import Tensor, nn

from qtha.quantum import torchsim
from qtha.quantum.circuit import ANSATZE, get_ansatz, make_qfunc, weight_shape

BACKENDS = ("torch", "pennylane")
MAX_QUBITS = 20  # state vector: 2^20 amplitudes per token
DTYPES = (torch.float32, torch.float64)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class QNN(nn.Module):
    """⟨Z_i⟩ of the ansatz circuit for every token: [..., n_qubits] → [..., n_qubits].

    ``weights``: ``nn.Parameter`` of the ansatz's weight shape ((L, 4, n_q) for ``qtha``,
    (L, 1, n_q) for ``hea``), initialised uniform in [0, 2π).
    """

    def __init__(self, n_qubits: int, n_layers: int = 1, ansatz: str = "qtha", backend: str = "torch",
                 device: Any = "default.qubit", shots: Optional[int] = None, diff_method: str = "best",
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not _is_int(n_qubits) or not 1 <= n_qubits <= MAX_QUBITS:
            raise ValueError(f"n_qubits={n_qubits!r} is out of range; allowed: an int in 1..{MAX_QUBITS} "
                             "(state vector)")
        if not _is_int(n_layers) or n_layers < 1:
            raise ValueError(f"n_layers={n_layers!r} is invalid; allowed: an int >= 1")
        n_qubits, n_layers = int(n_qubits), int(n_layers)
        if ansatz not in ANSATZE:
            raise ValueError(f"ansatz={ansatz!r} is unknown; allowed: {', '.join(sorted(ANSATZE))}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; allowed: torch.float32, torch.float64")
        if shots is not None and (not _is_int(shots) or shots < 1):
            raise ValueError(f"shots={shots!r} is invalid; allowed: a positive int, or None for exact expectations")
        if backend == "torch" and shots is not None:
            raise ValueError(f"shots={shots} needs a sampling device; allowed with backend='pennylane' "
                             "(the torch kernel is exact: shots=None)")
        shots = int(shots) if shots is not None else None
        self.n_qubits, self.n_layers, self.ansatz = n_qubits, n_layers, ansatz
        self.backend, self.device_name, self.shots, self.diff_method = backend, device, shots, diff_method
        self.dtype = dtype
        self._fn = get_ansatz(ansatz)[0]
        shape = weight_shape(ansatz, n_qubits, n_layers)
        self.weights = nn.Parameter(torch.rand(shape, dtype=dtype) * (2 * math.pi))
        self._qnode = None
        # One broadcast call over all tokens where the gradient method differentiates broadcast tapes
        # (backprop, adjoint); gradient transforms (parameter-shift, finite-diff, shots) get one tape per token.
        self._broadcast = diff_method in ("backprop", "adjoint", "device") or (diff_method == "best" and shots is None)
        if backend == "torch":  # record + fuse the circuit now: unsupported gates fail at construction
            self._plan = torchsim.get_plan(self._fn, n_qubits, shape)
        else:
            self._qnode = self._build_qnode()

    @staticmethod
    def num_params(n_qubits: int, n_layers: int = 1, ansatz: str = "qtha") -> int:
        return math.prod(weight_shape(ansatz, n_qubits, n_layers))

    def _build_qnode(self) -> Any:
        dev = self.device_name
        if isinstance(dev, str):
            try:
                dev = qml.device(dev, wires=self.n_qubits)
            except Exception as e:  # DeviceError, missing plugin, …
                raise ValueError(f"device={dev!r} could not be loaded by PennyLane ({type(e).__name__}: {e}); "
                                 "allowed: an installed PennyLane device name, e.g. 'default.qubit', "
                                 "'lightning.qubit', 'default.mixed'") from e
        qnode = qml.QNode(make_qfunc(self._fn, self.n_qubits), dev, interface="torch",
                          diff_method=self.diff_method, shots=self.shots)
        if not self._broadcast:  # gradient transforms cannot differentiate broadcast inputs: one tape per token
            qnode = qml.transforms.broadcast_expand(qnode)
        return qnode

    def forward(self, u: Tensor) -> Tensor:
        if u.shape[-1] != self.n_qubits:
            raise ValueError(f"QNN input of shape {tuple(u.shape)}: last dim must be n_qubits={self.n_qubits}")
        lead = u.shape[:-1]
        dev_type = u.device.type
        no_autocast = torch.autocast(device_type=dev_type, enabled=False) \
            if torch.amp.is_autocast_available(dev_type) else contextlib.nullcontext()
        with no_autocast:
            x = u.reshape(-1, self.n_qubits).to(self.dtype)
            w = self.weights.to(self.dtype)
            if x.shape[0] == 0:
                out = x.new_zeros(0, self.n_qubits) + 0 * w.sum()
            elif self.backend == "torch":
                out = torchsim.simulate(self._plan, x, w)
            else:
                out = self._run_pennylane(x, w)
        return out.reshape(*lead, self.n_qubits)

    def _run_pennylane(self, x: Tensor, w: Tensor) -> Tensor:
        if self._qnode is None:
            self._qnode = self._build_qnode()
        # Lightning hands back Python floats, which PennyLane's torch interface turns into tensors of
        # torch's *default* dtype (float32): make it ours during the call so float64 stays float64.
        with _default_dtype(self.dtype):
            try:
                res = self._qnode(x, w)  # x (N, n_q): PennyLane broadcasts over the N tokens
            except NotImplementedError as e:  # a gradient transform that cannot take broadcast tapes
                if not self._broadcast or "broadcast" not in str(e):
                    raise
                self._broadcast, self._qnode = False, None
                return self._run_pennylane(x, w)
        out = torch.stack([torch.as_tensor(r) for r in res], dim=-1)
        return out.reshape(x.shape[0], self.n_qubits).to(device=x.device, dtype=self.dtype)

    def __getstate__(self) -> dict:  # QNodes/devices do not pickle; rebuilt on first use
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_qnode"] = None
        return state

    def extra_repr(self) -> str:
        s = f"n_qubits={self.n_qubits}, n_layers={self.n_layers}, ansatz={self.ansatz!r}, backend={self.backend!r}"
        if self.backend == "pennylane":
            s += f", device={self.device_name!r}, diff_method={self.diff_method!r}, shots={self.shots}"
        return s + f", dtype={self.dtype}"
