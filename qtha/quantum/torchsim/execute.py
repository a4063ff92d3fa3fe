"""Stage 4 of the kernel: run a :class:`~.plan.Plan` on N tokens at once.

The token-dependent part of the circuit is one autograd node, :class:`Circuit`: its forward runs
the linear ops (:mod:`.gates`) of every block on the (2^n, N) state and reads ⟨Z_i⟩ out; its
backward is the adjoint sweep — the cotangent of the final state, 2 (Zᵀg) ⊙ ψ, pulled back op by
op (Kᴴλ, e^{−iφ}⊙λ, λ[p⁻¹]), each op's parameter cotangent formed on the way (λ ψᴴ for a matrix,
Im(ψ̄ ⊙ λ) for phases) from the states kept from the forward. Why: through plain autograd the
circuit is ~80 nodes per call, each with its own temporaries and dispatch, and at 2–6 qubits that
overhead, not arithmetic, was the cost. What stays on autograd is small or cheap: the product
state of the first RY layer, the per-token phases (one (N, k)@(k, 2^n) matmul) and each fixed
block's 2^n×2^n unitary, built by running its passes on the 2^n basis states.

Cost model for a fixed block, decided per call since it depends on N: applying its passes costs G
per token (2^n per diagonal or permutation pass, 2^n·2^g per wire range of a single-qubit pass);
precomputing the block's unitary costs 2^n·G plus N·4^n for one matmul. The unitary is used iff
N·4^n + 2^n·G < N·G; both paths give the same result (tested).

Without gradients and with every fixed block's unitary kept (generation), circuits of at most
:data:`.dense.MAX_DENSE_QUBITS` qubits run through :mod:`.dense` instead: two calls per layer.

Readout: ⟨Z_i⟩ = Z @ |ψ|² with a precomputed (n, 2^n) table of ±1 (above 2^22 table entries,
per-wire marginal sums instead). ``diagonal_data=False`` plans (per-token 2×2 rotations) run
every pass through plain autograd: the independent reference path the tests compare against.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qtha.quantum.torchsim import dense
from qtha.quantum.torchsim.gates import MatOp, PhaseOp, apply_fixed, cdtype, kron, shift, stacked
from qtha.quantum.torchsim.plan import Block, DiagPass, OneQubitPass, Op, Plan, UnitaryGroup, onequbit_matrices

_MODES = ("auto", "unitary", "gates")


def use_unitary(block: Block, n: int, n_tokens: int) -> bool:
    """The cost model: precompute the block's 2^n×2^n unitary iff N·4^n + 2^n·G < N·G, where G is
    the per-token cost of applying the block's fused passes one by one."""
    g = block.cost
    return n_tokens * 4 ** n + 2 ** n * g < n_tokens * g


def simulate(plan: Plan, inputs: Tensor, weights: Tensor, mode: str = "auto",
             cache: Optional[dict] = None) -> Tensor:
    """⟨Z_i⟩ for every token: inputs (N, n_qubits), weights of ``plan.weight_shape`` → (N, n_qubits).

    Computes in the inputs' dtype (float32 → complex64, float64 → complex128 where phases
    appear); ``weights`` are cast to it. ``mode``: "auto" (the cost model), "unitary" or
    "gates" (force one path for every fixed block; for tests and benchmarks). ``cache``: a dict owned
    by the caller (one per weight tensor, e.g. the QNN layer's) in which calls that need no gradient
    keep the fixed blocks' unitaries while the weights stay the same tensor at the same version.
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
    s = product_state(pl, inputs, w_ext, rdtype)
    if not pl.diagonal_data:
        out = _reference(pl, s, inputs, w_ext, rdtype, mode)
    else:
        ops: list[Op] = []
        phases: dict[tuple, Tensor] = {}  # identical diagonal passes (re-upload layers) share one phase tensor
        # Unitaries kept between calls cost nothing to build: then every grouped block uses one (a decode step's
        # handful of tokens would otherwise take the gate-by-gate path, ~10× the ops).
        kept = {i for g in pl.groups for i in g.blocks} if _reusable(cache, inputs, weights) else set()
        unitary = {i for i, b in enumerate(pl.blocks)
                   if not b.data and (i in kept or use_unitary(b, n, n_tok) if mode == "auto" else mode == "unitary")}
        mats = _cached_unitaries(pl, unitary, inputs, weights, w_ext, rdtype, cache)
        for i, block in enumerate(pl.blocks):
            if i in unitary:
                ops.append(MatOp(mats[i], 0, n))
            else:
                for p in block.passes:
                    ops += p.ops(inputs, w_ext, rdtype, phases)
        if kept and dense.fits(ops, s, n):  # no gradient, every unitary kept: two calls per layer
            out = dense.run(ops, pl.ztable, s, cache)
        else:
            params = [op.param for op in ops if op.param is not None]
            out = Circuit.apply(ops, pl.ztable, s, *params)
    return out.T.expand(n_tok, n)


def product_state(plan: Plan, x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> Tensor:
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
        cols = torch.cos(torch.add(shift("RY|0>", theta.dtype, theta.device), theta.unsqueeze(-1), alpha=0.5))
        cols = cols.permute(1, 2, 0).contiguous()
        vecs = dict(zip(plan.prefix_wires, cols.unbind(0)))  # unbind: one backward node, no zero-fills
    elif plan.prefix:
        cols = onequbit_matrices(plan.prefix, x, w_ext)[..., 0]  # (B, P, 2): the gates applied to |0⟩
        cols = cols.permute(1, 2, 0).contiguous()  # (P, 2, B): tokens last, so is every product below
        vecs = dict(zip(plan.prefix_wires, cols.unbind(0)))
    complex_ = any(v.is_complex() for v in vecs.values())
    zero = torch.zeros(2, 1, dtype=cdtype(rdtype) if complex_ else rdtype, device=w_ext.device)
    zero[0, 0] = 1
    psi = None
    for w in range(plan.n_qubits):
        v = vecs.get(w, zero).to(zero.dtype)
        psi = v if psi is None else (psi.unsqueeze(1) * v.unsqueeze(0)).reshape(2 * psi.shape[0], -1)
    return psi


def _fixed_unitary(block: Block, n: int, x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> Tensor:
    """(2^n, 2^n): the block's unitary U, computed by running its passes on the 2^n basis states
    as a batch of tokens (column j = U|j⟩)."""
    s = torch.eye(2 ** n, dtype=rdtype, device=w_ext.device)
    for p in block.passes:
        s = p.apply(s, x, w_ext)
    return s


def _reusable(cache: Optional[dict], x: Tensor, weights: Tensor) -> bool:
    """Whether this call may keep its unitaries in ``cache``: it has one and needs no gradient."""
    return cache is not None and not (torch.is_grad_enabled() and (weights.requires_grad or x.requires_grad))


def _cached_unitaries(pl: Plan, wanted: set[int], x: Tensor, weights: Tensor, w_ext: Tensor,
                      rdtype: torch.dtype, cache: Optional[dict]) -> dict[int, Tensor]:
    """:func:`_unitaries`, kept in ``cache`` between calls that need no gradient (evaluation and
    generation call the QNN once per decoded token) while the weights are unchanged."""
    if not _reusable(cache, x, weights):
        return _unitaries(pl, wanted, x, w_ext, rdtype)
    key = (weights.data_ptr(), weights._version, str(x.device), rdtype, frozenset(wanted))
    if cache.get("key") != key:
        cache.clear()
        cache.update(key=key, unitaries=_unitaries(pl, wanted, x, w_ext, rdtype))
    return cache["unitaries"]


def _unitaries(pl: Plan, wanted: set[int], x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> dict[int, Tensor]:
    """The 2^n×2^n unitaries of the ``wanted`` fixed blocks: by :class:`~.plan.UnitaryGroup` where the
    plan has them (one batched build per group), else block by block on the basis states."""
    out: dict[int, Tensor] = {}
    for group in pl.groups:
        if wanted.intersection(group.blocks):
            out.update(zip(group.blocks, _group_unitaries(group, pl.n_qubits, x, w_ext, rdtype).unbind(0)))
    for i in wanted.difference(out):
        out[i] = _fixed_unitary(pl.blocks[i], pl.n_qubits, x, w_ext, rdtype)
    return out


def _eye(n: int, rdtype: torch.dtype, like: Tensor) -> Tensor:
    return torch.eye(2 ** n, dtype=rdtype, device=like.device).unsqueeze(0)


def _promote(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.is_complex() == b.is_complex():
        return a, b
    return (a.to(b.dtype), b) if b.is_complex() else (a, b.to(a.dtype))


def _group_unitaries(group: UnitaryGroup, n: int, x: Tensor, w_ext: Tensor, rdtype: torch.dtype) -> Tensor:
    """(G, 2^n, 2^n): trail · Π core passes · lead for every block of the group, the core's passes as
    dense batched factors (a diagonal scales rows, a single-qubit pass is one Kronecker matrix — the
    group exists only where one wire range covers all qubits — a permutation gathers rows)."""
    u: Optional[Tensor] = None
    for p in group.passes:
        if isinstance(p, DiagPass):
            ph = p.phase(x, w_ext, rdtype).T  # (G or 1, 2^n)
            e = torch.cos(ph) if p.real else torch.complex(torch.cos(ph), torch.sin(ph))
            u = torch.diag_embed(e) if u is None else torch.mul(*_promote(e.unsqueeze(-1), u))
        elif isinstance(p, OneQubitPass):
            k = kron(onequbit_matrices(p.levels, x, w_ext), p.kron_index[0], p.kron_eye[0])
            u = k if u is None else torch.matmul(*_promote(k, u))
        else:
            u = (_eye(n, rdtype, w_ext) if u is None else u).index_select(1, p.perm)
    if u is None:  # a constant block: lead (and trail) only
        u = _eye(n, rdtype, w_ext).expand(len(group.blocks), -1, -1)
    if group.lead is not None:
        u = torch.matmul(*_promote(u, group.lead))
    if group.trail is not None:
        u = torch.matmul(*_promote(group.trail, u))
    return u


def _probs(s: Tensor) -> Tensor:
    """|ψ|² of a complex, stacked complex (2, 2^n, B) or real state."""
    if s.is_complex():
        return torch.view_as_real(s).square().sum(-1)
    return s.square().sum(0) if s.dim() == 3 else s.square()


def _readout(probs: Tensor, ztable: Optional[Tensor], n: int) -> Tensor:
    """(n, B) ⟨Z_i⟩ from (2^n, B) probabilities: one matmul, or per-wire marginal sums at large n."""
    if ztable is not None:
        return ztable @ probs
    marg = [probs.reshape(2 ** i, 2, -1, probs.shape[-1]).sum((0, 2)) for i in range(n)]  # (2, B) each
    return torch.stack([m[0] - m[1] for m in marg], 0)


def _readout_vjp(g: Tensor, ztable: Optional[Tensor], n: int, dim: int) -> Tensor:
    """(2^n, B): Σ_i z_i(k) g_i, the cotangent of the probabilities."""
    if ztable is not None:
        return ztable.T @ g
    out = g.new_zeros(dim, g.shape[-1])
    for i in range(n):
        v = out.view(2 ** i, 2, -1, g.shape[-1])
        v[:, 0] += g[i]
        v[:, 1] -= g[i]
    return out


class Circuit(torch.autograd.Function):
    """⟨Z_i⟩ (n, B) after ``ops`` on the state ``psi``; differentiable in ``psi`` and every op's
    ``param`` (passed again as ``params`` so autograd links them). Backward: the adjoint sweep."""

    @staticmethod
    def forward(ctx: Any, ops: Sequence[Op], ztable: Optional[Tensor], psi: Tensor, *params: Tensor) -> Tensor:
        trig: dict[int, tuple[Tensor, Tensor]] = {}
        for op in ops:
            if isinstance(op, PhaseOp):
                key = id(op.param)
                if key not in trig:
                    trig[key] = (torch.cos(op.param), torch.sin(op.param))
                op.cs = trig[key]
        states = [stacked(psi)]
        for op in ops:
            states.append(op.forward(states[-1]))
        n = ztable.shape[0] if ztable is not None else (psi.shape[0] - 1).bit_length()
        ctx.ops, ctx.states, ctx.ztable, ctx.n, ctx.complex_psi = ops, states, ztable, n, psi.is_complex()
        return _readout(_probs(states[-1]), ztable, n)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Optional[Tensor], ...]:
        ops, states = ctx.ops, ctx.states
        ctx.states = None
        final = states[-1]
        lam = final * _readout_vjp(g, ctx.ztable, ctx.n, final.shape[-2]).mul_(2)
        grads: list[Optional[Tensor]] = []
        needs = iter(reversed(ctx.needs_input_grad[3:]))
        for i in range(len(ops) - 1, -1, -1):
            op = ops[i]
            need = op.param is not None and next(needs)
            lam, g_param = op.backward(lam, states[i], states[i + 1], need)
            if lam.shape != states[i].shape:  # a (…, 2^n, 1) state broadcast to the tokens by a per-token op
                lam = lam.sum_to_size(states[i].shape)
            if op.param is not None:
                grads.append(g_param)
        grads.reverse()
        g_psi = None
        if ctx.needs_input_grad[2]:
            g_psi = torch.view_as_complex(lam.movedim(0, -1).contiguous()) if ctx.complex_psi else lam
        return (None, None, g_psi, *grads)


def _reference(pl: Plan, s: Tensor, x: Tensor, w_ext: Tensor, rdtype: torch.dtype, mode: str) -> Tensor:
    """Every pass through plain autograd (``diagonal_data=False`` plans): the reference path."""
    n = pl.n_qubits
    for block in pl.blocks:
        if not block.data and (use_unitary(block, n, s.shape[-1]) if mode == "auto" else mode == "unitary"):
            s = apply_fixed(s, _fixed_unitary(block, n, x, w_ext, rdtype), 0, n)
        else:
            for p in block.passes:
                s = p.apply(s, x, w_ext)
    return _readout(_probs(s), pl.ztable, n)
