"""QuanTA (SPEC §1.3): a product of pairwise axis tensors, minus its frozen initial copy.

**Axes.** Two layouts. ``padded`` (the default: official QuanTA, the authors' baseline) uses N
equal axes of size s = ⌈max(d_in, d_out)^(1/N)⌉ on both sides: the input is zero-padded from d_in
to s^N and the output cropped from s^N to d_out (3584 → 8·8·8·8 = 4096). ``exact`` (SPEC's
reading) factors d_in = d_1⋯d_N and d_out = d'_1⋯d'_N, automatically
(:func:`qtha.tn.mpo.factorize`: balanced, largest first) unless ``cfg.axes_in`` /
``cfg.axes_out`` give them; an explicit list fixes N (``n_axes`` is then ignored) and must multiply
to the layer's dimension. N = ``cfg.n_axes``, null meaning the rank (the authors' ``d = rank``).
Either way the reshape is row-major, ``x.reshape(..., d_1, …, d_N)`` (axis 1 varies slowest).

**Order.** One tensor T^(m,n) per pair of axes m < n (0-based in the code), applied one
after another in lexicographic order — (0,1) first, then (0,2), …, (0,N−1), (1,2), …,
(N−2,N−1) last — so 𝒯 = T^(N−2,N−1) ⋯ T^(0,2) T^(0,1) as operators.

**Shapes.** With d_in ≠ d_out an axis changes size the first time a tensor touches it and
keeps its output size after that: T^(m,n) maps (c_m, c_n) → (d'_m, d'_n) where c_k = d_k if
no earlier tensor touched axis k, else d'_k. It is stored as a (d'_m d'_n) × (c_m c_n) matrix,
like a Linear weight. In lexicographic order that gives

    T^(0,1): (d'_0 d'_1) × (d_0 d_1),   T^(0,k): (d'_0 d'_k) × (d'_0 d_k) for k ≥ 2,
    T^(m,n): (d'_m d'_n) × (d'_m d'_n)  for 1 ≤ m < n,

so num_params = Σ_{m<n} (d'_m d'_n)(c_m c_n), which is SPEC's Σ (d'_m d'_n)(d_m d_n) exactly
when d_in = d_out with equal axes (4096, (16,8,8,4) → 43,008). For d_in ≠ d_out SPEC's form
cannot hold: an axis touched by N−1 > 1 tensors in sequence cannot be at its input size
before every one of them.

**Δ.** Each T starts Kaiming-uniform (a = √5, fan-in = c_m c_n, as ``nn.Linear``); a frozen
copy T0 is a persistent buffer (it travels with adapter checkpoints), and
Δ(x) = 𝒯_θ x − 𝒯_{θ0} x, zero at init while every factor is non-zero. ``scaling = alpha``
(QuanTA has no rank). The whole chain is one einsum whose contraction path opt_einsum finds
once per input shape (an LRU cache of ``contract_expression`` objects), never per call.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from itertools import combinations
from typing import Any, ClassVar, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from qtha.adapters.base import AdapterConfig, AdapterLayer
from qtha.adapters.registry import register_adapter
from qtha.errors import ConfigError, one_of
from qtha.tn.mpo import factorize


@dataclass
class QuanTAConfig(AdapterConfig):
    """SPEC §1.3: pairwise axis tensors over ``n_axes`` axes (null: the rank, as the authors' baseline;
    the paper's "decomposition factor 5" is the ``quanta_spec`` preset).

    ``layout``: ``padded`` (equal axes, zero-padded input, cropped output: official QuanTA) or
    ``exact`` (balanced factorisations; ``axes_in`` / ``axes_out`` override them and must multiply to
    the layer's d_in / d_out). ``scaling = alpha``; the rank only sets the default ``n_axes``.
    """

    name: str = "quanta"
    layout: str = "padded"
    n_axes: Optional[int] = None
    alpha: float = 1.0
    axes_in: Optional[list[int]] = None
    axes_out: Optional[list[int]] = None


LAYOUTS = ("padded", "exact")

EXPRESSION_CACHE_SIZE = 32  # distinct token counts whose contraction path is kept


class PairShape(NamedTuple):
    """T^(m,n) maps axes (m, n) from sizes ``(in_m, in_n)`` to ``(out_m, out_n)``."""

    m: int
    n: int
    out_m: int
    out_n: int
    in_m: int
    in_n: int

    @property
    def key(self) -> str:
        return f"{self.m}_{self.n}"

    @property
    def matrix_shape(self) -> tuple[int, int]:
        return self.out_m * self.out_n, self.in_m * self.in_n


def _check_axes(axes: Sequence[int], dim: int, what: str) -> tuple[int, ...]:
    axes = tuple(axes)
    if len(axes) < 2 or any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in axes):
        raise ValueError(f"QuanTA {what}={list(axes)} must be a list of at least 2 positive integers")
    if math.prod(axes) != dim:
        raise ValueError(f"QuanTA {what}={list(axes)} multiplies to {math.prod(axes)}, but the layer's "
                         f"dimension is {dim}")
    return axes


def _auto_axes(dim: int, n: int, what: str, key: str) -> tuple[int, ...]:
    try:
        return factorize(dim, n)
    except ValueError as e:
        raise ValueError(f"QuanTA cannot factor {what}={dim} into {n} axes ({e}); "
                         f"lower adapter.n_axes or set adapter.{key}") from None


def n_axes_of(cfg: Any) -> int:
    """``cfg.n_axes``, or the rank when it is null."""
    return cfg.n_axes if cfg.n_axes is not None else cfg.rank


def padded_size(dim: int, n: int) -> int:
    """The smallest s with s**n >= dim: the edge of official QuanTA's equal axes."""
    s = max(1, math.ceil(dim ** (1 / n)) - 1)
    while s ** n < dim:
        s += 1
    return s


def resolve_axes(cfg: AdapterConfig, d_in: int, d_out: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(axes_in, axes_out) for a d_in → d_out layer (their products exceed d_in / d_out when padded)."""
    given_in, given_out = getattr(cfg, "axes_in", None), getattr(cfg, "axes_out", None)
    if cfg.layout == "padded":
        n = n_axes_of(cfg)
        _check_n(n)
        edge = (padded_size(max(d_in, d_out), n),) * n
        return edge, edge
    axes_in = _check_axes(given_in, d_in, "axes_in") if given_in else None
    axes_out = _check_axes(given_out, d_out, "axes_out") if given_out else None
    if axes_in and axes_out and len(axes_in) != len(axes_out):
        raise ValueError(f"QuanTA axes_in={list(axes_in)} and axes_out={list(axes_out)} must have the same length")
    n = len(axes_in or axes_out or ()) or n_axes_of(cfg)
    _check_n(n)
    axes_in = axes_in or _auto_axes(d_in, n, "d_in", "axes_in")
    axes_out = axes_out or _auto_axes(d_out, n, "d_out", "axes_out")
    return axes_in, axes_out


def _check_n(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"QuanTA n_axes={n!r} must be an integer >= 2 (one pair of axes at least)")


def pair_shapes(axes_in: Sequence[int], axes_out: Sequence[int]) -> list[PairShape]:
    """Every T^(m,n) in application order, with the sizes it maps (see the module docstring)."""
    current = list(axes_in)
    shapes = []
    for m, n in combinations(range(len(axes_in)), 2):
        shapes.append(PairShape(m, n, axes_out[m], axes_out[n], current[m], current[n]))
        current[m], current[n] = axes_out[m], axes_out[n]
    return shapes


def chain_equation(n_axes: int, shapes: Sequence[PairShape]) -> str:
    """Einsum of the whole chain: ``x[b, i_1…i_N]`` through every T (as 4-index tensors)."""
    from opt_einsum import get_symbol

    counter = iter(range(10**6))
    batch = get_symbol(next(counter))
    current = [get_symbol(next(counter)) for _ in range(n_axes)]
    operands = [batch + "".join(current)]
    for s in shapes:
        o_m, o_n = get_symbol(next(counter)), get_symbol(next(counter))
        operands.append(o_m + o_n + current[s.m] + current[s.n])
        current[s.m], current[s.n] = o_m, o_n
    return ",".join(operands) + "->" + batch + "".join(current)


class _FrozenTensors(nn.Module):
    """Persistent buffers by key (there is no ``BufferDict``): T0 lives in checkpoints, not in the optimiser."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        for key, t in tensors.items():
            self.register_buffer(key, t)

    def __getitem__(self, key: str) -> Tensor:
        return getattr(self, key)


class QuanTALayer(AdapterLayer):
    """``quanta_T[m_n]`` trainable, ``quanta_T0[m_n]`` their frozen initial copies."""

    mergeable: ClassVar[bool] = True

    def __init__(self, base: nn.Linear, cfg: AdapterConfig, *, dtype: torch.dtype = torch.float32):
        super().__init__(base, cfg, dtype=dtype)
        self.scaling = float(cfg.alpha)
        self.axes_in, self.axes_out = resolve_axes(cfg, self.in_features, self.out_features)
        self.pairs = pair_shapes(self.axes_in, self.axes_out)
        self.equation = chain_equation(len(self.axes_in), self.pairs)
        kw = self.factory_kwargs()
        self.quanta_T = nn.ParameterDict({p.key: nn.Parameter(torch.empty(p.matrix_shape, **kw)) for p in self.pairs})
        self.quanta_T0 = _FrozenTensors({p.key: torch.empty(p.matrix_shape, **kw) for p in self.pairs})
        self._expressions: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for p in self.pairs:
            nn.init.kaiming_uniform_(self.quanta_T[p.key], a=math.sqrt(5))
            self.quanta_T0[p.key].copy_(self.quanta_T[p.key])

    # ------------------------------------------------------------------ contraction
    def expression(self, n_tokens: int):
        """The chain's ``contract_expression`` for ``n_tokens`` inputs: path found once, then cached."""
        key = (n_tokens,)
        expr = self._expressions.get(key)
        if expr is None:
            from opt_einsum import contract_expression

            shapes = [(n_tokens, *self.axes_in)] + [(p.out_m, p.out_n, p.in_m, p.in_n) for p in self.pairs]
            expr = contract_expression(self.equation, *shapes, optimize="auto")
            self._expressions[key] = expr
            if len(self._expressions) > EXPRESSION_CACHE_SIZE:
                self._expressions.popitem(last=False)
        else:
            self._expressions.move_to_end(key)
        return expr

    def apply_operator(self, x: Tensor, frozen: bool = False) -> Tensor:
        """𝒯 x (or 𝒯_{θ0} x with ``frozen``): (..., d_in) → (..., d_out).

        Runs with autocast off, in the adapter dtype: the contraction mixes matmuls (which
        autocast would move to bf16) and tensordots (which it would not), and Δ = 𝒯_θ x − 𝒯_θ0 x
        is a difference of two nearly equal terms that bf16 would swamp.
        """
        tensors = self.quanta_T0 if frozen else self.quanta_T
        lead = x.shape[:-1]
        width = math.prod(self.axes_in)
        if width > x.shape[-1]:  # padded layout: zero-pad the input to the equal axes
            x = nn.functional.pad(x, (0, width - x.shape[-1]))
        xs = x.reshape(-1, *self.axes_in)
        ops = [tensors[p.key].view(p.out_m, p.out_n, p.in_m, p.in_n) for p in self.pairs]
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.expression(xs.shape[0])(xs, *ops, backend="torch")
        return out.reshape(*lead, -1)[..., : self.out_features]  # padded layout: crop the output

    # ------------------------------------------------------------------ contract
    def delta(self, x: Tensor) -> Tensor:
        return self.apply_operator(x) - self.apply_operator(x, frozen=True)

    def delta_weight(self) -> Tensor:
        """scaling · (𝒯_θ − 𝒯_{θ0}) as a dense (d_out, d_in) matrix (the chain applied to I)."""
        eye = torch.eye(self.in_features, device=self.base.weight.device, dtype=self._compute_dtype())
        return self.scaling * self.delta(eye).T

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Shape-free checks; whether the axes fit a layer is checked on the meta model."""
        one_of("adapter.layout", cfg.layout, LAYOUTS)
        if cfg.n_axes is not None and (isinstance(cfg.n_axes, bool) or cfg.n_axes < 2):
            raise ConfigError(f"adapter.n_axes={cfg.n_axes} must be >= 2 (one pair of axes), or null for the rank")
        if cfg.layout == "padded" and (cfg.axes_in or cfg.axes_out):
            raise ConfigError("adapter.axes_in/axes_out need adapter.layout=exact; allowed with layout=padded: "
                              "adapter.n_axes only (equal axes)")

    @classmethod
    def num_params(cls, cfg: AdapterConfig, d_in: int, d_out: int) -> int:
        axes_in, axes_out = resolve_axes(cfg, d_in, d_out)
        return sum(math.prod(p.matrix_shape) for p in pair_shapes(axes_in, axes_out))

    def extra_repr(self) -> str:
        return (f"axes_in={self.axes_in}, axes_out={self.axes_out}, pairs={len(self.pairs)}, "
                f"scaling={self.scaling:g}, merged={self.merged}")


register_adapter("quanta", QuanTAConfig, QuanTALayer)
