"""MPO (tensor-train matrix) linear map R^I → R^J (SPEC §1.4).

A matrix W ∈ R^{J×I} with I = ∏ I_k, J = ∏ J_k is stored as n cores
G_k ∈ R^{D_{k-1} × J_k × I_k × D_k} (D_0 = D_n = 1):

    W[j_1…j_n, i_1…i_n] = G_1[:, j_1, i_1, :] · G_2[:, j_2, i_2, :] ⋯ G_n[:, j_n, i_n, :]

with row-major multi-indices (i = (…(i_1·I_2 + i_2)·I_3 + …), i.e. ``x.reshape(..., I_1, …, I_n)``).
It costs Σ_k D_{k-1} J_k I_k D_k parameters instead of I·J. ``forward`` picks, per call, the
cheaper of two exact contraction orders by a FLOP model (:func:`choose_path`);
:meth:`MPO.from_matrix` decomposes a given matrix by TT-SVD so an MPO can start from
pretrained weights.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Literal, Optional, get_args

import torch
from torch import Tensor, nn

Init = Literal["kaiming_normal", "zeros_last", "zeros"]
_INITS: tuple[str, ...] = get_args(Init)


# ----------------------------------------------------------------------------- shapes
def _is_positive_int(value: object) -> bool:
    """True for positive Python/NumPy integers (config values may be either), never for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _prime_factor_count(dim: int) -> int:
    """Number of prime factors of ``dim`` with multiplicity: the most factors > 1 it splits into."""
    count, p = 0, 2
    while p * p <= dim:
        while dim % p == 0:
            dim //= p
            count += 1
        p += 1
    return count + (dim > 1)


def _descending_splits(dim: int, n: int, largest: int) -> Iterator[tuple[int, ...]]:
    """Every non-increasing tuple of ``n`` factors in [2, largest] whose product is ``dim``."""
    if n == 1:
        if 2 <= dim <= largest:
            yield (dim,)
        return
    small = [f for f in range(2, math.isqrt(dim) + 1) if dim % f == 0]
    divisors = sorted({*small, *(dim // f for f in small), dim}, reverse=True)
    for f in divisors:
        if f > largest:
            continue
        if f**n < dim:  # f is the largest factor, so f**n must reach dim
            break
        yield from ((f, *rest) for rest in _descending_splits(dim // f, n - 1, f))


def factorize(dim: int, n: int) -> tuple[int, ...]:
    """Split ``dim`` into ``n`` factors > 1, as balanced as possible, largest first.

    Balanced means closest to dim**(1/n) in log scale: the split minimising Σ_k (ln f_k − ln dim / n)²
    (the variance of the log-factors), ties broken towards the lexicographically smaller split (smaller largest
    factor). This reproduces the authors' table (3584 → (8,8,8,7), 18944 → (37,8,8,8), 4096 → (8,8,8,8),
    512 → (8,4,4,4), 256 → (4,4,4,4)) without storing it.
    """
    if not _is_positive_int(dim):
        raise ValueError(f"factorize: dim must be a positive integer, got {dim!r}")
    if not _is_positive_int(n):
        raise ValueError(f"factorize: number of factors n must be a positive integer, got n={n!r} for dim={dim}")
    dim, n = int(dim), int(n)
    if n == 1:
        return (dim,)
    available = _prime_factor_count(dim)
    if n > available:
        raise ValueError(
            f"cannot split dim={dim} into n={n} factors > 1 (it has {available} prime factor(s)); "
            f"use at most {max(available, 1)} core(s) or give explicit modes"
        )
    target = math.log(dim) / n

    def imbalance(split: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
        return round(sum((math.log(f) - target) ** 2 for f in split), 12), split

    return min(_descending_splits(dim, n, dim), key=imbalance)


def bond_dims(bond_dim: int | Sequence[int], n: int) -> tuple[int, ...]:
    """Full rank tuple (1, D_1, …, D_{n-1}, 1) from one bond for all internal links or a list of n−1."""
    if isinstance(bond_dim, numbers.Integral):
        inner = (bond_dim,) * (n - 1)
    else:
        inner = tuple(bond_dim)
        if len(inner) != n - 1:
            raise ValueError(f"bond_dim list must have n-1={n - 1} entries for {n} cores, got {list(inner)}")
    if not all(map(_is_positive_int, inner)):
        raise ValueError(f"bond dimensions must be positive integers, got {list(inner)}")
    return (1, *map(int, inner), 1)


def _check_modes(modes: Sequence[int], what: str) -> tuple[int, ...]:
    """Modes as a tuple of positive ints, or a ValueError naming which argument is wrong."""
    modes = tuple(modes)
    if not modes or not all(map(_is_positive_int, modes)):
        raise ValueError(f"{what} must be a non-empty list of positive integers, got {list(modes)}")
    return tuple(map(int, modes))


# ----------------------------------------------------------------------------- cost model
# Roofline weight of one element written to / read back from memory, in multiply-adds. The
# sequential path streams an (N × J_1⋯J_k I_{k+1}⋯I_n D_k) intermediate through memory at every
# core (a GEMM plus a permuting copy), which costs far more than its arithmetic on CPUs and GPUs
# alike; one dense GEMM keeps its operands in cache. 16 is a conservative machine balance
# (measured on a 2-core EPYC: 3584→256, D=8 — dense 3–9× faster, the model picks dense).
MEMORY_WEIGHT = 16


def contraction_costs(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int],
                      n_tokens: int) -> dict[str, int]:
    """Estimated cost (multiply-adds + weighted memory traffic) of the two exact ways to apply the MPO.

    * ``sequential``: the input is contracted through core k while the outputs j_1…j_k are
      open and the inputs i_{k+1}…i_n not yet touched: arithmetic
      N · Σ_k D_{k-1} D_k (J_1⋯J_k)(I_k⋯I_n), plus each intermediate
      N · (J_1⋯J_k)(I_{k+1}⋯I_n) D_k written and permuted (×2) at ``MEMORY_WEIGHT``.
    * ``dense``: build W left to right — step k multiplies a (J_1⋯J_{k-1})(I_1⋯I_{k-1}) × D_{k-1}
      block by core k, its (J_1⋯J_k)(I_1⋯I_k) D_k result written and permuted (×2) at
      ``MEMORY_WEIGHT`` like the sequential intermediates — then one N·I·J GEMM reading N·I inputs
      and writing N·J outputs. (Without the build's traffic the model picked dense from 4–8 tokens
      on; measured under bf16 autocast, fwd+bwd, 576↔256 and 256→192 at D=8, the sequential path is
      ~2× faster up to 16–32 tokens and dense 4–9× faster at 512.)

    Backward passes cost about twice the forward on either path, so the forward ratio decides.
    """
    n = len(in_modes)
    arithmetic = sum(
        ranks[k] * ranks[k + 1] * math.prod(out_modes[: k + 1]) * math.prod(in_modes[k:]) for k in range(n)
    )
    traffic = sum(2 * math.prod(out_modes[: k + 1]) * math.prod(in_modes[k + 1:]) * ranks[k + 1] for k in range(n))
    sequential = n_tokens * (arithmetic + MEMORY_WEIGHT * traffic)
    build = sum(
        math.prod(out_modes[:k]) * math.prod(in_modes[:k]) * ranks[k] * out_modes[k] * in_modes[k] * ranks[k + 1]
        for k in range(n)
    )
    build_traffic = sum(2 * math.prod(out_modes[: k + 1]) * math.prod(in_modes[: k + 1]) * ranks[k + 1]
                        for k in range(n))
    d_in, d_out = math.prod(in_modes), math.prod(out_modes)
    dense = build + MEMORY_WEIGHT * build_traffic + n_tokens * (d_in * d_out + MEMORY_WEIGHT * (d_in + d_out))
    return {"sequential": sequential, "dense": dense}


def choose_path(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int],
                n_tokens: int) -> str:
    """``"dense"`` only when materialising W is strictly cheaper; otherwise ``"sequential"``."""
    costs = contraction_costs(in_modes, out_modes, ranks, n_tokens)
    return "dense" if costs["dense"] < costs["sequential"] else "sequential"


# ----------------------------------------------------------------------------- the module
class MPO(nn.Module):
    """Trainable MPO map x ∈ R^{…×I} ↦ W x ∈ R^{…×J}; core k has shape (D_{k-1}, J_k, I_k, D_k)."""

    def __init__(self, in_modes: Sequence[int], out_modes: Sequence[int], bond_dim: int | Sequence[int] = 8,
                 *, init: Init = "kaiming_normal", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_modes = _check_modes(in_modes, "in_modes")
        self.out_modes = _check_modes(out_modes, "out_modes")
        if len(self.in_modes) != len(self.out_modes):
            raise ValueError(f"in_modes {list(self.in_modes)} and out_modes {list(self.out_modes)} "
                             "must have the same number of cores")
        if init not in _INITS:
            raise ValueError(f"unknown MPO init {init!r}; choose one of {', '.join(_INITS)}")
        self.ranks = bond_dims(bond_dim, len(self.in_modes))
        self.in_features = math.prod(self.in_modes)
        self.out_features = math.prod(self.out_modes)
        self.init = init
        self._frozen_matrix: Optional[tuple[tuple, Tensor]] = None
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(self.ranks[k], j, i, self.ranks[k + 1], device=device, dtype=dtype))
            for k, (j, i) in enumerate(zip(self.out_modes, self.in_modes))
        )
        self.reset_parameters()

    # -- construction -----------------------------------------------------------------
    def core_stds(self) -> tuple[float, ...]:
        """Per-core std giving the materialised W the Kaiming-normal variance Var(W_ji) = 2/I.

        W_ji is a sum over ∏_k D_k (internal bonds) bond paths, each a product of n independent
        zero-mean entries, so Var(W) = ∏_k var_k · ∏_{k internal} D_k. Choosing
        var_k = 2^{1/n} / (I_k · sqrt(D_{k-1} D_k)) makes the product 2/I (every internal bond
        appears in two neighbouring cores, once per sqrt), i.e. each core behaves like a layer
        with fan-in I_k · sqrt(D_{k-1} D_k).
        """
        n = len(self.cores)
        return tuple(
            math.sqrt(2 ** (1 / n) / (i * math.sqrt(self.ranks[k] * self.ranks[k + 1])))
            for k, i in enumerate(self.in_modes)
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Apply ``self.init``: Kaiming-normal W, the same with a zero last core (map = 0), or all zero."""
        for core, std in zip(self.cores, self.core_stds()):
            if self.init == "zeros":
                core.zero_()
            else:
                core.normal_(0.0, std)
        if self.init == "zeros_last":
            self.cores[-1].zero_()

    @classmethod
    def build(cls, d_in: int, d_out: int, n_cores: int = 4, bond_dim: int | Sequence[int] = 8, *,
              in_modes: Sequence[int] | None = None, out_modes: Sequence[int] | None = None,
              init: Init = "kaiming_normal", device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> MPO:
        """MPO for a d_in → d_out map, modes from :func:`factorize` unless given (then validated)."""
        modes = []
        for dim, given, side in ((d_in, in_modes, "in"), (d_out, out_modes, "out")):
            if given is None:
                modes.append(factorize(dim, n_cores))
                continue
            given = _check_modes(given, f"{side}_modes")
            if math.prod(given) != dim or len(given) != n_cores:
                raise ValueError(f"{side}_modes {list(given)} must have n_cores={n_cores} entries "
                                 f"whose product is d_{side}={dim}")
            modes.append(given)
        return cls(modes[0], modes[1], bond_dim, init=init, device=device, dtype=dtype)

    @classmethod
    def from_matrix(cls, W: Tensor, in_modes: Sequence[int], out_modes: Sequence[int],
                    max_bond: int | Sequence[int]) -> tuple[MPO, float]:
        """TT-SVD of W (J, I): the MPO with bonds ≤ max_bond and its relative error ‖W − W̃‖_F / ‖W‖_F.

        W is reshaped to the interleaved tensor (J_1, I_1, J_2, I_2, …) and split left to right by
        truncated SVDs; U becomes core k (left-orthonormal), S·Vᵀ is carried on. Because every
        kept core is orthonormal, the errors discarded at each step are mutually orthogonal, so
        ‖W − W̃‖² is exactly the sum of all discarded squared singular values. A bond is also
        capped by the size of its unfolding (the full TT rank), so the MPO's ranks may be smaller
        than max_bond.
        """
        in_modes, out_modes = _check_modes(in_modes, "in_modes"), _check_modes(out_modes, "out_modes")
        n = len(in_modes)
        J, I = math.prod(out_modes), math.prod(in_modes)
        if len(out_modes) != n or tuple(W.shape) != (J, I):
            raise ValueError(f"from_matrix: W of shape {tuple(W.shape)} does not match "
                             f"out_modes {list(out_modes)} × in_modes {list(in_modes)}")
        caps = bond_dims(max_bond, n)
        interleave = [p for k in range(n) for p in (k, n + k)]
        rest = W.detach().reshape(*out_modes, *in_modes).permute(interleave)
        cores, ranks, discarded = [], [1], W.new_zeros(())
        for k in range(n - 1):
            U, S, Vh = torch.linalg.svd(rest.reshape(ranks[k] * out_modes[k] * in_modes[k], -1),
                                        full_matrices=False)
            r = min(caps[k + 1], S.numel())
            discarded = discarded + S[r:].square().sum()
            cores.append(U[:, :r].reshape(ranks[k], out_modes[k], in_modes[k], r))
            rest = S[:r, None] * Vh[:r]
            ranks.append(r)
        cores.append(rest.reshape(ranks[-1], out_modes[-1], in_modes[-1], 1))
        mpo = cls(in_modes, out_modes, ranks[1:], init="zeros", device=W.device, dtype=W.dtype)
        with torch.no_grad():
            for param, core in zip(mpo.cores, cores):
                param.copy_(core)
        norm = torch.linalg.matrix_norm(W.detach())
        error = float(discarded.sqrt() / norm) if norm > 0 else 0.0
        return mpo, error

    @staticmethod
    def num_params(in_modes: Sequence[int], out_modes: Sequence[int], bond_dim: int | Sequence[int]) -> int:
        """Σ_k D_{k-1} J_k I_k D_k — computed from shapes, so it needs no module (or weights)."""
        ranks = bond_dims(bond_dim, len(in_modes))
        return sum(ranks[k] * j * i * ranks[k + 1] for k, (j, i) in enumerate(zip(out_modes, in_modes)))

    # -- application ----------------------------------------------------------------
    def to_matrix(self) -> Tensor:
        """Materialise W (J, I): multiply the cores left to right, keeping (J_≤k, I_≤k, D_k) open."""
        t = self.cores[0].new_ones(1, 1, 1)
        for core in self.cores:
            t = torch.einsum("pqa,ajib->pjqib", t, core)
            p, j, q, i, b = t.shape
            t = t.reshape(p * j, q * i, b)
        return t.reshape(self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        """[..., I] → [..., J], by whichever exact contraction order the cost model finds cheaper."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"MPO expects inputs with last dimension {self.in_features}, got {tuple(x.shape)}")
        if not torch.is_grad_enabled():
            return nn.functional.linear(x, self._inference_matrix())
        n_tokens = math.prod(x.shape[:-1])
        if choose_path(self.in_modes, self.out_modes, self.ranks, n_tokens) == "dense":
            return self._forward_dense(x)
        return self._forward_sequential(x)

    def _inference_matrix(self) -> Tensor:
        """W without gradients, rebuilt only when a core changed (in-place updates bump ``_version``).

        Generation calls every adapter once per new token with a handful of tokens: rebuilding W
        from the cores each time cost more than the rest of the layer.
        """
        key = tuple((c.data_ptr(), c._version, c.dtype, c.device) for c in self.cores)
        if self._frozen_matrix is None or self._frozen_matrix[0] != key:
            self._frozen_matrix = (key, self.to_matrix())
        return self._frozen_matrix[1]

    def _forward_dense(self, x: Tensor) -> Tensor:
        """Build W once and do one matmul: wins when tokens are many and W is small."""
        return nn.functional.linear(x, self.to_matrix())

    def _forward_sequential(self, x: Tensor) -> Tensor:
        return self.contract(x)

    def contract(self, x: Tensor, transposed: bool = False) -> Tensor:
        """[..., I] → [..., J] (x Wᵀ), or with ``transposed`` [..., J] → [..., I] (x W), core by core,
        never forming W (:func:`_contract`).

        Public because a product with a thin matrix — the r×m linear after an MPO, the m×r one before
        it — is best taken as r "tokens" through the cores, whatever the cost model picks for a batch."""
        modes, width = (self.out_modes, self.out_features) if transposed else (self.in_modes, self.in_features)
        if x.shape[-1] != width:
            raise ValueError(f"MPO.contract(transposed={transposed}) expects last dimension {width}, "
                             f"got {tuple(x.shape)}")
        cores = [core.transpose(1, 2) for core in self.cores] if transposed else list(self.cores)
        return _contract(x, cores, modes)

    def extra_repr(self) -> str:
        return (f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, "
                f"init={self.init}")


def _contract(x: Tensor, cores: Sequence[Tensor], in_modes: Sequence[int]) -> Tensor:
    """[..., ∏ in_modes] → [..., ∏ J_k] through cores (D_{k-1}, J_k, I_k, D_k), one at a time.

    Before step k the state is laid out as (I_{k+1}⋯I_n · N·J_1⋯J_{k-1}, D_{k-1}·I_k), so core k
    (reshaped to (D_{k-1}·I_k, J_k·D_k)) is one plain GEMM. J_k joins the row-major output
    index; the next input mode I_{k+1}, the slowest axis, is moved next to D_k by the one
    copy per step.
    """
    lead = x.shape[:-1]
    rows = math.prod(lead)  # N · J_1⋯J_{k-1}
    d_in = math.prod(in_modes)
    t = x.reshape(rows, in_modes[0], d_in // in_modes[0]).permute(2, 0, 1)
    for k, core in enumerate(cores):
        d_left, j, i, d_right = core.shape
        rest = math.prod(in_modes[k + 1:])
        t = t.reshape(rest * rows, d_left * i) @ core.permute(0, 2, 1, 3).reshape(d_left * i, j * d_right)
        rows *= j
        if k + 1 < len(cores):
            i_next = in_modes[k + 1]
            t = t.reshape(i_next, rest // i_next * rows, d_right).permute(1, 2, 0)
    return t.reshape(*lead, math.prod(core.shape[1] for core in cores))
