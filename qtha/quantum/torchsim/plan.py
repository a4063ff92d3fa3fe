"""Stage 3 of the kernel: fuse a recorded gate list into passes and blocks (a :class:`Plan`).

* Product prefix: single-qubit gates that act before any multi-qubit gate touches their wire act
  on |0⟩ of that wire; they give per-token 2-vectors, and the state is their Kronecker product.
  For the qtha ansatz this is the first RY(u) layer: ⊗_i [cos(u_i/2), sin(u_i/2)].
* Passes, one class per kind: the remaining gates, fused greedily in order into a
  :class:`DiagPass` (RZ, CRZ, CZ, PhaseShift, ControlledPhaseShift, IsingZZ, Z, S, T: one phase
  vector exp(i(Aθ + φ0)), A a precomputed (2^n, k) table — every CRZ ring is one such pass), a
  :class:`OneQubitPass` (one 2×2 matrix per wire, the product of that wire's gates) or a
  :class:`PermPass` (CNOT, SWAP: one composed index gather). A pass with an angle from the inputs
  (data re-uploading) is a *data* pass and runs per token. Per-token RX / RY(φ) are first
  rewritten as a fixed basis change, RZ(φ), and the change back (RY = SH·RZ·HS†, RX = H·RZ·H): a
  layer of re-uploads is then one diagonal pass, and the basis changes fuse into the neighbouring
  fixed passes. Fixed phase gates that end a 1q pass move into the diagonal pass after it.
  (``diagonal_data=False`` keeps per-wire 2×2 rotations broadcast over the token axis: the
  reference path.) The other passes form *fixed* blocks between data passes.
* A fixed single-qubit pass is applied as Kronecker-structured matmuls: the wires are cut into
  ranges of at most 6, each range's kron(2×2 …) is one (2^g × 2^g) matrix.

Every pass can run two ways: :meth:`apply` on a state through ordinary autograd (the reference
path, and how a fixed block's unitary is built on the 2^n basis states), and :meth:`ops`, the
linear ops (:mod:`.gates`) the fused circuit of :mod:`.execute` runs with its own backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from qtha.quantum.torchsim.gates import (COMPLEX_FIXED, FIXED_1Q, MatOp, PermOp, PhaseMul, PhaseOp, ScaleOp,
                                         apply_fixed, apply_per_token, bit, cdtype, chunks, diag_column, kron,
                                         kron_index, perm_index, rot_mats)
from qtha.quantum.torchsim.record import DIAG_MULTI, PERMUTATIONS, Gate, record

_DIAG_1Q = ("RZ", "PhaseShift", "PauliZ", "S", "T", "Sdg")  # single-qubit gates that may join a diagonal pass
_REAL_1Q = ("RY", "Hadamard", "PauliX", "PauliZ")
# Basis changes (before, after) that turn a per-token rotation into RZ:
# RY(φ) = SH·RZ(φ)·HS†, RX(φ) = H·RZ(φ)·H.
# "Sdg" (S†) is emitted only by this rewrite, never recorded.
_TO_Z = {"RY": (("Sdg", "Hadamard"), ("Hadamard", "S")), "RX": (("Hadamard",), ("Hadamard",))}
MAX_TABLE = 2 ** 22  # entries of a precomputed (k, 2^n) phase or (n, 2^n) readout table
MAX_UNITARY_QUBITS = 6  # up to here a block's unitary is one Kronecker range: built by UnitaryGroup
Op = Union[MatOp, PhaseOp, ScaleOp, PermOp]


@dataclass
class Angles:
    """Where k angles come from: θ = coeff · source[idx] + offset (a vectorised :class:`Gate` map)."""

    idx: Tensor
    coeff: Tensor
    offset: Tensor
    data: bool
    unit: bool = False  # coeff = 1 and offset = 0: θ = source[idx]
    span: Optional[tuple[int, int]] = None  # idx is the contiguous range [start, stop): a slice, no gather

    @staticmethod
    def of(gates: Sequence[Gate], const_slot: int) -> "Angles":
        idx = [g.idx if g.src in ("input", "weight") else const_slot for g in gates]
        coeff = [g.coeff for g in gates]
        offset = [g.offset for g in gates]
        unit = all(c == 1.0 for c in coeff) and not any(offset)
        span = (idx[0], idx[0] + len(idx)) if idx == list(range(idx[0], idx[0] + len(idx))) else None
        return Angles(torch.tensor(idx, dtype=torch.long), torch.tensor(coeff, dtype=torch.float64),
                       torch.tensor(offset, dtype=torch.float64), any(g.is_data for g in gates), unit, span)

    def to(self, device: torch.device, rdtype: torch.dtype) -> "Angles":
        return Angles(self.idx.to(device), self.coeff.to(device, rdtype), self.offset.to(device, rdtype),
                       self.data, self.unit, self.span)

    @staticmethod
    def stack(maps: Sequence["Angles"]) -> "Angles":
        """The same k angles of G blocks as one (G, k) map (weight/constant maps only)."""
        return Angles(torch.stack([m.idx for m in maps]), torch.stack([m.coeff for m in maps]),
                      torch.stack([m.offset for m in maps]), False, all(m.unit for m in maps))

    def __call__(self, x: Tensor, w_ext: Tensor) -> Tensor:
        """(N, k) angles for data maps, (k,) for weight/constant maps, (G, k) for stacked ones."""
        if self.idx.dim() == 2:
            src = w_ext[self.idx]
            return src if self.unit else src * self.coeff + self.offset
        src, dim = (x, 1) if self.data else (w_ext, 0)
        if self.span is not None:
            src = src.narrow(dim, self.span[0], self.span[1] - self.span[0])
        else:
            src = src.index_select(dim, self.idx)
        return src if self.unit else src * self.coeff + self.offset


@dataclass
class Level:
    """The d-th gate of each wire of a single-qubit pass, grouped by gate name for batching."""

    pos: Tensor  # positions (into the pass's wire list) that have a d-th gate, ascending
    groups: list[tuple[str, Optional[Angles], Optional[Tensor]]]  # (name, angle map | None, fixed (k, 2, 2) | None)
    order: Optional[Tensor]  # permutation taking the concatenated groups to ``pos`` order (None: identity)

    def to(self, device: torch.device, rdtype: torch.dtype) -> "Level":
        groups = [(nm, a.to(device, rdtype) if a is not None else None,
                   (m.to(device, cdtype(rdtype)) if m.is_complex() else m.to(device, rdtype)) if m is not None
                   else None) for nm, a, m in self.groups]
        return Level(self.pos.to(device), groups, self.order.to(device) if self.order is not None else None)

    def mats(self, x: Tensor, w_ext: Tensor) -> Tensor:
        """(B, P, 2, 2) matrices (real or complex); B = N when an angle is per token, else 1."""
        parts = []
        for name, ang, fixed in self.groups:
            if fixed is not None:
                parts.append(fixed.unsqueeze(0))
            else:
                theta = ang(x, w_ext)
                parts.append(rot_mats(name, theta if theta.dim() == 2 else theta.unsqueeze(0)))
        if len(parts) == 1:
            return parts[0]
        if any(p.is_complex() for p in parts):
            cd = next(p.dtype for p in parts if p.is_complex())
            parts = [p.to(cd) for p in parts]
        b = max(p.shape[0] for p in parts)
        out = torch.cat([p.expand(b, *p.shape[1:]) for p in parts], dim=1)
        return out if self.order is None else out.index_select(1, self.order)


def levels(per_wire: list[list[Gate]], const_slot: int) -> list[Level]:
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
                specs.append((name, Angles.of([per_wire[j][d] for j in js], const_slot), None))
            else:
                dtype = torch.complex128 if name in COMPLEX_FIXED else torch.float64
                fixed = torch.tensor(FIXED_1Q[name], dtype=dtype)
                specs.append((name, None, fixed.expand(len(js), 2, 2).contiguous()))  # one per wire of the group
            concat.extend(js)
        where = {j: i for i, j in enumerate(concat)}
        order = [where[j] for j in pos]
        levels.append(Level(torch.tensor(pos, dtype=torch.long), specs,
                             None if order == list(range(len(pos))) else torch.tensor(order, dtype=torch.long)))
    return levels


def onequbit_matrices(levels: list[Level], x: Tensor, w_ext: Tensor) -> Tensor:
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




@dataclass
class DiagPass:
    """A diagonal pass: phase = phase0 + Σ θ_group @ table_group (table None above :data:`MAX_TABLE`:
    built per call). ``real``: CZ / Z only, a ±1 sign that keeps a real state real."""

    gates: list[Gate]
    n: int
    groups: list[tuple[Angles, Optional[Tensor], list[Gate]]]
    phase0: Tensor
    data: bool
    real: bool

    @property
    def cost(self) -> int:
        """Per-token work of applying the pass (the cost model's G)."""
        return 2 ** self.n

    @staticmethod
    def build(gates: list[Gate], n: int, const_slot: int) -> "DiagPass":
        dim = 2 ** n
        phase0 = sum((diag_column(g, n)[1] for g in gates), torch.zeros(dim, dtype=torch.float64))
        groups = []
        for data in (False, True):
            gs = [g for g in gates if g.src != "none" and g.is_data == data]
            if gs:
                table = torch.stack([diag_column(g, n)[0] for g in gs], 0) if dim * len(gs) <= MAX_TABLE else None
                groups.append((Angles.of(gs, const_slot), table, gs))
        real = not groups and bool(torch.all(torch.sin(phase0).abs() < 1e-12))
        return DiagPass(gates, n, groups, phase0, any(a.data for a, _, _ in groups), real)

    def to(self, device: torch.device, rdtype: torch.dtype) -> "DiagPass":
        groups = [(a.to(device, rdtype), t.to(device, rdtype) if t is not None else None, gs)
                  for a, t, gs in self.groups]
        return replace(self, groups=groups, phase0=self.phase0.to(device, rdtype))

    def phase(self, x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> Tensor:
        """(2^n, 1) fixed phases, or (2^n, N) once a per-token group is added."""
        phase = self.phase0
        for ang, table, gates in self.groups:  # fixed group first, per-token group last
            theta = ang(x, w_ext)  # (k,) or (N, k)
            if table is None:  # large n: one column at a time instead of a (k, 2^n) table
                table = torch.stack([diag_column(g, self.n, x.device)[0].to(rdtype) for g in gates], 0)
            phase = torch.addmm(phase.unsqueeze(1), table.T, theta.T) if theta.dim() == 2 else \
                torch.addmv(phase, table.T, theta)
        return phase.unsqueeze(1) if phase.dim() == 1 else phase

    def apply(self, s: Tensor, x: Tensor, w_ext: Tensor) -> Tensor:
        phase = self.phase(x, w_ext, s.real.dtype)
        return s * torch.cos(phase) if self.real else PhaseMul.apply(s, phase)

    def ops(self, x: Tensor, w_ext: Tensor, rdtype: torch.dtype, memo: dict[tuple, Tensor]) -> list[Op]:
        """``memo``: phases already computed this call, by gate list (equal gates, equal phases)."""
        key = tuple(self.gates)
        if key not in memo:
            memo[key] = self.phase(x, w_ext, rdtype)
        return [ScaleOp(torch.cos(memo[key]))] if self.real else [PhaseOp(memo[key])]


@dataclass
class OneQubitPass:
    """Per wire, the product of its single-qubit gates; fixed ones applied as one Kronecker-structured
    matrix per wire range (``ranges``), per-token ones as 2×2 matrices broadcast over the tokens."""

    gates: list[Gate]
    n: int
    wires: list[int]
    levels: list[Level]
    ranges: list[tuple[int, int]]
    kron_index: list[Tensor]  # per range, for :func:`.gates.kron`
    kron_eye: list[bool]  # per range: a wire of it has no gate in this pass
    data: bool
    real: bool

    @property
    def cost(self) -> int:
        return sum(2 ** self.n * 2 ** g for _, g in self.ranges)

    @staticmethod
    def build(gates: list[Gate], n: int, const_slot: int) -> "OneQubitPass":
        wires = sorted({g.wires[0] for g in gates})
        per_wire = [[g for g in gates if g.wires[0] == w] for w in wires]
        ranges = [(s, g) for s, g in chunks(n) if any(s <= w < s + g for w in wires)]
        pos = {w: j for j, w in enumerate(wires)}
        index = [kron_index([pos.get(w, len(wires)) for w in range(st, st + g)]) for st, g in ranges]
        eye = [any(w not in pos for w in range(st, st + g)) for st, g in ranges]
        return OneQubitPass(gates, n, wires, levels(per_wire, const_slot), ranges, index, eye,
                            any(g.is_data for g in gates), all(g.name in _REAL_1Q for g in gates))

    def to(self, device: torch.device, rdtype: torch.dtype) -> "OneQubitPass":
        return replace(self, levels=[lv.to(device, rdtype) for lv in self.levels],
                       kron_index=[t.to(device) for t in self.kron_index])

    def matrices(self, x: Tensor, w_ext: Tensor) -> list[tuple[Tensor, int, int]]:
        """(K, start, size) per wire range of a fixed pass."""
        m = onequbit_matrices(self.levels, x, w_ext)
        return [(kron(m, flat, eye)[0], start, size)
                for (start, size), flat, eye in zip(self.ranges, self.kron_index, self.kron_eye)]

    def apply(self, s: Tensor, x: Tensor, w_ext: Tensor) -> Tensor:
        if self.data:
            m = onequbit_matrices(self.levels, x, w_ext)  # (N, P, 2, 2)
            for j, w in enumerate(self.wires):
                s = apply_per_token(s, m[:, j], w)
            return s
        for k, start, size in self.matrices(x, w_ext):
            s = apply_fixed(s, k, start, size)
        return s

    def ops(self, x: Tensor, w_ext: Tensor, rdtype: torch.dtype, memo: dict[tuple, Tensor]) -> list[Op]:
        if self.data:
            raise AssertionError("per-token 2×2 passes run on the reference path only")
        return [MatOp(k, start, size) for k, start, size in self.matrices(x, w_ext)]


@dataclass
class PermPass:
    """CNOT / SWAP gates composed into one index map p: ψ_new = ψ[p]."""

    gates: list[Gate]
    n: int
    perm: Tensor
    inverse: Tensor
    data: bool = False
    real: bool = True

    @property
    def cost(self) -> int:
        return 2 ** self.n

    @staticmethod
    def build(gates: list[Gate], n: int, const_slot: int) -> "PermPass":
        perm = torch.arange(2 ** n)
        for g in gates:  # apply p1 then p2: ψ[p1][p2] = ψ[p1[p2]]
            perm = perm[perm_index(g, n)]
        return PermPass(gates, n, perm, torch.argsort(perm))

    def to(self, device: torch.device, rdtype: torch.dtype) -> "PermPass":
        return replace(self, perm=self.perm.to(device), inverse=self.inverse.to(device))

    def apply(self, s: Tensor, x: Tensor, w_ext: Tensor) -> Tensor:
        return s.index_select(0, self.perm)

    def ops(self, x: Tensor, w_ext: Tensor, rdtype: torch.dtype, memo: dict[tuple, Tensor]) -> list[Op]:
        return [PermOp(self.perm, self.inverse)]


Pass = Union[DiagPass, OneQubitPass, PermPass]
_PASSES = {"diag": DiagPass, "1q": OneQubitPass, "perm": PermPass}


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


def _fuse(gates: list[Gate], n: int, const_slot: int, diagonal_data: bool) -> list[Pass]:
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
    return [_PASSES[k].build(gs, n, const_slot) for k, gs in runs]


@dataclass
class Block:
    data: bool
    passes: list[Pass]

    @property
    def cost(self) -> int:
        return sum(p.cost for p in self.passes)


def _constant(gate: Gate) -> bool:
    return gate.src in ("none", "const")


@dataclass
class UnitaryGroup:
    """Fixed blocks whose gates differ only in which weights feed them, built as one batch.

    A block's gates are split into a constant lead, a core and a constant trail (the basis changes
    of the neighbouring re-uploads); blocks with equal cores (names, wires, kinds of angle) share one
    set of passes whose angles are stacked over the G blocks (:meth:`Angles.stack`), so the G core
    unitaries cost the ops of one; U = trail · core · lead per block, lead and trail precomputed.
    Why: at 2–4 qubits a call is dominated by per-op overhead, which this makes independent of depth.
    """

    blocks: list[int]  # indices into Plan.blocks
    passes: list[Pass]  # the core, angles stacked (G, k)
    lead: Optional[Tensor]  # (G, 2^n, 2^n) constant, or None: identity
    trail: Optional[Tensor]

    def to(self, device: torch.device, rdtype: torch.dtype) -> "UnitaryGroup":
        def move(t: Optional[Tensor]) -> Optional[Tensor]:
            if t is None:
                return None
            return t.to(device, cdtype(rdtype)) if t.is_complex() else t.to(device, rdtype)
        return UnitaryGroup(self.blocks, [p.to(device, rdtype) for p in self.passes], move(self.lead), move(self.trail))


def _stack_passes(per_block: list[list[Pass]]) -> list[Pass]:
    """The first block's core passes with every angle map stacked over the blocks."""
    out = []
    for passes in zip(*per_block):
        first = passes[0]
        if isinstance(first, DiagPass):
            groups = [(Angles.stack([p.groups[j][0] for p in passes]), t, gs) for j, (_, t, gs) in enumerate(first.groups)]
            out.append(replace(first, groups=groups))
        elif isinstance(first, OneQubitPass):
            lvs = [replace(lv, groups=[(nm, Angles.stack([p.levels[d].groups[j][1] for p in passes]) if a is not None
                                        else None, m) for j, (nm, a, m) in enumerate(lv.groups)])
                   for d, lv in enumerate(first.levels)]
            out.append(replace(first, levels=lvs))
        else:
            out.append(first)
    return out


def _ends_matrix(gates: list[Gate], n: int, const_slot: int) -> Optional[Tensor]:
    """(2^n, 2^n) complex128 product of constant gates (None if there are none)."""
    if not gates:
        return None
    s = torch.eye(2 ** n, dtype=torch.complex128)
    w_ext = torch.zeros(const_slot + 1, dtype=torch.float64)
    for p in _fuse(gates, n, const_slot, False):
        s = p.apply(s, w_ext.new_zeros(1, n), w_ext)
    return s


def _unitary_groups(blocks: list[Block], n: int, const_slot: int) -> list[UnitaryGroup]:
    cores: dict[tuple, list[tuple[int, list[Gate], list[Gate], list[Gate]]]] = {}
    for i, b in enumerate(blocks):
        if b.data:
            continue
        gates = [g for p in b.passes for g in p.gates]
        lo = next((j for j, g in enumerate(gates) if not _constant(g)), len(gates))
        hi = len(gates) - next((j for j, g in enumerate(reversed(gates)) if not _constant(g)), 0)
        core = gates[lo:hi] if lo < hi else []
        key = tuple((g.name, g.wires, g.src) for g in core)
        cores.setdefault(key, []).append((i, gates[:lo], core, gates[hi:] if lo < hi else []))
    groups = []
    for key, members in cores.items():
        per_block = [_fuse(core, n, const_slot, True) for _, _, core, _ in members]
        ends = []
        for side in (1, 3):
            mats = [_ends_matrix(m[side], n, const_slot) for m in members]
            eye = torch.eye(2 ** n, dtype=torch.complex128)
            ends.append(None if all(m is None for m in mats) else torch.stack([eye if m is None else m for m in mats]))
        groups.append(UnitaryGroup([m[0] for m in members], _stack_passes(per_block), ends[0], ends[1]))
    return groups


@dataclass
class Plan:
    """A recorded circuit, fused for the kernel. Build with :func:`build_plan` / :func:`get_plan`."""

    n_qubits: int
    weight_shape: tuple
    gates: list[Gate]
    prefix: list[Level]  # single-qubit gates on |0⟩ (per wire, by depth)
    prefix_wires: list[int]
    blocks: list[Block]
    ztable: Optional[Tensor]  # (n, 2^n): z_i(k) = ±1, the readout table of ⟨Z_i⟩ (None above the size limit)
    diagonal_data: bool = True  # per-token rotations rewritten as diagonal passes (see :func:`build_plan`)
    groups: list[UnitaryGroup] = field(default_factory=list)  # fixed blocks batched for the unitary path
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
            self.prefix_wires, [Block(b.data, [p.to(device, rdtype) for p in b.passes]) for b in self.blocks],
            self.ztable.to(device, rdtype) if self.ztable is not None else None, self.diagonal_data,
            [g.to(device, rdtype) for g in self.groups])

    def describe(self) -> str:
        lines = [f"Plan: {self.n_qubits} qubits, weights {self.weight_shape}, {len(self.gates)} gates; "
                 f"product prefix on wires {self.prefix_wires} ({len(self.prefix)} level(s)); "
                 f"diagonal_data={self.diagonal_data}"]
        for i, b in enumerate(self.blocks):
            kinds = ", ".join(f"{type(p).__name__}[{len(p.gates)}]" for p in b.passes)
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
    prefix = levels([[g for g in prefix_gates if g.wires[0] == w] for w in prefix_wires], const_slot) \
        if prefix_gates else []
    if diagonal_data:
        rest = _diagonalize_data(rest)
    blocks: list[Block] = []
    for p in _fuse(rest, n, const_slot, diagonal_data):  # data passes alone; fixed ones group into blocks
        if p.data or not blocks or blocks[-1].data:
            blocks.append(Block(p.data, [p]))
        else:
            blocks[-1].passes.append(p)
    ztable = None
    if n * 2 ** n <= MAX_TABLE:
        ztable = torch.stack([1 - 2 * bit(n, w) for w in range(n)], 0)
    groups = _unitary_groups(blocks, n, const_slot) if n <= MAX_UNITARY_QUBITS else []
    return Plan(n, wshape, gates, prefix, prefix_wires, blocks, ztable, diagonal_data, groups)


_PLANS: dict[tuple, Plan] = {}


def get_plan(fn: Callable, n_qubits: int, wshape: tuple, diagonal_data: bool = True) -> Plan:
    """:func:`build_plan`, cached per (function, n_qubits, weight shape, diagonal_data)."""
    key = (fn, int(n_qubits), tuple(int(s) for s in wshape), bool(diagonal_data))
    if key not in _PLANS:
        _PLANS[key] = build_plan(fn, n_qubits, wshape, diagonal_data)
    return _PLANS[key]
