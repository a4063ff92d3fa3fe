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

Execution plan (PennyLane wire order: wire 0 is the most significant bit).
* Product prefix: single-qubit gates that act before any multi-qubit gate touches their wire
  act on |0⟩ of that wire; they give per-token 2-vectors, and the state is their Kronecker
  product (batched outer products), shape (N, 2^n). For the qtha ansatz this is the first
  RY(u) layer: ⊗_i [cos(u_i/2), sin(u_i/2)].
* Blocks: the remaining gates, split into maximal runs of data gates (an angle from the
  inputs: re-uploading) and fixed gates (weights, constants, parameter-free).
* Passes (inside a block, gates fused greedily in order): a *diagonal* pass (RZ, CRZ, CZ,
  PhaseShift, ControlledPhaseShift, IsingZZ, Z, S, T: one phase vector exp(i·(A θ + φ0)) with a
  precomputed (2^n, k) table A), a *single-qubit* pass (one 2×2 matrix per wire, products of
  the wire's gates; applied by contracting that axis of the (N, 2, …, 2) state — a real
  matrix on a complex state works on the real view at half the cost) and a *permutation*
  pass (CNOT, SWAP: one composed index gather).
* Cost model for a fixed block (decided per forward, since it depends on N): applying the
  passes costs G = Σ passes (2^n per diagonal/permutation pass, 2·2^n per wire of a
  single-qubit pass) per token, N·G in all; precomputing the block's unitary costs 2^n·G
  (the same passes run on the 2^n basis states) plus N·4^n for one batched matmul. The
  unitary path is taken when N·4^n + 2^n·G < N·G. Data blocks always run per token.
* Readout: ⟨Z_i⟩ = |ψ|² @ Z with the precomputed (2^n, n) table of ±1.
The state stays real while every gate met so far is real (RY, CNOT, H, X, Z, CZ) and becomes
complex at the first complex gate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import pennylane as qml
import torch
from torch import Tensor

ONE_QUBIT_PARAM = ("RX", "RY", "RZ", "PhaseShift")
ONE_QUBIT_FIXED = ("Hadamard", "PauliX", "PauliY", "PauliZ", "S", "T")
DIAG_MULTI = ("CRZ", "ControlledPhaseShift", "IsingZZ", "CZ")
PERMUTATIONS = ("CNOT", "SWAP")
IGNORED = ("Identity", "GlobalPhase", "Barrier")  # no effect on expectation values
SUPPORTED_GATES = frozenset(ONE_QUBIT_PARAM + ONE_QUBIT_FIXED + DIAG_MULTI + PERMUTATIONS)
_DIAG_1Q = ("RZ", "PhaseShift", "PauliZ", "S", "T")  # single-qubit gates that may join a diagonal pass
_REAL_1Q = ("RY", "Hadamard", "PauliX", "PauliZ")
_MODES = ("auto", "unitary", "gates")
_MAX_CHUNK = 6  # wires per Kronecker-structured matmul of a single-qubit pass
_COMPLEX_FIXED = ("PauliY", "S", "T")
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
def _bits(n: int) -> Tensor:
    """(2^n, n) int64 table: bit of wire w in basis index b (wire 0 = most significant)."""
    b = torch.arange(2 ** n).unsqueeze(1)
    return (b >> torch.arange(n - 1, -1, -1)) & 1


def _diag_column(g: Gate, bits: Tensor) -> tuple[Tensor, Tensor]:
    """(slope, constant) phases over the basis for one diagonal gate: phase = slope·θ + constant."""
    z = (1 - 2 * bits).double()
    b = bits.double()
    zero = torch.zeros(bits.shape[0], dtype=torch.float64)
    w = g.wires
    if g.name == "RZ":
        return -0.5 * z[:, w[0]], zero
    if g.name == "PhaseShift":
        return b[:, w[0]], zero
    if g.name == "CRZ":
        return -0.5 * b[:, w[0]] * z[:, w[1]], zero
    if g.name == "ControlledPhaseShift":
        return b[:, w[0]] * b[:, w[1]], zero
    if g.name == "IsingZZ":
        return -0.5 * z[:, w[0]] * z[:, w[1]], zero
    if g.name == "CZ":
        return zero, math.pi * b[:, w[0]] * b[:, w[1]]
    if g.name == "PauliZ":
        return zero, math.pi * b[:, w[0]]
    if g.name == "S":
        return zero, 0.5 * math.pi * b[:, w[0]]
    if g.name == "T":
        return zero, 0.25 * math.pi * b[:, w[0]]
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
    "T": [[1, 0], [0, complex(math.cos(math.pi / 4), math.sin(math.pi / 4))]],
}


def _rot_mats(name: str, theta: Tensor) -> Tensor:
    """(..., k, 2, 2) matrices of a parametrised single-qubit gate for angles (..., k)."""
    half = theta * 0.5
    c, s = torch.cos(half), torch.sin(half)
    if name == "RY":
        return torch.stack([c, -s, s, c], -1).unflatten(-1, (2, 2))
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
    groups: list[tuple[str, Optional[_Angles], Optional[Tensor]]]  # (name, angle map | None, fixed matrix | None)
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
                parts.append(fixed.expand(1, 1, 2, 2))
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
        groups: dict[tuple[str, bool], list[int]] = {}
        for j in pos:
            g = per_wire[j][d]
            groups.setdefault((g.name, g.src != "none"), []).append(j)
        specs, concat = [], []
        for (name, param), js in groups.items():
            if param:
                specs.append((name, _Angles.of([per_wire[j][d] for j in js], const_slot), None))
            else:
                specs.append((name, None, torch.tensor(_FIXED_1Q[name], dtype=torch.complex128
                                                       if name in _COMPLEX_FIXED else torch.float64)))
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
    cost: int  # multiply-adds per token and amplitude-pass, for the cost model
    data: bool = False  # some angle is per token
    real: bool = True
    # diag: phase = phase0 + Σ θ_group @ table_group
    groups: list[tuple[_Angles, Tensor]] = field(default_factory=list)
    phase0: Optional[Tensor] = None
    # 1q
    wires: list[int] = field(default_factory=list)
    levels: list[_Level] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)
    # perm
    perm: Optional[Tensor] = None

    def to(self, device: torch.device, rdtype: torch.dtype) -> "_Pass":
        p = _Pass(self.kind, self.gates, self.n, self.cost, self.data, self.real, wires=self.wires,
                  chunks=self.chunks)
        if self.kind == "diag":
            p.groups = [(a.to(device, rdtype), t.to(device, rdtype)) for a, t in self.groups]
            p.phase0 = self.phase0.to(device, rdtype)
        elif self.kind == "1q":
            p.levels = [lv.to(device, rdtype) for lv in self.levels]
        else:
            p.perm = self.perm.to(device)
        return p


def _make_pass(kind: str, gates: list[Gate], n: int, bits: Tensor, const_slot: int) -> _Pass:
    dim = 2 ** n
    if kind == "diag":
        phase0 = sum((_diag_column(g, bits)[1] for g in gates), torch.zeros(dim, dtype=torch.float64))
        groups = []
        for data in (False, True):
            gs = [g for g in gates if g.src != "none" and g.is_data == data]
            if gs:
                table = torch.stack([_diag_column(g, bits)[0] for g in gs], 0)  # (k, 2^n)
                groups.append((_Angles.of(gs, const_slot), table))
        real = not groups and bool(torch.all(torch.sin(phase0).abs() < 1e-12))  # CZ / Z only: ±1
        return _Pass("diag", gates, n, dim, any(a.data for a, _ in groups), real, groups=groups, phase0=phase0)
    if kind == "1q":
        wires = sorted({g.wires[0] for g in gates})
        per_wire = [[g for g in gates if g.wires[0] == w] for w in wires]
        chunks = [(s, g) for s, g in _chunks(n) if any(s <= w < s + g for w in wires)]
        real = all(g.name in _REAL_1Q for g in gates)
        return _Pass("1q", gates, n, sum(dim * 2 ** g for _, g in chunks), any(g.is_data for g in gates), real,
                     wires=wires, levels=_levels(per_wire, const_slot), chunks=chunks)
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


def _fuse(gates: list[Gate], n: int, bits: Tensor, const_slot: int) -> list[_Pass]:
    """Greedy in-order fusion into diagonal / single-qubit / permutation passes."""
    runs: list[tuple[str, list[Gate]]] = []
    for g in gates:
        k = _kind(g)
        if runs and (runs[-1][0] == k or (runs[-1][0] == "diag" and g.name in _DIAG_1Q)):
            runs[-1][1].append(g)
        else:
            runs.append((k, [g]))
    return [_make_pass(k, gs, n, bits, const_slot) for k, gs in runs]


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
    ztable: Tensor  # (n, 2^n): z_i(k) = ±1, the readout table of ⟨Z_i⟩
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
            self.ztable.to(device, rdtype))

    def describe(self) -> str:
        lines = [f"Plan: {self.n_qubits} qubits, weights {self.weight_shape}, {len(self.gates)} gates; "
                 f"product prefix on wires {self.prefix_wires} ({len(self.prefix)} level(s))"]
        for i, b in enumerate(self.blocks):
            kinds = ", ".join(f"{p.kind}[{len(p.gates)}]" for p in b.passes)
            lines.append(f"  block {i} ({'data' if b.data else 'fixed'}, cost/token {b.cost}): {kinds}")
        return "\n".join(lines)


def build_plan(fn: Callable, n_qubits: int, wshape: tuple) -> Plan:
    """Record ``fn`` (see :func:`record`) and fuse it into a :class:`Plan`."""
    n = int(n_qubits)
    wshape = tuple(int(s) for s in wshape)
    gates = record(fn, n, wshape)
    const_slot = math.prod(wshape)  # index of the zero appended to the flat weight vector
    bits = _bits(n)
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
    blocks: list[_Block] = []
    for p in _fuse(rest, n, bits, const_slot):  # data passes stand alone; fixed passes group into blocks
        if p.data or not blocks or blocks[-1].data:
            blocks.append(_Block(p.data, [p]))
        else:
            blocks[-1].passes.append(p)
    z = (1 - 2 * bits).double()
    return Plan(n, wshape, gates, prefix, prefix_wires, blocks, z.T.contiguous())


_PLANS: dict[tuple, Plan] = {}


def get_plan(fn: Callable, n_qubits: int, wshape: tuple) -> Plan:
    """:func:`build_plan`, cached per (function, n_qubits, weight shape)."""
    key = (fn, int(n_qubits), tuple(int(s) for s in wshape))
    if key not in _PLANS:
        _PLANS[key] = build_plan(fn, n_qubits, wshape)
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


def _kron(m: Tensor, pos: dict[int, int], start: int, size: int) -> Tensor:
    """(2^size, 2^size): ⊗ of the fixed matrices of wires start..start+size−1 (``start`` most
    significant); ``m`` is (1, P, 2, 2)."""
    k = None
    for w in range(start, start + size):
        mw = m[0, pos[w]] if w in pos else torch.eye(2, dtype=m.dtype, device=m.device)
        k = mw if k is None else torch.kron(k, mw)
    return k


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
    """Apply per-token 2×2 matrices m (B, 2, 2) to ``wire``: broadcast over the token axis."""
    x = s.reshape(2 ** wire, 2, -1, s.shape[-1])  # (wires before, this wire, wires after, tokens)
    x0, x1 = x[:, 0], x[:, 1]
    mt = m.permute(1, 2, 0)  # (2, 2, B)
    return torch.stack([x0 * mt[0, 0] + x1 * mt[0, 1], x0 * mt[1, 0] + x1 * mt[1, 1]], 1).reshape(s.shape[0], -1)


def _apply_pass(s: Tensor, p: _Pass, x: Tensor, w_ext: Tensor) -> Tensor:
    if p.kind == "perm":
        return s.index_select(0, p.perm)
    if p.kind == "diag":
        phase = p.phase0.unsqueeze(1)  # (2^n, 1)
        for ang, table in p.groups:
            theta = ang(x, w_ext)  # (k,) or (N, k)
            phase = phase + (table.T @ theta.T if theta.dim() == 2 else (theta @ table).unsqueeze(1))
        if p.real:  # ±1 (CZ / Z only)
            return s * torch.cos(phase)
        return s * torch.complex(torch.cos(phase), torch.sin(phase))
    m = _onequbit_matrices(p.levels, x, w_ext)  # (B, P, 2, 2), B = N (per token) or 1
    if m.shape[0] > 1:
        for j, w in enumerate(p.wires):
            s = _apply_per_token(s, m[:, j], w)
        return s
    pos = {w: j for j, w in enumerate(p.wires)}
    for start, size in p.chunks:
        s = _apply_fixed(s, _kron(m, pos, start, size), start, size)
    return s


def _product_state(plan: Plan, x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> Tensor:
    """(2^n, B): the Kronecker product of the prefix's per-wire vectors G…G|0⟩."""
    vecs: dict[int, Tensor] = {}
    if plan.prefix:
        cols = _onequbit_matrices(plan.prefix, x, w_ext)[..., 0]  # (B, P, 2): the gates applied to |0⟩
        cols = cols.permute(1, 2, 0).contiguous()  # (P, 2, B): tokens last, so is every product below
        vecs = {w: cols[j] for j, w in enumerate(plan.prefix_wires)}
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
    for block in pl.blocks:
        if block.data:
            s = _apply_pass(s, block.passes[0], inputs, w_ext)
        elif (use_unitary(block, n, s.shape[-1]) if mode == "auto" else mode == "unitary"):
            s = _apply_unitary(s, _fixed_unitary(block, n, inputs, w_ext, rdtype))
        else:
            for p in block.passes:
                s = _apply_pass(s, p, inputs, w_ext)
    if s.is_complex():  # Σ_k |ψ_k|² z_i(k): square the real view, sum the two parts after the matmul
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
