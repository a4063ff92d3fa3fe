"""QTHA — quantum tensor hybrid adaptation (SPEC §1.6), the paper's method, and its ablations.

For a token x:  a = MPO_A(x) (d_in → m) · c = A_lin(a) · q = QNN(c) · o = W_q q + W_c c ·
b = B_lin(o) · Δ = MPO_B(b) (m → d_out, last core zero ⇒ Δ = 0 at init) · y = W0 x + (α/r) Δ.

``variant`` keeps the same layer for the ablations, so one sweep compares them:
``mpo`` (MPO_A → MPO_B), ``mpo_mlp`` (no quantum: o = W_c c), ``mlp_qnn`` (no MPO: A_lin
d_in → ·, the full fusion W_q q + W_c c, B_lin · → d_out zero-init), ``qnn`` (quantum branch
only: o = W_q q), ``full``.

``branch=silu_mlp`` is the classical control of the quantum branch (the authors' BD/BE/BF modes,
which sit on ``mlp_qnn``): W_q·QNN(c) becomes a k-layer SiLU MLP of r×r linears,
NW_k(SiLU(⋯SiLU(NW_1 c))), its last linear zero-initialised, so "is it the quantum part?" is a
comparison of one config value. ``init=authors`` (the default, QLLM-peft's ``qpeft_arch="ABC"``):
small linears Kaiming-uniform with a = 0, MPO cores Kaiming-normal, QNN angles U[−π, π);
``init=spec_v1``: nn.Linear's own a = √5 and angles U[0, 2π), the earlier reading.

Speed: the maps on either side of the QNN are linear, so MPO_A and A_lin (and B_lin and MPO_B) run as
one product matrix whenever that costs fewer multiply-adds (:func:`_fold`): the tokens then see a d×r
map, like LoRA's, instead of the d×m MPO map (m = 256 would cost about as much as the frozen q_proj).
Without gradients the two products are kept between calls until a factor changes (generation).

Width convention: the QNN reads c as rotation angles, so c has one entry per qubit
(n_q, default r); the fusion matrices map back to r (W_q, W_c ∈ R^{r×n_q}). With the
default n_q = r this is exactly the SPEC's r×r fusion, and a qubit-count sweep at fixed
rank stays well defined.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from qtha.adapters.base import AdapterConfig, AdapterLayer
from qtha.adapters.registry import register_adapter
from qtha.config import QuantumConfig
from qtha.errors import ConfigError, one_of, positive
from qtha.quantum import ANSATZE, MAX_QUBITS, QNN
from qtha.tn.mpo import MPO, factorize

QTHA_VARIANTS = ("full", "mpo", "mpo_mlp", "mlp_qnn", "qnn")
LINEAR_VARIANTS = frozenset({"mpo", "mpo_mlp"})  # no QNN or MLP branch: Δ is a matrix, so the layer merges
BRANCHES = ("qnn", "silu_mlp")
INITS = ("authors", "spec_v1")
MAX_QNN_LAYERS = 256  # circuit depth per forward pass; far above the paper's, below a loop that never ends


@dataclass
class QTHAConfig(AdapterConfig):
    """SPEC §1.6: MPO → Linear → QNN (+ linear fusion) → Linear → MPO, scale alpha / rank.

    ``variant`` selects the ablation (:data:`QTHA_VARIANTS`); ``bond_dim`` is one value for every
    bond or a list of n_cores − 1 values; ``n_qubits`` defaults to rank and ``qnn_layers`` to
    n_qubits (the authors' L = r); ``ansatz`` is any name registered with
    :func:`qtha.quantum.register_ansatz`. ``branch``: ``qnn``, or ``silu_mlp`` (its classical control,
    ``mlp_layers`` r×r linears); ``init``: ``authors`` or ``spec_v1`` (see the module docstring).
    """

    name: str = "qtha"
    variant: str = "full"
    bottleneck: int = 256
    n_cores: int = 4
    bond_dim: Any = 8
    n_qubits: Optional[int] = None
    qnn_layers: Optional[int] = None
    ansatz: str = "qtha"
    branch: str = "qnn"
    mlp_layers: int = 2
    init: str = "authors"


_USES_MPO = frozenset({"full", "mpo", "mpo_mlp"})
_USES_BRANCH = frozenset({"full", "mlp_qnn", "qnn"})  # where the nonlinear branch (QNN or its control) sits
_USES_WC = frozenset({"full", "mpo_mlp", "mlp_qnn"})


def _quantum(cfg: QTHAConfig) -> bool:
    return cfg.variant in _USES_BRANCH and cfg.branch == "qnn"


def n_qubits_of(cfg: QTHAConfig) -> int:
    return cfg.n_qubits if cfg.n_qubits is not None else cfg.rank


def qnn_layers_of(cfg: QTHAConfig) -> int:
    """``qnn_layers``, or the qubit count when it is null (L = n_q = r, as in the authors' code)."""
    return cfg.qnn_layers if cfg.qnn_layers is not None else n_qubits_of(cfg)


def _widths(cfg: QTHAConfig, d_in: int, d_out: int) -> tuple[int, int, int]:
    """(input width of A_lin, width of c, output width of B_lin) for the variant."""
    width_c = n_qubits_of(cfg) if _quantum(cfg) else cfg.rank
    uses_mpo = cfg.variant in _USES_MPO
    return (cfg.bottleneck if uses_mpo else d_in), width_c, (cfg.bottleneck if uses_mpo else d_out)


def _fold(n_tokens: int, d_out: int, inner: int, d_in: int) -> bool:
    """Whether two linear maps (d_out × inner)(inner × d_in) are cheaper applied as their product: forming it
    costs inner·d_in·d_out multiply-adds per call and applying it N·d_in·d_out, against N·inner·(d_in + d_out)
    for one map after the other. With a rank r ≪ bottleneck m on one side (A_lin after MPO_A, B_lin before
    MPO_B), the tokens then see a d×r map instead of a d×m one: from N ≈ r tokens on."""
    return inner * d_in * d_out + n_tokens * d_in * d_out < n_tokens * inner * (d_in + d_out)


def _product(left: nn.Module, right: nn.Module) -> Tensor:
    """The matrix of left ∘ right, one an MPO and the other a thin ``nn.Linear``. The MPO is never
    materialised: the linear's r rows (columns) go through its cores instead (r "tokens")."""
    return right.contract(left.weight, transposed=True) if isinstance(right, MPO) else left.contract(right.weight.T).T


def _chain(left: Optional[nn.Module], right: Optional[nn.Module], x: Tensor, n_tokens: int, kept: dict) -> Tensor:
    """left(right(x)) for an MPO and a bias-free ``nn.Linear`` (either may be None = identity), as one
    product matrix when :func:`_fold` finds it cheaper — the same map, by associativity, recomputed on
    every call so gradients reach both factors. The product is formed in the adapter dtype, outside
    autocast: it is small, and a bf16 autocast would only add casts of every core. Without gradients
    (evaluation, generation) the product is kept in ``kept`` until a factor changes: a decode step then
    costs one d×r matmul, like LoRA's, instead of the MPO's d×m one."""
    if left is None:
        return right(x)
    if right is None:
        return left(x)
    if not torch.is_grad_enabled():
        return nn.functional.linear(x, _kept_product(left, right, kept))
    if not _fold(n_tokens, left.out_features, left.in_features, right.in_features):
        return left(right(x))
    return nn.functional.linear(x, _product_outside_autocast(left, right))


def _product_outside_autocast(left: nn.Module, right: nn.Module) -> Tensor:
    dev = next(left.parameters()).device.type
    with torch.autocast(dev, enabled=False) if torch.amp.is_autocast_available(dev) else contextlib.nullcontext():
        return _product(left, right)


def _kept_product(left: nn.Module, right: nn.Module, kept: dict) -> Tensor:
    """:func:`_product` without gradients, rebuilt only when a factor changed (in-place updates bump
    ``_version``), as the MPO keeps its own matrix."""
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in (*left.parameters(), *right.parameters()))
    if kept.get("key") != key:
        kept.update(key=key, weight=_product_outside_autocast(left, right))
    return kept["weight"]


def _silu_mlp(width: int, layers: int, **kw: Any) -> nn.Sequential:
    """NW_k(SiLU(⋯SiLU(NW_1 c))): ``layers`` width×width linears, the last one zero (the authors' BD/BE/BF)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(width, width, bias=False, **kw))
        if i < layers - 1:
            mods.append(nn.SiLU())
    nn.init.zeros_(mods[-1].weight)
    return nn.Sequential(*mods)


class QTHALayer(AdapterLayer):
    """MPO + QNN + linear-fusion adapter. With the QNN (or its SiLU control) Δ is nonlinear in x, hence not
    mergeable; the variants without that branch (``mpo``, ``mpo_mlp``: :data:`LINEAR_VARIANTS`) are linear maps
    and merge like LoRA (``mergeable`` is then set per layer)."""

    mergeable: bool = False
    autocast_input: ClassVar[bool] = True
    uses_quantum: ClassVar[bool] = True

    def __init__(self, base: nn.Linear, cfg: QTHAConfig, *, dtype: torch.dtype = torch.float32,
                 quantum: Optional[QuantumConfig] = None) -> None:
        super().__init__(base, cfg, dtype=dtype)
        self.variant = cfg.variant
        self.mergeable = self.is_mergeable(cfg)
        self._kept_A: dict = {}  # A_lin∘MPO_A and MPO_B∘B_lin between no-gradient calls (:func:`_kept_product`)
        self._kept_B: dict = {}
        kw = self.factory_kwargs()
        d_in, d_out, m = self.in_features, self.out_features, cfg.bottleneck
        if cfg.variant in _USES_MPO:
            self.mpo_A = MPO.build(d_in, m, cfg.n_cores, cfg.bond_dim, init="kaiming_normal", **kw)
            self.mpo_B = MPO.build(m, d_out, cfg.n_cores, cfg.bond_dim, init="zeros_last", **kw)
        if cfg.variant == "mpo":
            return
        a_in, width_c, b_out = _widths(cfg, d_in, d_out)
        self.A_lin = nn.Linear(a_in, width_c, bias=False, **kw)
        if _quantum(cfg):
            self.qnn = QNN.from_config(width_c, qnn_layers_of(cfg), cfg.ansatz, quantum or QuantumConfig())
            self.qnn.to(kw["device"])
            self.W_q = nn.Linear(width_c, cfg.rank, bias=False, **kw)
        elif cfg.variant in _USES_BRANCH:
            self.mlp = _silu_mlp(cfg.rank, cfg.mlp_layers, **kw)
        if cfg.variant in _USES_WC:
            self.W_c = nn.Linear(width_c, cfg.rank, bias=False, **kw)
        self.B_lin = nn.Linear(cfg.rank, b_out, bias=False, **kw)
        self._initialise(cfg.init)

    @torch.no_grad()
    def _initialise(self, init: str) -> None:
        """The small linears and the QNN angles by ``init``; then what keeps Δ = 0 at init: MPO_B's last
        core (already zero), else B_lin, and the control MLP's last linear."""
        if init == "authors":  # QLLM-peft: nn.init.kaiming_uniform_(w), i.e. a = 0, bound √(6 / fan_in)
            for lin in (self.A_lin, getattr(self, "W_q", None), getattr(self, "W_c", None), self.B_lin,
                        *(getattr(self, "mlp", ())[:-1])):
                if isinstance(lin, nn.Linear):
                    nn.init.kaiming_uniform_(lin.weight, a=0.0)
        elif hasattr(self, "qnn"):  # spec_v1: nn.Linear's own init, angles U[0, 2π)
            nn.init.uniform_(self.qnn.weights, 0.0, 2 * math.pi)
        if self.variant not in _USES_MPO:
            nn.init.zeros_(self.B_lin.weight)
        if hasattr(self, "mlp"):
            nn.init.zeros_(self.mlp[-1].weight)

    def delta(self, x: Tensor) -> Tensor:
        n_tokens = x.numel() // x.shape[-1]
        if self.variant == "mpo":  # two m-wide maps: their product is no thinner, so never folded
            return self.mpo_B(self.mpo_A(x))
        c = _chain(self.A_lin, getattr(self, "mpo_A", None), x, n_tokens, self._kept_A)
        o = self.W_c(c) if hasattr(self, "W_c") else 0
        if hasattr(self, "W_q"):
            o = o + self.W_q(self.qnn(c).to(c.dtype))
        elif hasattr(self, "mlp"):
            o = o + self.mlp(c)
        return _chain(getattr(self, "mpo_B", None), self.B_lin, o, n_tokens, self._kept_B)

    @classmethod
    def is_mergeable(cls, cfg: Any) -> bool:
        return cfg.variant in LINEAR_VARIANTS

    def delta_weight(self) -> Tensor:
        """The linear variants' update as a (d_out, d_in) matrix: Δ applied to the identity (d_in "tokens"), which
        is exact for any linear Δ and needs no second description of the chain; the others refuse (nonlinear)."""
        if not self.mergeable:
            return super().delta_weight()
        eye = torch.eye(self.in_features, device=self.base.weight.device, dtype=self._compute_dtype())
        return self.scaling * self.delta(eye).T

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        one_of("adapter.variant", cfg.variant, QTHA_VARIANTS)
        one_of("adapter.ansatz", cfg.ansatz, sorted(ANSATZE))
        one_of("adapter.branch", cfg.branch, BRANCHES)
        one_of("adapter.init", cfg.init, INITS)
        for key in ("bottleneck", "n_cores", "mlp_layers"):
            positive(f"adapter.{key}", getattr(cfg, key))
        if cfg.qnn_layers is not None:
            positive("adapter.qnn_layers", cfg.qnn_layers)
            if cfg.qnn_layers > MAX_QNN_LAYERS:
                raise ConfigError(f"adapter.qnn_layers={cfg.qnn_layers} is above the ceiling; allowed: "
                                  f"1..{MAX_QNN_LAYERS} (the paper's circuits have at most a few layers)")
        given = cfg.bond_dim
        bonds = list(given) if isinstance(given, Sequence) and not isinstance(given, str) else [given]
        if not bonds or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in bonds):
            raise ConfigError(f"adapter.bond_dim={cfg.bond_dim} must be a positive int or a list of n_cores-1 "
                              "positive ints")
        if len(bonds) > 1 and len(bonds) != cfg.n_cores - 1:
            raise ConfigError(f"adapter.bond_dim has {len(bonds)} values; allowed: one, or n_cores-1={cfg.n_cores - 1}")
        n_q = n_qubits_of(cfg)
        if not 1 <= n_q <= MAX_QUBITS:
            raise ConfigError(f"adapter.n_qubits={n_q} is out of range; allowed: 1..{MAX_QUBITS} "
                              "(state-vector simulation; defaults to adapter.rank)")

    @classmethod
    def num_params(cls, cfg: QTHAConfig, d_in: int, d_out: int) -> int:
        """Exact count: MPO cores (Σ D J I D) + the three/four small linears + QNN angles."""
        total = 0
        if cfg.variant in _USES_MPO:
            n, m = cfg.n_cores, cfg.bottleneck
            total += MPO.num_params(factorize(d_in, n), factorize(m, n), cfg.bond_dim)
            total += MPO.num_params(factorize(m, n), factorize(d_out, n), cfg.bond_dim)
        if cfg.variant == "mpo":
            return total
        a_in, width_c, b_out = _widths(cfg, d_in, d_out)
        total += a_in * width_c + cfg.rank * b_out
        if _quantum(cfg):  # QNN angles + W_q
            total += QNN.num_params(width_c, qnn_layers_of(cfg), cfg.ansatz) + width_c * cfg.rank
        elif cfg.variant in _USES_BRANCH:  # the control: mlp_layers r×r linears
            total += cfg.mlp_layers * cfg.rank * cfg.rank
        if cfg.variant in _USES_WC:
            total += width_c * cfg.rank
        return total

    def extra_repr(self) -> str:
        branch = "qnn" if hasattr(self, "qnn") else "silu_mlp" if hasattr(self, "mlp") else "none"
        return f"variant={self.variant}, branch={branch}, " + super().extra_repr()


register_adapter("qtha", QTHAConfig, QTHALayer)
