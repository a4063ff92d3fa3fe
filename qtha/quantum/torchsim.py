"""Batched state-vector kernel, in plain torch, for a circuit written as a PennyLane function.

The circuit is never re-written here: :func:`record` runs the ansatz (``circuit.py``) once
through ``qml.tape.make_qscript`` with placeholder tensors and reads the gate structure off
the tape (names, wires, which input / weight entry feeds each angle). :func:`build_plan`
turns the gate list into fused passes, and :func:`simulate` executes the plan on all N tokens
at once (float32/complex64 or float64/complex128, differentiable in inputs and weights).

Recording and mapping. The quantum function is traced twice with random float64 placeholder
tensors ``inputs`` (n_q,) and ``weights`` (weight shape), both ``requires_grad``. Every gate
angle on the tape is a torch scalar still attached to the placeholders, so autograd tells
which single entry it depends on and with which slope: angle = coeff · source[idx] + offset
(source = inputs or weights; no dependence = a constant). The second trace (other values)
checks that the map is affine. Gates outside :data:`SUPPORTED_GATES` are decomposed with
PennyLane's own ``op.decomposition()`` (angles stay attached, so the mapping still works);
a gate with no decomposition into supported gates raises :class:`UnsupportedGateError`.

Execution plan (PennyLane wire order: wire 0 is the most significant bit). The state is a
(2^n, B) tensor, tokens last (B = N, or 1 before any data gate): real while every gate so far
is real (RY, CNOT, H, X, Z, CZ), complex64/complex128 from the first complex gate on.
* Product prefix: single-qubit gates that act before any multi-qubit gate touches their wire
  act on |0⟩ of that wire; they give per-token 2-vectors, and the state is their Kronecker
  product (batched outer products). For the qtha ansatz this is the first RY(u) layer:
  ⊗_i [cos(u_i/2), sin(u_i/2)].
* Passes: the remaining gates, fused greedily in order into a *diagonal* pass (RZ, CRZ, CZ,
  PhaseShift, ControlledPhaseShift, IsingZZ, Z, S, T: one phase vector exp(i(Aθ + φ0)), A a
  precomputed (2^n, k) table — every CRZ ring is one such pass), a *single-qubit* pass (one
  2×2 matrix per wire, the product of that wire's gates) or a *permutation* pass (CNOT, SWAP:
  one composed index gather). A pass with an angle from the inputs (data re-uploading) is a
  *data* pass and runs per token. Per-token RX / RY(φ) are first rewritten as a fixed basis
  change, RZ(φ), and the change back (RY = SH·RZ·HS†, RX = H·RZ·H): a layer of re-uploads is
  then one diagonal pass — one (N, k)@(k, 2^n) phase matmul, cos/sin, one complex multiply —
  and the basis changes fuse into the neighbouring fixed passes (free on the unitary path).
  Fixed phase gates that end a 1q pass move into the diagonal pass after it. (``diagonal_data=False``
  keeps per-wire 2×2 rotations broadcast over the token axis: the reference path.) The other
  passes form *fixed* blocks between data passes.
* A fixed single-qubit pass is applied as Kronecker-structured matmuls: the wires are cut into
  ranges of at most 6, each range's kron(2×2 …) is one (2^g × 2^g) matrix applied with one
  (batched) matmul on a view of the state — one range (a dense 2^n×2^n matmul) up to 6 qubits,
  two ranges up to 12. A real matrix on a complex state acts on its real view (half the cost).
* Cost model for a fixed block, decided per call since it depends on N: applying its passes
  costs G per token (2^n per diagonal or permutation pass, 2^n·2^g per wire range of a
  single-qubit pass); precomputing the block's unitary costs 2^n·G (the same passes run on the
  2^n basis states as a batch) plus N·4^n for one matmul. The unitary is used iff
  N·4^n + 2^n·G < N·G; both paths give the same result (tested).
* Readout: ⟨Z_i⟩ = Z @ |ψ|² with a precomputed (n, 2^n) table of ±1 (one matmul; above 2^22
  table entries, per-wire marginal sums instead). Its backward is a custom one-matmul VJP.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import pennylane as qml
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

ONE_QUBIT_PARAM = ("RX", "RY", "RZ", "PhaseShift")
ONE_QUBIT_FIXED = ("Hadamard", "PauliX", "PauliY", "PauliZ", "S", "T")
DIAG_MULTI = ("CRZ", "ControlledPhaseShift", "IsingZZ", "CZ")
PERMUTATIONS = ("CNOT", "SWAP")
IGNORED = ("Identity", "GlobalPhase", "Barrier")  # no effect on expectation values
SUPPORTED_GATES = frozenset(ONE_QUBIT_PARAM + ONE_QUBIT_FIXED + DIAG_MULTI + PERMUTATIONS)
_DIAG_1Q = ("RZ", "PhaseShift", "PauliZ", "S", "T", "Sdg")  # single-qubit gates that may join a diagonal pass
_REAL_1Q = ("RY", "Hadamard", "PauliX", "PauliZ")
# Basis changes (before, after) that turn a per-token rotation into RZ:
# RY(φ) = SH·RZ(φ)·HS†, RX(φ) = H·RZ(φ)·H.
# "Sdg" (S†) is emitted only by this rewrite, never recorded.
_TO_Z = {"RY": (("Sdg", "Hadamard"), ("Hadamard", "S")), "RX": (("Hadamard",), ("Hadamard",))}
_MODES = ("auto", "unitary", "gates")
_MAX_CHUNK = 6  # wires per Kronecker-structured matmul of a single-qubit pass
_MAX_TABLE = 2 ** 22  # entries of a precomputed (k, 2^n) phase or (n, 2^n) readout table
_COMPLEX_FIXED = ("PauliY", "S", "T", "Sdg")
_MAX_DECOMP_DEPTH = 8


class UnsupportedGateError(ValueError):
    """The recorded circuit holds a gate (or an angle map) the torch kernel cannot execute."""


# ----------------------------------------------------------------------------- recording
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


# ----------------------------------------------------------------------------- gate algebra
def _bit(n: int, wire: int, device: Any = None) -> Tensor:
    """(2^n,) float64: the bit of ``wire`` in each basis index (wire 0 = most significant)."""
    return ((torch.arange(2 ** n, device=device) >> (n - 1 - wire)) & 1).double()


def _diag_column(g: Gate, n: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """(slope, constant) phases over the basis for one diagonal gate: phase = slope·θ + constant."""
    b = [_bit(n, w, device) for w in g.wires]
    z = [1 - 2 * bw for bw in b]
    zero = torch.zeros(2 ** n, dtype=torch.float64, device=device)
    if g.name == "RZ":
        return -0.5 * z[0], zero
    if g.name == "PhaseShift":
        return b[0], zero
    if g.name == "CRZ":
        return -0.5 * b[0] * z[1], zero
    if g.name == "ControlledPhaseShift":
        return b[0] * b[1], zero
    if g.name == "IsingZZ":
        return -0.5 * z[0] * z[1], zero
    if g.name == "CZ":
        return zero, math.pi * b[0] * b[1]
    if g.name == "PauliZ":
        return zero, math.pi * b[0]
    if g.name == "S":
        return zero, 0.5 * math.pi * b[0]
    if g.name == "Sdg":
        return zero, -0.5 * math.pi * b[0]
    if g.name == "T":
        return zero, 0.25 * math.pi * b[0]
    raise AssertionError(g.name)


def _perm(g: Gate, n: int) -> Tensor:
    """Index map p with ψ_new = ψ[..., p] for a permutation gate."""
    b = torch.arange(2 ** n)
    if g.name == "CNOT":
        c, t = g.wires
        return b ^ (((b >> (n - 1 - c)) & 1) << (n - 1 - t))
    if g.name == "SWAP":
        a, c = g.wires
        sa, sc = n - 1 - a, n - 1 - c
        diff = ((b >> sa) & 1) ^ ((b >> sc) & 1)
        return b ^ ((diff << sa) | (diff << sc))
    raise AssertionError(g.name)


_FIXED_1Q = {
    "Hadamard": [[1 / math.sqrt(2), 1 / math.sqrt(2)], [1 / math.sqrt(2), -1 / math.sqrt(2)]],
    "PauliX": [[0, 1], [1, 0]],
    "PauliY": [[0, -1j], [1j, 0]],
    "PauliZ": [[1, 0], [0, -1]],
    "S": [[1, 0], [0, 1j]],
    "Sdg": [[1, 0], [0, -1j]],
    "T": [[1, 0], [0, complex(math.cos(math.pi / 4), math.sin(math.pi / 4))]],
}


@functools.lru_cache(maxsize=None)
def _shift(kind: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Constant phase offsets, made once per dtype and device instead of on every call: "RY" for the
    RY matrix, "RY|0>" for RY applied to |0⟩."""
    rows = [[0.0, math.pi / 2], [-math.pi / 2, 0.0]] if kind == "RY" else [0.0, -math.pi / 2]
    return torch.tensor(rows, dtype=dtype, device=device)


def _rot_mats(name: str, theta: Tensor) -> Tensor:
    """(..., k, 2, 2) matrices of a parametrised single-qubit gate for angles (..., k)."""
    if name == "RY":  # [[cos h, −sin h], [sin h, cos h]] = cos(h + [[0, π/2], [−π/2, 0]]): one op
        return torch.cos(torch.add(_shift("RY", theta.dtype, theta.device), theta[..., None, None], alpha=0.5))
    half = theta * 0.5
    c, s = torch.cos(half), torch.sin(half)
    zero = torch.zeros_like(c)
    if name == "RX":
        return torch.complex(torch.stack([c, zero, zero, c], -1),
                             torch.stack([zero, -s, -s, zero], -1)).unflatten(-1, (2, 2))
    if name == "RZ":
        return torch.complex(torch.stack([c, zero, zero, c], -1),
                             torch.stack([-s, zero, zero, s], -1)).unflatten(-1, (2, 2))
    if name == "PhaseShift":
        one = torch.ones_like(c)
        return torch.complex(torch.stack([one, zero, zero, torch.cos(theta)], -1),
                             torch.stack([zero, zero, zero, torch.sin(theta)], -1)).unflatten(-1, (2, 2))
    raise AssertionError(name)


def _cdtype(rdtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if rdtype == torch.float64 else torch.complex64


def _chunks(n: int) -> list[tuple[int, int]]:
    """Contiguous wire ranges (start, size) for Kronecker-structured single-qubit passes: one
    range up to 6 wires (one 2^n×2^n matmul), else balanced ranges of at most 6 wires (the first
    applied as a batched matmul, the last as one plain matmul)."""
    if n <= _MAX_CHUNK:
        return [(0, n)]
    k = -(-n // _MAX_CHUNK)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [(sum(sizes[:i]), g) for i, g in enumerate(sizes)]


# ----------------------------------------------------------------------------- plan
@dataclass
class _Angles:
    """Where k angles come from: θ = coeff · source[idx] + offset (a vectorised :class:`Gate` map)."""

    idx: Tensor
    coeff: Tensor
    offset: Tensor
    data: bool
    unit: bool = False  # coeff = 1 and offset = 0: θ = source[idx]
    span: Optional[tuple[int, int]] = None  # idx is the contiguous range [start, stop): a slice, no gather

    @staticmethod
    def of(gates: Sequence[Gate], const_slot: int) -> "_Angles":
        idx = [g.idx if g.src in ("input", "weight") else const_slot for g in gates]
        coeff = [g.coeff for g in gates]
        offset = [g.offset for g in gates]
        unit = all(c == 1.0 for c in coeff) and not any(offset)
        span = (idx[0], idx[0] + len(idx)) if idx == list(range(idx[0], idx[0] + len(idx))) else None
        return _Angles(torch.tensor(idx, dtype=torch.long), torch.tensor(coeff, dtype=torch.float64),
                       torch.tensor(offset, dtype=torch.float64), any(g.is_data for g in gates), unit, span)

    def to(self, device: torch.device, rdtype: torch.dtype) -> "_Angles":
        return _Angles(self.idx.to(device), self.coeff.to(device, rdtype), self.offset.to(device, rdtype),
                       self.data, self.unit, self.span)

    def __call__(self, x: Tensor, w_ext: Tensor) -> Tensor:
        """(N, k) angles for data maps, (k,) for weight/constant maps."""
        src, dim = (x, 1) if self.data else (w_ext, 0)
        if self.span is not None:
            src = src.narrow(dim, self.span[0], self.span[1] - self.span[0])
        else:
            src = src.index_select(dim, self.idx)
        return src if self.unit else src * self.coeff + self.offset


@dataclass
class _Level:
    """The d-th gate of each wire of a single-qubit pass, grouped by gate name for batching."""

    pos: Tensor  # positions (into the pass's wire list) that have a d-th gate, ascending
    groups: list[tuple[str, Optional[_Angles], Optional[Tensor]]]  # (name, angle map | None, fixed (k, 2, 2) | None)
    order: Optional[Tensor]  # permutation taking the concatenated groups to ``pos`` order (None: identity)

    def to(self, device: torch.device, rdtype: torch.dtype) -> "_Level":
        groups = [(nm, a.to(device, rdtype) if a is not None else None,
                   (m.to(device, _cdtype(rdtype)) if m.is_complex() else m.to(device, rdtype)) if m is not None
                   else None) for nm, a, m in self.groups]
        return _Level(self.pos.to(device), groups, self.order.to(device) if self.order is not None else None)

    def mats(self, x: Tensor, w_ext: Tensor) -> Tensor:
        """(B, P, 2, 2) matrices (real or complex); B = N when an angle is per token, else 1."""
        parts = []
        for name, ang, fixed in self.groups:
            if fixed is not None:
                parts.append(fixed.unsqueeze(0))
            else:
                theta = ang(x, w_ext)
                parts.append(_rot_mats(name, theta if theta.dim() == 2 else theta.unsqueeze(0)))
        if len(parts) == 1:
            return parts[0]
        if any(p.is_complex() for p in parts):
            cd = next(p.dtype for p in parts if p.is_complex())
            parts = [p.to(cd) for p in parts]
        b = max(p.shape[0] for p in parts)
        out = torch.cat([p.expand(b, *p.shape[1:]) for p in parts], dim=1)
        return out if self.order is None else out.index_select(1, self.order)


def _levels(per_wire: list[list[Gate]], const_slot: int) -> list[_Level]:
    depth = max(len(gs) for gs in per_wire)
    levels = []
    for d in range(depth):
        pos = [j for j, gs in enumerate(per_wire) if len(gs) > d]
        groups: dict[tuple[str, bool, bool], list[int]] = {}  # (name, has an angle, angle from the inputs)
        for j in pos:
            g = per_wire[j][d]
            groups.setdefault((g.name, g.src != "none", g.is_data), []).append(j)
        specs, concat = [], []
        for (name, param, _), js in groups.items():
            if param:
                specs.append((name, _Angles.of([per_wire[j][d] for j in js], const_slot), None))
            else:
                dtype = torch.complex128 if name in _COMPLEX_FIXED else torch.float64
                fixed = torch.tensor(_FIXED_1Q[name], dtype=dtype)
                specs.append((name, None, fixed.expand(len(js), 2, 2).contiguous()))  # one per wire of the group
            concat.extend(js)
        where = {j: i for i, j in enumerate(concat)}
        order = [where[j] for j in pos]
        levels.append(_Level(torch.tensor(pos, dtype=torch.long), specs,
                             None if order == list(range(len(pos))) else torch.tensor(order, dtype=torch.long)))
    return levels


@dataclass
class _Pass:
    kind: str  # "diag" | "1q" | "perm"
    gates: list[Gate]
    n: int
    cost: int  # per-token work of applying this pass (the cost model's G)
    data: bool = False  # some angle is per token
    real: bool = True  # keeps a real state real
    # diag: phase = phase0 + Σ θ_group @ table_group (table None: too large to keep, built per call)
    groups: list[tuple[_Angles, Optional[Tensor], list[Gate]]] = field(default_factory=list)
    phase0: Optional[Tensor] = None
    # 1q
    wires: list[int] = field(default_factory=list)
    levels: list[_Level] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)
    kron_index: list[Tensor] = field(default_factory=list)  # per chunk, for :func:`_kron`
    kron_eye: list[bool] = field(default_factory=list)  # per chunk: a wire of it has no gate in this pass
    # perm
    perm: Optional[Tensor] = None

    def to(self, device: torch.device, rdtype: torch.dtype) -> "_Pass":
        p = _Pass(self.kind, self.gates, self.n, self.cost, self.data, self.real, wires=self.wires,
                  chunks=self.chunks, kron_eye=self.kron_eye)
        if self.kind == "diag":
            p.groups = [(a.to(device, rdtype), t.to(device, rdtype) if t is not None else None, gs)
                        for a, t, gs in self.groups]
            p.phase0 = self.phase0.to(device, rdtype)
        elif self.kind == "1q":
            p.levels = [lv.to(device, rdtype) for lv in self.levels]
            p.kron_index = [t.to(device) for t in self.kron_index]
        else:
            p.perm = self.perm.to(device)
        return p


def _make_pass(kind: str, gates: list[Gate], n: int, const_slot: int) -> _Pass:
    dim = 2 ** n
    if kind == "diag":
        phase0 = sum((_diag_column(g, n)[1] for g in gates), torch.zeros(dim, dtype=torch.float64))
        groups = []
        for data in (False, True):
            gs = [g for g in gates if g.src != "none" and g.is_data == data]
            if gs:  # (k, 2^n) slopes, or None above the size limit: then built column by column per call
                table = torch.stack([_diag_column(g, n)[0] for g in gs], 0) if dim * len(gs) <= _MAX_TABLE else None
                groups.append((_Angles.of(gs, const_slot), table, gs))
        real = not groups and bool(torch.all(torch.sin(phase0).abs() < 1e-12))  # CZ / Z only: ±1
        return _Pass("diag", gates, n, dim, any(a.data for a, _, _ in groups), real, groups=groups, phase0=phase0)
    if kind == "1q":
        wires = sorted({g.wires[0] for g in gates})
        per_wire = [[g for g in gates if g.wires[0] == w] for w in wires]
        chunks = [(s, g) for s, g in _chunks(n) if any(s <= w < s + g for w in wires)]
        real = all(g.name in _REAL_1Q for g in gates)
        pos = {w: j for j, w in enumerate(wires)}
        kron_index = [_kron_index([pos.get(w, len(wires)) for w in range(st, st + g)]) for st, g in chunks]
        kron_eye = [any(w not in pos for w in range(st, st + g)) for st, g in chunks]
        return _Pass("1q", gates, n, sum(dim * 2 ** g for _, g in chunks), any(g.is_data for g in gates), real,
                     wires=wires, levels=_levels(per_wire, const_slot), chunks=chunks, kron_index=kron_index,
                     kron_eye=kron_eye)
    perm = torch.arange(dim)
    for g in gates:  # apply p1 then p2: ψ[p1][p2] = ψ[p1[p2]]
        perm = perm[_perm(g, n)]
    return _Pass("perm", gates, n, dim, perm=perm)


def _kind(g: Gate) -> str:
    if g.name in PERMUTATIONS:
        return "perm"
    if g.name in DIAG_MULTI:
        return "diag"
    return "1q"


def _diagonalize_data(gates: list[Gate]) -> list[Gate]:
    """Each per-token RX / RY(φ) as basis change · RZ(φ) · basis change back (:data:`_TO_Z`), a run of
    consecutive ones on distinct wires at a time: [changes] [RZs] [changes back].

    Why: per-token 2×2 matrices cost several full-state elementwise passes per wire; a layer of
    per-token RZs is one diagonal pass, and the fixed basis changes fuse into the neighbouring fixed
    passes. It pays even where it turns a real state complex (hea, RY + CNOT, measured fwd+bwd at N=1024:
    1.3–1.8× with 4 layers at 5–10 qubits and with 2 layers at 7–10, a tie with 2 layers at 4–6).
    """
    out: list[Gate] = []
    run: list[Gate] = []

    def flush() -> None:
        out.extend(Gate(name, g.wires) for g in run for name in _TO_Z[g.name][0])
        out.extend(replace(g, name="RZ") for g in run)
        out.extend(Gate(name, g.wires) for g in run for name in _TO_Z[g.name][1])
        run.clear()

    for g in gates:
        if g.is_data and g.name in _TO_Z:
            if any(r.wires == g.wires for r in run):
                flush()
            run.append(g)
        else:
            flush()
            out.append(g)
    flush()
    return out


def _defer_phases(runs: list[tuple[str, list[Gate]]]) -> list[tuple[str, list[Gate]]]:
    """Move each fixed single-qubit phase gate that ends a 1q run on its wire into the diagonal run
    right after it (they commute): there it is free, in the 1q pass it can make the matrices complex."""
    for (kind, gs), (nxt_kind, nxt) in zip(runs, runs[1:]):
        if kind != "1q" or nxt_kind != "diag":
            continue
        last = {g.wires[0]: j for j, g in enumerate(gs)}
        moved = [j for j, g in enumerate(gs) if g.name in _DIAG_1Q and not g.is_data and last[g.wires[0]] == j]
        nxt[:0] = [gs[j] for j in moved]
        gs[:] = [g for j, g in enumerate(gs) if j not in moved]
    return [(k, gs) for k, gs in runs if gs]


def _fuse(gates: list[Gate], n: int, const_slot: int, diagonal_data: bool) -> list[_Pass]:
    """Greedy in-order fusion into diagonal / single-qubit / permutation passes. ``diagonal_data``:
    per-token phase gates always form diagonal passes (never per-token 2×2s), and fixed phases that
    end a 1q run move into the next diagonal pass."""
    runs: list[tuple[str, list[Gate]]] = []
    for g in gates:
        k = "diag" if diagonal_data and g.is_data and g.name in _DIAG_1Q else _kind(g)
        if runs and (runs[-1][0] == k or (runs[-1][0] == "diag" and g.name in _DIAG_1Q)):
            runs[-1][1].append(g)
        else:
            runs.append((k, [g]))
    if diagonal_data:
        runs = _defer_phases(runs)
    return [_make_pass(k, gs, n, const_slot) for k, gs in runs]


@dataclass
class _Block:
    data: bool
    passes: list[_Pass]

    @property
    def cost(self) -> int:
        return sum(p.cost for p in self.passes)


@dataclass
class Plan:
    """A recorded circuit, fused for the kernel. Build with :func:`build_plan` / :func:`get_plan`."""

    n_qubits: int
    weight_shape: tuple
    gates: list[Gate]
    prefix: list[_Level]  # single-qubit gates on |0⟩ (per wire, by depth)
    prefix_wires: list[int]
    blocks: list[_Block]
    ztable: Optional[Tensor]  # (n, 2^n): z_i(k) = ±1, the readout table of ⟨Z_i⟩ (None above the size limit)
    diagonal_data: bool = True  # per-token rotations rewritten as diagonal passes (see :func:`build_plan`)
    _cache: dict = field(default_factory=dict, repr=False)

    def materialize(self, device: torch.device, rdtype: torch.dtype) -> "Plan":
        """This plan with its tables on ``device`` in ``rdtype`` (cached)."""
        key = (str(device), rdtype)
        if key not in self._cache:
            # Built outside inference mode: the first call may come from a Lightning validation
            # loop (inference_mode), and inference tensors cannot be saved for a later backward.
            with torch.inference_mode(False):
                self._cache[key] = self._moved(device, rdtype)
        return self._cache[key]

    def _moved(self, device: torch.device, rdtype: torch.dtype) -> "Plan":
        return Plan(
            self.n_qubits, self.weight_shape, self.gates, [lv.to(device, rdtype) for lv in self.prefix],
            self.prefix_wires, [_Block(b.data, [p.to(device, rdtype) for p in b.passes]) for b in self.blocks],
            self.ztable.to(device, rdtype) if self.ztable is not None else None, self.diagonal_data)

    def describe(self) -> str:
        lines = [f"Plan: {self.n_qubits} qubits, weights {self.weight_shape}, {len(self.gates)} gates; "
                 f"product prefix on wires {self.prefix_wires} ({len(self.prefix)} level(s)); "
                 f"diagonal_data={self.diagonal_data}"]
        for i, b in enumerate(self.blocks):
            kinds = ", ".join(f"{p.kind}[{len(p.gates)}]" for p in b.passes)
            lines.append(f"  block {i} ({'data' if b.data else 'fixed'}, cost/token {b.cost}): {kinds}")
        return "\n".join(lines)


def build_plan(fn: Callable, n_qubits: int, wshape: tuple, diagonal_data: bool = True) -> Plan:
    """Record ``fn`` (see :func:`record`) and fuse it into a :class:`Plan`.

    ``diagonal_data``: per-token gates after the product prefix run as diagonal passes, RX / RY between
    fixed basis changes (:func:`_diagonalize_data`); False: as per-token 2×2 matrices, wire by wire
    (the reference path for tests and benchmarks).
    """
    n = int(n_qubits)
    wshape = tuple(int(s) for s in wshape)
    gates = record(fn, n, wshape)
    const_slot = math.prod(wshape)  # index of the zero appended to the flat weight vector
    touched: set[int] = set()
    prefix_gates: list[Gate] = []
    rest: list[Gate] = []
    for g in gates:  # a single-qubit gate on a wire no multi-qubit gate has touched acts on |0⟩ ⊗ …
        if len(g.wires) == 1 and g.wires[0] not in touched:
            prefix_gates.append(g)
        else:
            rest.append(g)
            touched.update(g.wires)
    prefix_wires = sorted({g.wires[0] for g in prefix_gates})
    prefix = _levels([[g for g in prefix_gates if g.wires[0] == w] for w in prefix_wires], const_slot) \
        if prefix_gates else []
    if diagonal_data:
        rest = _diagonalize_data(rest)
    blocks: list[_Block] = []
    for p in _fuse(rest, n, const_slot, diagonal_data):  # data passes alone; fixed ones group into blocks
        if p.data or not blocks or blocks[-1].data:
            blocks.append(_Block(p.data, [p]))
        else:
            blocks[-1].passes.append(p)
    ztable = None
    if n * 2 ** n <= _MAX_TABLE:
        ztable = torch.stack([1 - 2 * _bit(n, w) for w in range(n)], 0)
    return Plan(n, wshape, gates, prefix, prefix_wires, blocks, ztable, diagonal_data)


_PLANS: dict[tuple, Plan] = {}


def get_plan(fn: Callable, n_qubits: int, wshape: tuple, diagonal_data: bool = True) -> Plan:
    """:func:`build_plan`, cached per (function, n_qubits, weight shape, diagonal_data)."""
    key = (fn, int(n_qubits), tuple(int(s) for s in wshape), bool(diagonal_data))
    if key not in _PLANS:
        _PLANS[key] = build_plan(fn, n_qubits, wshape, diagonal_data)
    return _PLANS[key]


# ----------------------------------------------------------------------------- execution
# The state is a tensor s of shape (2^n, B), tokens last: real while every gate so far was
# real, complex (complex64 / complex128) from the first complex gate on; B = N tokens, or 1
# before any data gate. With tokens last, a fixed matrix on a range of wires is one (batched)
# matmul on a view of s; a real matrix on a complex state works on its real view (the real and
# imaginary parts ride along in the trailing dimension) at half the cost.
def _onequbit_matrices(levels: list[_Level], x: Tensor, w_ext: Tensor) -> Tensor:
    """(B, P, 2, 2): per position (wire), the product of its gates, last gate leftmost."""
    m = levels[0].mats(x, w_ext)
    for lv in levels[1:]:
        g = lv.mats(x, w_ext)
        if g.is_complex() and not m.is_complex():
            m = m.to(g.dtype)
        elif m.is_complex() and not g.is_complex():
            g = g.to(m.dtype)
        bsz = max(m.shape[0], g.shape[0])
        m = m.expand(bsz, *m.shape[1:])
        m = m.index_copy(1, lv.pos, g.expand(bsz, *g.shape[1:]) @ m.index_select(1, lv.pos))
    return m


def _kron(m: Tensor, flat: Tensor, with_eye: bool) -> Tensor:
    """(2^g, 2^g): the Kronecker product of g of the pass's 2×2 matrices ``m`` (1, P, 2, 2) in one
    gather and one product: K[r, c] = Π_t m[wire_t, r_t, c_t] (``flat`` from :func:`_kron_index`;
    index P·4.. is the identity, for a wire of the range the pass leaves alone)."""
    mats = m.reshape(-1)  # m is (1, P, 2, 2): reshape, not m[0], whose backward zero-fills
    if with_eye:
        mats = torch.cat([mats, torch.eye(2, dtype=m.dtype, device=m.device).reshape(-1)])
    g = flat.shape[0]
    return mats.index_select(0, flat.reshape(-1)).reshape(g, 2 ** g, 2 ** g).prod(0)


def _kron_index(positions: list[int]) -> Tensor:
    """(g, 2^g, 2^g) indices into the flattened (P+1, 2, 2) matrix stack for :func:`_kron`."""
    g = len(positions)
    r = torch.arange(2 ** g)
    shifts = torch.arange(g - 1, -1, -1)
    rb = (r[None, :] >> shifts[:, None]) & 1  # (g, 2^g): bit t of the row index
    pos = torch.tensor(positions)[:, None, None]
    return pos * 4 + rb[:, :, None] * 2 + rb[:, None, :]


def _matmul_wires(k: Tensor, t: Tensor, start: int, size: int) -> Tensor:
    a, g = 2 ** start, 2 ** size
    x = t.reshape(a, g, -1)
    return k @ x.reshape(g, -1) if a == 1 else torch.matmul(k.expand(a, g, g), x)


def _apply_fixed(s: Tensor, k: Tensor, start: int, size: int) -> Tensor:
    """Apply a fixed (2^size, 2^size) matrix to wires start..start+size−1: one (batched) matmul."""
    if s.is_complex() and not k.is_complex():  # real matrix, complex state: on the real view
        v = torch.view_as_real(s)
        return torch.view_as_complex(_matmul_wires(k, v, start, size).reshape(v.shape))
    if k.is_complex() and not s.is_complex():
        s = s.to(k.dtype)
    return _matmul_wires(k, s, start, size).reshape(s.shape)


def _apply_per_token(s: Tensor, m: Tensor, wire: int) -> Tensor:
    """Apply per-token 2×2 matrices m (B, 2, 2) to ``wire``: broadcast over the token axis. ``unbind``,
    not slicing: the backward of a slice zero-fills a full-size gradient per slice."""
    x0, x1 = s.reshape(2 ** wire, 2, -1, s.shape[-1]).unbind(1)  # (wires before, wires after, tokens) each
    m00, m01, m10, m11 = m.reshape(-1, 4).T.unbind(0)  # (B,) each
    return torch.stack([torch.addcmul(x0 * m00, x1, m01), torch.addcmul(x0 * m10, x1, m11)],
                       1).reshape(s.shape[0], -1)


def _apply_pass(s: Tensor, p: _Pass, x: Tensor, w_ext: Tensor) -> Tensor:
    if p.kind == "perm":
        return s.index_select(0, p.perm)
    if p.kind == "diag":
        phase = p.phase0  # (2^n,), then (2^n, N) once a per-token group is added
        for ang, table, gates in p.groups:  # fixed group first, per-token group last
            theta = ang(x, w_ext)  # (k,) or (N, k)
            if table is None:  # large n: one column at a time instead of a (k, 2^n) table
                table = torch.stack([_diag_column(g, p.n, s.device)[0].to(s.real.dtype) for g in gates], 0)
            phase = torch.addmm(phase.unsqueeze(1), table.T, theta.T) if theta.dim() == 2 else \
                torch.addmv(phase, table.T, theta)
        phase = phase.unsqueeze(1) if phase.dim() == 1 else phase
        if p.real:  # ±1 (CZ / Z only)
            return s * torch.cos(phase)
        return _PhaseMul.apply(s, phase)
    m = _onequbit_matrices(p.levels, x, w_ext)  # (B, P, 2, 2), B = N (per token) or 1
    if m.shape[0] > 1:
        for j, w in enumerate(p.wires):
            s = _apply_per_token(s, m[:, j], w)
        return s
    for (start, size), flat, eye in zip(p.chunks, p.kron_index, p.kron_eye):
        s = _apply_fixed(s, _kron(m, flat, eye), start, size)
    return s


def _product_state(plan: Plan, x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> Tensor:
    """(2^n, B): the Kronecker product of the prefix's per-wire vectors G…G|0⟩."""
    vecs: dict[int, Tensor] = {}
    if len(plan.prefix) == 1 and all(nm == "RY" and a is not None for nm, a, _ in plan.prefix[0].groups):
        # RY(θ)|0⟩ = (cos θ/2, sin θ/2) = cos(θ/2 − (0, π/2)): the data-encoding layer in one op
        lv = plan.prefix[0]
        thetas = [a(x, w_ext) for _, a, _ in lv.groups]  # (N, k) per token or (k,) fixed
        bsz = x.shape[0] if any(t.dim() == 2 for t in thetas) else 1
        theta = thetas[0] if len(thetas) == 1 and thetas[0].dim() == 2 else \
            torch.cat([t if t.dim() == 2 else t.unsqueeze(0).expand(bsz, -1) for t in thetas], 1)
        if lv.order is not None:
            theta = theta.index_select(1, lv.order)
        cols = torch.cos(torch.add(_shift("RY|0>", theta.dtype, theta.device), theta.unsqueeze(-1), alpha=0.5))
        cols = cols.permute(1, 2, 0).contiguous()
        vecs = dict(zip(plan.prefix_wires, cols.unbind(0)))  # unbind: one backward node, no zero-fills
    elif plan.prefix:
        cols = _onequbit_matrices(plan.prefix, x, w_ext)[..., 0]  # (B, P, 2): the gates applied to |0⟩
        cols = cols.permute(1, 2, 0).contiguous()  # (P, 2, B): tokens last, so is every product below
        vecs = dict(zip(plan.prefix_wires, cols.unbind(0)))
    complex_ = any(v.is_complex() for v in vecs.values())
    zero = torch.zeros(2, 1, dtype=_cdtype(rdtype) if complex_ else rdtype, device=w_ext.device)
    zero[0, 0] = 1
    psi = None
    for w in range(plan.n_qubits):
        v = vecs.get(w, zero).to(zero.dtype)
        psi = v if psi is None else (psi.unsqueeze(1) * v.unsqueeze(0)).reshape(2 * psi.shape[0], -1)
    return psi


def _fixed_unitary(block: _Block, n: int, x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> Tensor:
    """(2^n, 2^n): the block's unitary U, computed by running its passes on the 2^n basis states
    as a batch of tokens (column j = U|j⟩)."""
    s = torch.eye(2 ** n, dtype=rdtype, device=w_ext.device)
    for p in block.passes:
        s = _apply_pass(s, p, x, w_ext)
    return s


def _apply_unitary(s: Tensor, u: Tensor) -> Tensor:
    """ψ ← U ψ for every token: one matmul."""
    if s.is_complex() and not u.is_complex():
        v = torch.view_as_real(s)
        return torch.view_as_complex((u @ v.reshape(v.shape[0], -1)).reshape(v.shape))
    if u.is_complex() and not s.is_complex():
        s = s.to(u.dtype)
    return u @ s


def use_unitary(block: _Block, n: int, n_tokens: int) -> bool:
    """The cost model: precompute the block's 2^n×2^n unitary iff N·4^n + 2^n·G < N·G, where G is
    the per-token cost of applying the block's fused passes one by one."""
    g = block.cost
    return n_tokens * 4 ** n + 2 ** n * g < n_tokens * g


def simulate(plan: Plan, inputs: Tensor, weights: Tensor, mode: str = "auto") -> Tensor:
    """⟨Z_i⟩ for every token: inputs (N, n_qubits), weights of ``plan.weight_shape`` → (N, n_qubits).

    Computes in the inputs' dtype (float32 → complex64, float64 → complex128 where phases
    appear); ``weights`` are cast to it. ``mode``: "auto" (the cost model), "unitary" or
    "gates" (force one path for every fixed block; for tests and benchmarks).
    """
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is unknown; allowed: {', '.join(_MODES)}")
    rdtype = inputs.dtype
    if rdtype not in (torch.float32, torch.float64):
        raise ValueError(f"inputs dtype {rdtype} is not supported; allowed: torch.float32, torch.float64")
    n = plan.n_qubits
    if inputs.dim() != 2 or inputs.shape[1] != n:
        raise ValueError(f"inputs of shape {tuple(inputs.shape)}; expected (N, {n})")
    if tuple(weights.shape) != plan.weight_shape:
        raise ValueError(f"weights of shape {tuple(weights.shape)}; expected {plan.weight_shape}")
    n_tok = inputs.shape[0]
    pl = plan.materialize(inputs.device, rdtype)
    w_ext = torch.cat([weights.to(rdtype).reshape(-1), weights.new_zeros(1, dtype=rdtype)])
    s = _product_state(pl, inputs, w_ext, rdtype)
    for i, block in enumerate(pl.blocks):
        if block.data:
            s = _apply_pass(s, block.passes[0], inputs, w_ext)
        elif (use_unitary(block, n, s.shape[-1]) if mode == "auto" else mode == "unitary"):
            u = _fixed_unitary(block, n, inputs, w_ext, rdtype)
            if i == len(pl.blocks) - 1 and u.is_complex() and not s.is_complex() and pl.ztable is not None:
                # Last step, real state, complex U (qtha at small n): one real matmul with the real and
                # imaginary parts of U stacked, read out directly — no complex state is ever formed.
                y = torch.view_as_real(u).permute(2, 0, 1).reshape(2 * u.shape[0], -1) @ s  # (2·2^n, B)
                return _Readout.apply(y, torch.cat([pl.ztable, pl.ztable], 1)).T.expand(n_tok, n)
            s = _apply_unitary(s, u)
        else:
            for p in block.passes:
                s = _apply_pass(s, p, inputs, w_ext)
    if pl.ztable is None:  # large n: per wire, P(bit 0) − P(bit 1) by reductions
        probs = torch.view_as_real(s).square().sum(-1) if s.is_complex() else s.square()
        marg = [probs.reshape(2 ** i, 2, -1, probs.shape[-1]).sum((0, 2)) for i in range(n)]  # (2, B) each
        out = torch.stack([m[0] - m[1] for m in marg], 0)
    elif s.is_complex():  # Σ_k |ψ_k|² z_i(k): square the real view, sum the two parts after the matmul
        v = torch.view_as_real(s)
        out = _Readout.apply(v.reshape(v.shape[0], -1), pl.ztable).reshape(n, -1, 2).sum(-1)
    else:
        out = _Readout.apply(s, pl.ztable)
    return out.T.expand(n_tok, n)


class _Readout(torch.autograd.Function):
    """zt @ (v ⊙ v) for a real (2^n, M) v; the backward 2 v ⊙ (ztᵀ g) is one matmul and two
    in-place passes (autograd's square backward would take four full-size passes)."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, zt: Tensor) -> Tensor:
        ctx.save_for_backward(v, zt)
        return zt @ v.square()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Optional[Tensor], None]:
        v, zt = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return (zt.T @ g).mul_(v).mul_(2), None


class _PhaseMul(torch.autograd.Function):
    """s ⊙ e^{iφ} for a (2^n, B) state (real or complex) and phases φ broadcastable to it. The backward
    is two full-size products — ∂s = g ⊙ e^{−iφ}, ∂φ = Im(conj(out) ⊙ g) — where autograd through
    cos, sin, complex and mul would take about nine passes and keep four full-size tensors."""

    @staticmethod
    def forward(ctx: Any, s: Tensor, phase: Tensor) -> Tensor:
        e = torch.complex(torch.cos(phase), torch.sin(phase))
        out = s * e
        ctx.save_for_backward(e, out)
        ctx.shapes = (s.shape, phase.shape, s.is_complex())
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
        e, out = ctx.saved_tensors
        s_shape, phase_shape, s_complex = ctx.shapes
        gs = gp = None
        if ctx.needs_input_grad[0]:
            gs = g * e.conj()
            gs = (gs if s_complex else gs.real).sum_to_size(s_shape)
        if ctx.needs_input_grad[1]:
            gp = (out.conj() * g).imag.sum_to_size(phase_shape)
        return gs, gp
