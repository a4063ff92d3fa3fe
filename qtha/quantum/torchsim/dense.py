"""The fused circuit without gradients, for circuits whose every fixed block is a kept unitary.

Evaluation and generation call the QNN once per decoded token on a handful of tokens, with the
fixed blocks' unitaries kept between calls (:func:`.execute.simulate`). The circuit is then
U_L·D(u)·…·D(u)·U_1 applied to the real product state ψ₀(u), D(u) the per-token phases of the
re-uploaded angles. With the tokens as rows and a complex state as [ψ_r | ψ_i], each step is two
torch calls: the phase, e^{iφ}⊙ψ = c⊙ψ + s⊙swap(ψ), is folded into the matrix after it —
[ψ⊙[c|c] ; ψ⊙[s|−s]] @ [[B], [swap B]], B = [[A_r, A_i], [−A_i, A_r]], A = Uᵀ — so the stacked
(4·2ⁿ × 2·2ⁿ) matrices are built once per weight version and a step is one broadcast multiply and
one matmul. The gate-by-gate ops (:class:`.execute.Circuit`) take ~6 calls per step plus the
readout; at decode sizes that overhead, not arithmetic, was the QNN's cost. Twice the matmul
FLOPs of the complex product, so it is used only up to :data:`MAX_DENSE_QUBITS`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from qtha.quantum.torchsim.gates import MatOp, PhaseOp

MAX_DENSE_QUBITS = 6


def fits(ops: Sequence[object], psi: Tensor, n: int) -> bool:
    """Whether ``ops`` on ``psi`` is U_1 on a real product state, then (phase, full-width unitary) pairs."""
    if n > MAX_DENSE_QUBITS or psi.is_complex() or not ops or len(ops) % 2 == 0:
        return False
    for i, op in enumerate(ops):
        kind = MatOp if i % 2 == 0 else PhaseOp
        if type(op) is not kind or (kind is MatOp and (op.start, op.size, op.param.dim()) != (0, n, 3)):
            return False
    return True


def _blocks(ops: Sequence[MatOp], ztable: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
    """[A_r | A_i] for U_1 on the real state, the stacked (4D, 2D) matrix of every later step, and the
    readout table for [ψ_r | ψ_i]: ⟨Z⟩ = (ψ⊙ψ) @ [Zᵀ; Zᵀ]."""
    u = torch.stack([op.param for op in ops])  # (L, 2, D, D): real and imaginary parts
    a_r, a_i = u[:, 0].mT, u[:, 1].mT
    top, bottom = torch.cat([a_r, a_i], -1), torch.cat([-a_i, a_r], -1)
    steps = torch.cat([top, bottom, bottom, top], -2)[1:]
    return top[0], list(steps.unbind(0)), torch.cat([ztable, ztable], 1).T


def run(ops: Sequence[object], ztable: Optional[Tensor], psi: Tensor, cache: dict) -> Tensor:
    """⟨Z_i⟩ (n, N) of ``ops`` (as :func:`fits` accepts) on the real (2ⁿ, N) ``psi``; the stacked matrices are
    kept in ``cache`` (cleared with the kept unitaries when the weights change)."""
    if ztable is None:
        raise ValueError("the dense path needs the readout table (n <= MAX_DENSE_QUBITS has one)")
    if "dense" not in cache:
        cache["dense"] = _blocks(ops[0::2], ztable)
    first, steps, z2 = cache["dense"]
    s = psi.T @ first  # (N, 2D)
    signs: dict[int, Tensor] = {}
    for phase_op, m in zip(ops[1::2], steps):
        key = id(phase_op.param)
        if key not in signs:  # re-upload layers share one phase tensor: one cos/sin for all of them
            ph = phase_op.param.T
            c, sn = torch.cos(ph), torch.sin(ph)
            signs[key] = torch.stack([torch.cat([c, c], -1), torch.cat([sn, -sn], -1)], 1)  # (N, 2, 2D)
        s = (s.unsqueeze(1) * signs[key]).reshape(s.shape[0], -1) @ m
    return ((s * s) @ z2).T
