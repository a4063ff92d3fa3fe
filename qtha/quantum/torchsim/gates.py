"""Stage 2 of the kernel: gate algebra on a batched state vector (PennyLane wire order: wire 0 is
the most significant bit).

The state is a tensor of shape (2^n, B), tokens last: real while every gate so far was real,
complex (complex64 / complex128) from the first complex gate on; B = N tokens, or 1 before any data
gate. With tokens last, a fixed matrix on a range of wires is one (batched) matmul on a view of the
state, and a real matrix on a complex state works on its real view (the real and imaginary parts ride
along in the trailing dimension) at half the cost.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qtha.quantum.torchsim.record import Gate

MAX_CHUNK = 6  # wires per Kronecker-structured matmul of a single-qubit pass
COMPLEX_FIXED = ("PauliY", "S", "T", "Sdg")


def bit(n: int, wire: int, device: Any = None) -> Tensor:
    """(2^n,) float64: the bit of ``wire`` in each basis index (wire 0 = most significant)."""
    return ((torch.arange(2 ** n, device=device) >> (n - 1 - wire)) & 1).double()


def diag_column(g: Gate, n: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """(slope, constant) phases over the basis for one diagonal gate: phase = slope·θ + constant."""
    b = [bit(n, w, device) for w in g.wires]
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


def perm_index(g: Gate, n: int) -> Tensor:
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


FIXED_1Q = {
    "Hadamard": [[1 / math.sqrt(2), 1 / math.sqrt(2)], [1 / math.sqrt(2), -1 / math.sqrt(2)]],
    "PauliX": [[0, 1], [1, 0]],
    "PauliY": [[0, -1j], [1j, 0]],
    "PauliZ": [[1, 0], [0, -1]],
    "S": [[1, 0], [0, 1j]],
    "Sdg": [[1, 0], [0, -1j]],
    "T": [[1, 0], [0, complex(math.cos(math.pi / 4), math.sin(math.pi / 4))]],
}


@functools.lru_cache(maxsize=None)
def shift(kind: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Constant phase offsets, made once per dtype and device instead of on every call: "RY" for the
    RY matrix, "RY|0>" for RY applied to |0⟩."""
    rows = [[0.0, math.pi / 2], [-math.pi / 2, 0.0]] if kind == "RY" else [0.0, -math.pi / 2]
    return torch.tensor(rows, dtype=dtype, device=device)


def rot_mats(name: str, theta: Tensor) -> Tensor:
    """(..., k, 2, 2) matrices of a parametrised single-qubit gate for angles (..., k)."""
    if name == "RY":  # [[cos h, −sin h], [sin h, cos h]] = cos(h + [[0, π/2], [−π/2, 0]]): one op
        return torch.cos(torch.add(shift("RY", theta.dtype, theta.device), theta[..., None, None], alpha=0.5))
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


def cdtype(rdtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if rdtype == torch.float64 else torch.complex64


def chunks(n: int) -> list[tuple[int, int]]:
    """Contiguous wire ranges (start, size) for Kronecker-structured single-qubit passes: one
    range up to 6 wires (one 2^n×2^n matmul), else balanced ranges of at most 6 wires (the first
    applied as a batched matmul, the last as one plain matmul)."""
    if n <= MAX_CHUNK:
        return [(0, n)]
    k = -(-n // MAX_CHUNK)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [(sum(sizes[:i]), g) for i, g in enumerate(sizes)]


def kron(m: Tensor, flat: Tensor, with_eye: bool) -> Tensor:
    """(B, 2^g, 2^g): per batch entry, the Kronecker product of g of the pass's 2×2 matrices ``m``
    (B, P, 2, 2) in one gather and one product: K[r, c] = Π_t m[wire_t, r_t, c_t] (``flat`` from
    :func:`kron_index`; index P·4.. is the identity, for a wire of the range the pass leaves alone)."""
    b = m.shape[0]
    mats = m.reshape(b, -1)  # reshape, not indexing, whose backward zero-fills
    if with_eye:
        mats = torch.cat([mats, torch.eye(2, dtype=m.dtype, device=m.device).reshape(1, 4).expand(b, 4)], 1)
    g = flat.shape[0]
    return mats.index_select(1, flat.reshape(-1)).reshape(b, g, 2 ** g, 2 ** g).prod(1)


def kron_index(positions: list[int]) -> Tensor:
    """(g, 2^g, 2^g) indices into the flattened (P+1, 2, 2) matrix stack for :func:`kron`."""
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


def apply_fixed(s: Tensor, k: Tensor, start: int, size: int) -> Tensor:
    """Apply a fixed (2^size, 2^size) matrix to wires start..start+size−1: one (batched) matmul."""
    if s.is_complex() and not k.is_complex():  # real matrix, complex state: on the real view
        v = torch.view_as_real(s)
        return torch.view_as_complex(_matmul_wires(k, v, start, size).reshape(v.shape))
    if k.is_complex() and not s.is_complex():
        s = s.to(k.dtype)
    return _matmul_wires(k, s, start, size).reshape(s.shape)


def apply_per_token(s: Tensor, m: Tensor, wire: int) -> Tensor:
    """Apply per-token 2×2 matrices m (B, 2, 2) to ``wire``: broadcast over the token axis. ``unbind``,
    not slicing: the backward of a slice zero-fills a full-size gradient per slice."""
    x0, x1 = s.reshape(2 ** wire, 2, -1, s.shape[-1]).unbind(1)  # (wires before, wires after, tokens) each
    m00, m01, m10, m11 = m.reshape(-1, 4).T.unbind(0)  # (B,) each
    return torch.stack([torch.addcmul(x0 * m00, x1, m01), torch.addcmul(x0 * m10, x1, m11)],
                       1).reshape(s.shape[0], -1)


class PhaseMul(torch.autograd.Function):
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


# ----------------------------------------------------------------------------- linear ops of the fused circuit
# What :class:`qtha.quantum.torchsim.execute.Circuit` runs on the token state, in real arithmetic:
# a real state is (2^n, B), a complex one (2, 2^n, B) — real and imaginary parts stacked in front,
# so that every op is a few real matmuls or real elementwise kernels (torch's complex elementwise
# kernels on CPU cost 4–7× their real counterparts, and ``torch.complex`` is a full copy). A matrix
# is real (g, g) or complex stacked (2, g, g). Each op knows its forward and its vector–Jacobian
# product and holds at most one tensor parameter (``param``), which autograd outside the circuit
# connects to the inputs and weights. Conventions follow PyTorch's: for y = K s the state cotangent
# is Kᴴ λ and the matrix cotangent λ sᴴ; the cotangent of a real tensor is the real part.
def stacked(t: Tensor) -> Tensor:
    """A complex tensor as (2, …) real: real part, imaginary part (a real tensor is returned as is)."""
    return torch.view_as_real(t).movedim(-1, 0) if t.is_complex() else t


def _batched(s: Tensor, start: int, size: int) -> Tensor:
    """(C·2^start, 2^size, rest) view of a real (C = 1) or stacked complex (C = 2) state: a matrix on
    wires start..start+size−1 is then one batched matmul over the leading axis, no copy."""
    c = 2 if s.dim() == 3 else 1
    return s.reshape(c * 2 ** start, 2 ** size, -1)


def _bmm(k: Tensor, x: Tensor) -> Tensor:
    """k (g, g) on every matrix of x (b, g, m): a plain matmul when b = 1, else a batched one with k
    expanded (stride 0, never copied; ``matmul``'s broadcasting would copy the state instead)."""
    return (k @ x[0]).unsqueeze(0) if x.shape[0] == 1 else torch.bmm(k.expand(x.shape[0], *k.shape), x)


def _gram(lam: Tensor, s: Tensor) -> Tensor:
    """Σ_b lam_b s_bᵀ over the batch of (b, g, m) tensors: the cotangent of a matrix applied to s."""
    return (lam[0] @ s[0].T) if lam.shape[0] == 1 else torch.bmm(lam, s.transpose(1, 2)).sum(0)


def _complex_matrix(k: Tensor) -> Tensor:
    """[[K_r, −K_i], [K_i, K_r]]: a stacked complex (2, g, g) K as the real (2g, 2g) map on [s_r; s_i]."""
    return torch.cat([torch.cat([k[0], -k[1]], 1), torch.cat([k[1], k[0]], 1)], 0)


def matmul_wires(k: Tensor, s: Tensor, start: int, size: int) -> Tensor:
    """(I ⊗ K ⊗ I) s for a real (g, g) or stacked complex (2, g, g) K on a real or stacked state."""
    x = _batched(s, start, size)
    if k.dim() == 2:
        return _bmm(k, x).reshape(s.shape)
    a, dim = 2 ** start, s.shape[-2]
    if s.dim() == 2:  # real state: (K_r s, K_i s)
        if a == 1:
            return (k.reshape(2 * k.shape[1], -1) @ x[0]).reshape(2, dim, -1)
        return torch.stack([_bmm(k[0], x), _bmm(k[1], x)]).reshape(2, dim, -1)
    if a == 1:  # one real matmul with the 2g×2g block form
        return (_complex_matrix(k) @ s.reshape(2 * x.shape[1], -1)).reshape(s.shape)
    pr, pi = _bmm(k[0], x), _bmm(k[1], x)  # (K_r s_r, K_r s_i), (K_i s_r, K_i s_i)
    return torch.stack([pr[:a] - pi[a:], pr[a:] + pi[:a]]).reshape(s.shape)


class MatOp:
    """s ← (I ⊗ K ⊗ I) s: a fixed (2^size × 2^size) matrix on wires start..start+size−1."""

    def __init__(self, k: Tensor, start: int, size: int) -> None:
        self.param, self.start, self.size = stacked(k), start, size

    def forward(self, s: Tensor) -> Tensor:
        return matmul_wires(self.param, s, self.start, self.size)

    def backward(self, lam: Tensor, s_in: Tensor, s_out: Tensor, need: bool) -> tuple[Tensor, Optional[Tensor]]:
        k, a = self.param, 2 ** self.start
        complex_k, real_in = k.dim() == 3, s_in.dim() == 2
        lv, sv = _batched(lam, self.start, self.size), _batched(s_in, self.start, self.size)
        g_k = None
        if need:
            if not complex_k:  # Σ λ_c s_cᵀ over the parts and the wires around the range
                g_k = _gram(lv, sv)
            elif real_in:  # (λ_r sᵀ, λ_i sᵀ)
                g_k = torch.stack([_gram(lv[:a], sv), _gram(lv[a:], sv)])
            else:  # (λ_r s_rᵀ + λ_i s_iᵀ, λ_i s_rᵀ − λ_r s_iᵀ)
                g_k = torch.stack([_gram(lv, sv), _gram(lv[a:], sv[:a]) - _gram(lv[:a], sv[a:])])
        kt = k.transpose(-1, -2)
        if not complex_k:
            return _bmm(kt, lv).reshape(s_in.shape), g_k
        if real_in:  # Re(Kᴴ λ) = K_rᵀ λ_r + K_iᵀ λ_i
            if a == 1:
                return (torch.cat([kt[0], kt[1]], 1) @ lam.reshape(2 * lv.shape[1], -1)).reshape(s_in.shape), g_k
            return (_bmm(kt[0], lv[:a]) + _bmm(kt[1], lv[a:])).reshape(s_in.shape), g_k
        return matmul_wires(torch.stack([kt[0], -kt[1]]), lam, self.start, self.size), g_k


class PhaseOp:
    """s ← e^{iφ} ⊙ s for real phases φ of shape (2^n, N) (per token) or (2^n, 1). Ops that share
    one φ tensor (identical re-upload layers) share its cos/sin, computed once per call."""

    def __init__(self, phase: Tensor) -> None:
        self.param = phase
        self.cs: Optional[tuple[Tensor, Tensor]] = None

    def forward(self, s: Tensor) -> Tensor:
        c, sn = self.cs
        if s.dim() == 2:
            return torch.stack([c * s, sn * s])
        re = torch.mul(c, s[0])
        re.addcmul_(sn, s[1], value=-1)
        im = torch.mul(sn, s[0])
        im.addcmul_(c, s[1])
        return torch.stack([re, im])

    def backward(self, lam: Tensor, s_in: Tensor, s_out: Tensor, need: bool) -> tuple[Tensor, Optional[Tensor]]:
        c, sn = self.cs
        g_p = None
        if need:  # Im(conj(out) λ) = out_r λ_i − out_i λ_r
            g_p = torch.mul(s_out[0], lam[1])
            g_p.addcmul_(s_out[1], lam[0], value=-1)
            g_p = g_p.sum_to_size(self.param.shape)
        re = torch.mul(c, lam[0])  # e^{−iφ} λ
        re.addcmul_(sn, lam[1])
        if s_in.dim() == 2:
            return re, g_p
        im = torch.mul(c, lam[1])
        im.addcmul_(sn, lam[0], value=-1)
        return torch.stack([re, im]), g_p


class ScaleOp:
    """s ← c ⊙ s for a constant real c of shape (2^n, 1) (a diagonal pass of CZ / Z only: ±1)."""

    def __init__(self, c: Tensor) -> None:
        self.param, self.c = None, c

    def forward(self, s: Tensor) -> Tensor:
        return s * self.c

    def backward(self, lam: Tensor, s_in: Tensor, s_out: Tensor, need: bool) -> tuple[Tensor, None]:
        return lam * self.c, None


class PermOp:
    """s ← s[p]: a composed permutation of the basis (CNOT, SWAP)."""

    def __init__(self, perm: Tensor, inverse: Tensor) -> None:
        self.param, self.perm, self.inverse = None, perm, inverse

    def forward(self, s: Tensor) -> Tensor:
        return s.index_select(s.dim() - 2, self.perm)

    def backward(self, lam: Tensor, s_in: Tensor, s_out: Tensor, need: bool) -> tuple[Tensor, None]:
        return lam.index_select(lam.dim() - 2, self.inverse), None
