"""``QNN``: the quantum layer of SPEC §1.5 as a torch module, on the torch kernel or a PennyLane device.

Whatever the backend, the circuit is the ansatz's PennyLane function from ``circuit.py``:
``backend="torch"`` executes its recorded tape with :mod:`qtha.quantum.torchsim` (exact, the
training default); ``backend="pennylane"`` builds a ``qml.QNode`` on any installed device by
name (:mod:`qtha.quantum.remote`) with ``interface="torch"``, ``diff_method`` and ``shots``
(set on the QNode, PennyLane's non-deprecated place), and passes all tokens in one broadcast
call (devices without broadcasting support get PennyLane's own per-token split). Gradient
transforms (parameter-shift, finite-diff, and "best" with shots) cannot differentiate broadcast
inputs in PennyLane 0.45, so for them the QNode is wrapped in ``qml.transforms.broadcast_expand``
(still one device call per forward: a batch of per-token tapes).

Realism (:mod:`qtha.quantum.noise`): depolarizing gate noise inserted into the circuit (needs
a channel-capable device: ``default.mixed``) and an analytic readout-confusion map on ⟨Z_i⟩
(any backend). For remote devices: device executions retried with backoff, and a per-token
result cache when no gradient is needed (evaluation).

The branch always computes in float32 or float64: autocast is disabled inside ``forward`` and
the inputs and weights are cast to the parameters' dtype (float32 if a whole-model cast made them
bf16/fp16).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Optional

import pennylane as qml
import torch
from torch import Tensor, nn

from qtha.quantum import torchsim
from qtha.quantum.circuit import ANSATZE, get_ansatz, make_qfunc, weight_shape
from qtha.quantum.noise import NoiseSpec, check_channels
from qtha.quantum.remote import ResultCache, load_device, with_retries
from qtha.quantum.settings import BACKENDS, check_settings, is_int

MAX_QUBITS = 20  # state vector: 2^20 amplitudes per token
DTYPES = (torch.float32, torch.float64)


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
    (L, 1, n_q) for ``hea``), initialised uniform in [−π, π) (as torchquantum does in the authors'
    code). ``noise``: gate noise and readout errors (:class:`~qtha.quantum.noise.NoiseSpec`); ``retries`` / ``backoff_s``: device executions
    retried after ``backoff_s · 2^k`` s; ``cache_size``: per-token results kept for calls that need
    no gradient (0: off).

    Gradients on a device without backprop/adjoint (hardware, shots) use parameter-shift, whose
    cost is circuits, not FLOPs: per token one forward circuit plus, for every gate angle that
    needs a gradient, one circuit per shift term — 2 for RX/RY/RZ, 4 for CRZ (two frequencies).
    Token angles need gradients too when the layer feeding the QNN trains (QTHA's A_lin). For 4 qubits
    and 1 layer (``adapter=qtha_spec_v1``: 16 weights = 8 RY + 8 CRZ, 4 input RYs): 1 + 8·2 + 8·4 + 4·2 = 57
    circuits per token per QNN (measured); at the default L = r = 4 layers, 1 + 4·(8·2 + 8·4 + 4·2) = 225.
    That is 57 (225) × batch × tokens per step per adapted module, in two device calls (forward batch,
    shifted batch); :mod:`qtha.quantum.resources` counts it for every run. The rule of thumb
    "2 × 16 weights + 1 = 33" undercounts: CRZ has a four-term rule and the input angles are shifted too.
    """

    def __init__(self, n_qubits: int, n_layers: int = 1, ansatz: str = "qtha", backend: str = "torch",
                 device: Any = "default.qubit", shots: Optional[int] = None, diff_method: str = "best",
                 dtype: torch.dtype = torch.float32, noise: Optional[NoiseSpec] = None, retries: int = 0,
                 backoff_s: float = 1.0, cache_size: int = 0) -> None:
        super().__init__()
        if not is_int(n_qubits) or not 1 <= n_qubits <= MAX_QUBITS:
            raise ValueError(f"n_qubits={n_qubits!r} is out of range; allowed: an int in 1..{MAX_QUBITS} "
                             "(state vector)")
        if not is_int(n_layers) or n_layers < 1:
            raise ValueError(f"n_layers={n_layers!r} is invalid; allowed: an int >= 1")
        n_qubits, n_layers = int(n_qubits), int(n_layers)
        if ansatz not in ANSATZE:
            raise ValueError(f"ansatz={ansatz!r} is unknown; allowed: {', '.join(sorted(ANSATZE))}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; allowed: torch.float32, torch.float64")
        noise = noise or NoiseSpec()
        check_settings(backend, device, shots, diff_method, noise, retries, backoff_s, cache_size)
        shots = int(shots) if shots is not None else None
        self.n_qubits, self.n_layers, self.ansatz = n_qubits, n_layers, ansatz
        self.backend, self.device_name, self.shots, self.diff_method = backend, device, shots, diff_method
        self.noise, self.retries, self.backoff_s = noise, int(retries), float(backoff_s)
        self._cache = ResultCache(cache_size) if cache_size and backend == "pennylane" else None
        self._fn = get_ansatz(ansatz)[0]
        shape = weight_shape(ansatz, n_qubits, n_layers)
        self.weights = nn.Parameter(torch.rand(shape, dtype=dtype) * (2 * math.pi) - math.pi)  # U[−π, π)
        self._qnode = None
        # One broadcast call over all tokens where the gradient method differentiates broadcast tapes
        # (backprop, adjoint); gradient transforms (parameter-shift, finite-diff, shots) get one tape per token.
        self._broadcast = diff_method in ("backprop", "adjoint", "device") or (diff_method == "best" and shots is None)
        self._sim_cache: dict = {}  # the torch kernel's unitaries between no-gradient calls (generation)
        if backend == "torch":  # record + fuse the circuit now: unsupported gates fail at construction
            self._plan = torchsim.get_plan(self._fn, n_qubits, shape)
        else:
            self._qnode = self._build_qnode()

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: the parameters' (``.double()`` → float64 end to end), float32 when a
        whole-model cast made them half precision (the branch never computes in bf16/fp16)."""
        return self.weights.dtype if self.weights.dtype in DTYPES else torch.float32

    @classmethod
    def from_config(cls, n_qubits: int, n_layers: int, ansatz: str, q: Any) -> "QNN":
        """The QNN a ``QuantumConfig`` (dataclass or DictConfig) describes."""
        return cls(n_qubits, n_layers, ansatz=ansatz, backend=q.backend, device=q.device, shots=q.shots,
                   diff_method=q.diff_method, dtype=getattr(torch, q.dtype),
                   noise=NoiseSpec.of(q.noise, q.p1, q.p2, q.readout), retries=q.retries, backoff_s=q.backoff_s,
                   cache_size=q.cache_size)

    @staticmethod
    def num_params(n_qubits: int, n_layers: int = 1, ansatz: str = "qtha") -> int:
        return math.prod(weight_shape(ansatz, n_qubits, n_layers))

    def _build_qnode(self) -> Any:
        dev = self.device_name
        if isinstance(dev, str):
            dev = load_device(dev, self.n_qubits)
        if self.noise.gate_noise:
            check_channels(dev, self.noise)
        dev = with_retries(dev, self.retries, self.backoff_s)
        qfunc = self.noise.add_gate_noise(make_qfunc(self._fn, self.n_qubits))
        qnode = qml.QNode(qfunc, dev, interface="torch", diff_method=self.diff_method, shots=self.shots)
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
                out = torchsim.simulate(self._plan, x, w, cache=self._sim_cache)
            else:
                out = self._run_pennylane(x, w)
            out = self.noise.apply_readout(out)
        return out.reshape(*lead, self.n_qubits)

    def _run_pennylane(self, x: Tensor, w: Tensor) -> Tensor:
        if self._cache is None or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)):
            return self._execute(x, w)
        tag = (getattr(self.device_name, "name", self.device_name), self.shots, self.noise)
        return self._cache.run(x, w, lambda rows: self._execute(rows, w), tag)

    def _execute(self, x: Tensor, w: Tensor) -> Tensor:
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
                return self._execute(x, w)
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
        if self.noise != NoiseSpec():
            s += f", noise={self.noise}"
        return s + f", dtype={self.dtype}"
