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

**Δ.** Each T starts Kaiming-uniform (a = √5, fan-in = c_m c_n, as ``nn.Linear``) and a frozen
copy T0 is kept: Δ(x) = 𝒯_θ x − 𝒯_{θ0} x, zero at init while every factor is non-zero.
``scaling = alpha`` (QuanTA has no rank). Two ways to compute it, chosen per call by their
multiply-adds (:meth:`QuanTALayer.dense_pays`):

* **per token** (few tokens: generation): both chains as one einsum each, whose contraction
  path opt_einsum finds once per input shape (an LRU cache of ``contract_expression`` objects),
  run in the adapter dtype with autocast off — the difference of two nearly equal terms;
* **dense** (a training or validation batch): the weights alone are contracted into the
  (d_out, d_in) matrix 𝒯_θ − 𝒯_{θ0} once per call (:func:`dense_operator`: a few matmuls with no
  token in them; 𝒯_{θ0} is constant and cached), which is added to W0, so the tokens see one
  matmul as without an adapter: a step costs the frozen layer's plus one d_out × d_in weight
  gradient, instead of 2·C(N,2) small per-token contractions forward and more backward. Under
  autocast the weight contraction runs in the autocast dtype, as the matmul it feeds does: 𝒯_θ −
  𝒯_{θ0} is then the difference of two bf16 contractions (exact while they are within 2× of each
  other; zero at init), whose rounding, relative to s·𝒯, stays below the bf16 rounding of W0 + s·Δ
  itself while s·𝒯 is small against W0. With adapter dropout active the update is a separate
  matmul, x W0ᵀ + s·dropout(x) Δᵀ.

**Storage.** All T of a layer live in one flat parameter ``quanta_T`` (pair order; views by key
from :meth:`QuanTALayer.pair_tensors`), T0 in one flat buffer ``quanta_T0``.

**Checkpoints.** T0 is not stored when it can be regenerated: T is drawn from the global CPU
generator (the same draws as ever, so a seed gives the same run), and when that generator's
position is known — ``torch.manual_seed(seed)`` followed by ``draws`` draws, the layers of one
injection counted one after another, each position checked by regenerating T0 from it — only
``quanta_T0_stream = [seed, draws]`` travels with ``quanta_T``. Otherwise (a CUDA or non-float32
init, or other draws since the seed, e.g. a randomly initialised LM) ``quanta_T0`` itself travels.
Loading switches a layer to whichever of the two the file holds, and reads the per-pair keys
``quanta_T.m_n`` / ``quanta_T0.m_n`` of earlier checkpoints (:meth:`QuanTALayer.adapt_to_state`).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from itertools import combinations
from typing import Any, ClassVar, Mapping, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
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


def chain_macs(axes_in: Sequence[int], shapes: Sequence[PairShape]) -> int:
    """Multiply-adds per token of one chain applied in order (what the einsum path costs)."""
    current, total = list(axes_in), 0
    for s in shapes:
        others = math.prod(current) // (s.in_m * s.in_n)
        total += others * math.prod(s.matrix_shape)
        current[s.m], current[s.n] = s.out_m, s.out_n
    return total


# --------------------------------------------------------------------------- the dense operator
def _leading_group(shapes: Sequence[PairShape]) -> int:
    """How many of ``shapes`` (a chain's tail, in order) go through its first axis: T^(m,m+1) … T^(m,N−1)."""
    return sum(1 for s in shapes if s.m == shapes[0].m)


def dense_operator(tensors: Sequence[Tensor], shapes: Sequence[PairShape], rows: Optional[int] = None) -> Tensor:
    """The chain ``shapes`` (a tail of a layer's chain, from some axis m on) as a dense matrix, with no
    token in the contraction: (∏ output sizes, ∏ input sizes), row-major over the axes like ``x``.

    𝒯 = (I ⊗ B) · G with G = T^(m,N−1) ⋯ T^(m,m+1), the tensors through axis m, and B the rest of the
    chain (axes m+1… only: recursively the same). G is grown one tensor at a time, as a matrix over the
    axes it has touched (one matmul each, the first axis as the contracted index); B then multiplies
    each of G's axis-m row blocks (one batched matmul). ``rows`` keeps only the first ``rows`` values
    of axis m on the output side (a cropped output needs no more).
    """
    k = _leading_group(shapes)
    s = shapes[0]
    grown = tensors[0].view(s.out_m, s.out_n, s.in_m * s.in_n)  # (axis m, later output axes, inputs so far)
    if k == 1 and rows is not None:
        grown = grown[:rows]
    for i in range(1, k):
        s = shapes[i]
        t = tensors[i].view(s.out_m, s.out_n, s.in_m, s.in_n)
        if i == k - 1 and rows is not None:
            t = t[:rows]
        a, o, n_in = grown.shape
        step = torch.mm(t.permute(0, 1, 3, 2).reshape(-1, a), grown.reshape(a, o * n_in))
        grown = (step.view(t.shape[0], s.out_n, s.in_n, o, n_in).permute(0, 3, 1, 4, 2)
                 .reshape(t.shape[0], o * s.out_n, n_in * s.in_n))
    if k < len(shapes):
        rest = dense_operator(tensors[k:], shapes[k:])
        grown = torch.bmm(rest.expand(grown.shape[0], *rest.shape), grown)
    return grown.reshape(-1, grown.shape[-1])


def dense_macs(shapes: Sequence[PairShape], rows: Optional[int] = None) -> int:
    """Multiply-adds of :func:`dense_operator` (same recursion, sizes only)."""
    k = _leading_group(shapes)
    s = shapes[0]
    a, o, n_in = (s.out_m if k > 1 or rows is None else rows), s.out_n, s.in_m * s.in_n
    total = 0
    for i in range(1, k):
        s = shapes[i]
        r = rows if i == k - 1 and rows is not None else s.out_m
        total += r * s.out_n * s.in_n * a * o * n_in
        a, o, n_in = r, o * s.out_n, n_in * s.in_n
    if k < len(shapes):
        total += dense_macs(shapes[k:]) + a * o * o * n_in
    return total


# --------------------------------------------------------------------------- where T0 came from
_UINT64 = 2**64
# (seed, draws, generator state) after the last QuanTA layer initialised from the global generator: the
# layers of one injection draw one after another, so the next one starts exactly there.
_last_stream: Optional[tuple[int, int, Tensor]] = None


def _generator_at(seed: int, draws: int) -> torch.Generator:
    """A CPU generator ``manual_seed(seed)`` that has made ``draws`` 32-bit draws (float32 ``uniform_``
    takes one per element)."""
    g = torch.Generator().manual_seed(seed)
    chunk = 1 << 20
    while draws > 0:
        torch.empty(min(chunk, draws)).uniform_(generator=g)
        draws -= chunk
    return g


def _initial_tensors(shapes: Sequence[PairShape], generator: torch.Generator,
                     **kw: Any) -> list[Tensor]:
    """The initial T, drawn in order: Kaiming-uniform (a = √5) like ``nn.Linear``."""
    out = []
    for s in shapes:
        t = torch.empty(s.matrix_shape, **kw)
        out.append(nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator))
    return out


def _global_position() -> Optional[tuple[int, int]]:
    """(seed, draws) of the global CPU generator if it is right after ``torch.manual_seed(seed)`` or
    right after the last QuanTA layer drawn from it; ``None`` if its position is unknown."""
    seed, state = torch.initial_seed(), torch.get_rng_state()
    if _last_stream is not None and _last_stream[0] == seed and torch.equal(_last_stream[2], state):
        return seed, _last_stream[1]
    if torch.equal(torch.Generator().manual_seed(seed).get_state(), state):
        return seed, 0
    return None


class QuanTALayer(AdapterLayer):
    """Every T in one flat parameter ``quanta_T`` (pair order, each a row-major (d'_m d'_n) × (c_m c_n)
    block; :meth:`pair_tensors` gives them by key), T0 likewise in the buffer ``quanta_T0``, and
    ``quanta_T0_stream`` where T0 was drawn. One tensor per role keeps a checkpoint's header small; see the
    module docstring for which of ``quanta_T0`` and ``quanta_T0_stream`` it holds."""

    mergeable: ClassVar[bool] = True
    STREAM_KEY: ClassVar[str] = "quanta_T0_stream"
    # A chain multiply-add costs several dense ones: each of its small contractions (≤ 64 wide) moves its
    # whole operand through a permuted copy, in fp32 even under autocast. Measured on CPU under bf16
    # autocast: ~9 GMAC/s for the chain against ~90 for the dense update (SmolLM2's q/v, a 7B-shaped q).
    CHAIN_MAC_COST: ClassVar[int] = 8

    def __init__(self, base: nn.Linear, cfg: AdapterConfig, *, dtype: torch.dtype = torch.float32):
        super().__init__(base, cfg, dtype=dtype)
        self.scaling = float(cfg.alpha)
        self.axes_in, self.axes_out = resolve_axes(cfg, self.in_features, self.out_features)
        self.pairs = pair_shapes(self.axes_in, self.axes_out)
        self.equation = chain_equation(len(self.axes_in), self.pairs)
        sizes = [math.prod(p.matrix_shape) for p in self.pairs]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        kw = self.factory_kwargs()
        self.quanta_T = nn.Parameter(torch.empty(sum(sizes), **kw))
        self.register_buffer("quanta_T0", torch.empty(sum(sizes), **kw))
        self.register_buffer(self.STREAM_KEY, torch.zeros(2, dtype=torch.int64, device=kw["device"]))
        later_out = math.prod(self.axes_out[1:])
        self.dense_rows = min(self.axes_out[0], -(-self.out_features // later_out))  # of axis 0 the crop keeps
        self.token_macs = chain_macs(self.axes_in, self.pairs)
        self.weight_macs = dense_macs(self.pairs, self.dense_rows)
        self._expressions: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._frozen_dense: Optional[tuple[tuple[Any, ...], Tensor, Tensor]] = None
        self.reset_parameters()

    def pair_tensors(self, frozen: bool = False) -> dict[str, Tensor]:
        """T^(m,n) (or T0 with ``frozen``) by key ``"m_n"``, in pair order: views of the flat storage."""
        return dict(zip((p.key for p in self.pairs), self._views(self.quanta_T0 if frozen else self.quanta_T)))

    def _views(self, flat: Tensor) -> list[Tensor]:
        """``flat`` (laid out like ``quanta_T``) cut into the pair matrices."""
        return [flat.narrow(0, start, math.prod(p.matrix_shape)).view(p.matrix_shape)
                for p, start in zip(self.pairs, self._starts)]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw T from the global generator (as always: pair by pair, Kaiming-uniform a = √5) and keep T0 = T;
        record where they were drawn when that regenerates them exactly."""
        global _last_stream
        traceable = self._dtype == torch.float32 and self.base.weight.device.type == "cpu"
        position = _global_position() if traceable else None
        for t in self.pair_tensors().values():
            nn.init.kaiming_uniform_(t, a=math.sqrt(5))
        self.quanta_T0.copy_(self.quanta_T)
        if position is not None and torch.equal(self._regenerate(*position), self.quanta_T):
            _last_stream = (position[0], position[1] + self.quanta_T.numel(), torch.get_rng_state())
        else:
            position = None
        self._set_t0_format(position)

    # ------------------------------------------------------------------ T0 in checkpoints
    def _regenerate(self, seed: int, draws: int) -> Tensor:
        """Flat T0 as drawn at ``(seed, draws)``, in this layer's current dtype and device."""
        drawn = _initial_tensors(self.pairs, _generator_at(seed, draws), dtype=self._dtype)
        return torch.cat([t.flatten() for t in drawn]).to(self.quanta_T0.device, self.quanta_T0.dtype)

    def _set_t0_format(self, position: Optional[tuple[int, int]]) -> None:
        """What travels: ``[seed, draws]`` (T0 regenerated on load) or, with ``None``, T0 itself."""
        stored = position is not None
        stream = self.get_buffer(self.STREAM_KEY)
        if stored:
            seed, draws = position
            stream.copy_(torch.tensor([seed - _UINT64 if seed >= _UINT64 // 2 else seed, draws]))
        self.register_buffer(self.STREAM_KEY, stream, persistent=stored)
        self.register_buffer("quanta_T0", self.quanta_T0, persistent=not stored)

    @property
    def t0_stream(self) -> Optional[tuple[int, int]]:
        """(seed, draws) T0 is regenerated from, or ``None`` when checkpoints carry T0 itself."""
        if self.STREAM_KEY in self._non_persistent_buffers_set:
            return None
        seed, draws = self.get_buffer(self.STREAM_KEY).tolist()
        return seed % _UINT64, draws

    @torch.no_grad()
    def adapt_to_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Take the T0 format of ``state`` — ``[seed, draws]`` regenerates T0 now, a stored T0 makes it a
        checkpoint tensor again — and read the per-pair keys ``quanta_T.m_n`` / ``quanta_T0.m_n`` of the
        checkpoints written before the flat storage as the flat tensors."""
        state = dict(state)
        for role in ("quanta_T", "quanta_T0"):
            keys = [f"{role}.{p.key}" for p in self.pairs]
            if all(k in state for k in keys):
                bad = [f"{k}: {tuple(state[k].shape)} vs {p.matrix_shape}" for k, p in zip(keys, self.pairs)
                       if tuple(state[k].shape) != p.matrix_shape]
                if bad:
                    raise ValueError(f"QuanTA checkpoint shape mismatch (file vs layer): {bad[:3]}")
                state[role] = torch.cat([state.pop(k).flatten() for k in keys])
        if self.STREAM_KEY in state:
            seed, draws = (int(v) for v in state[self.STREAM_KEY].tolist())
            if draws < 0:
                raise ValueError(f"QuanTA {self.STREAM_KEY}=[{seed}, {draws}]: the draw count must be >= 0")
            position = (seed % _UINT64, draws)
            self.quanta_T0.copy_(self._regenerate(*position))
            self._set_t0_format(position)
        elif "quanta_T0" in state:
            self._set_t0_format(None)
        return state

    # ------------------------------------------------------------------ per token
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
        tensors = self.pair_tensors(frozen)
        lead = x.shape[:-1]
        width = math.prod(self.axes_in)
        if width > x.shape[-1]:  # padded layout: zero-pad the input to the equal axes
            x = nn.functional.pad(x, (0, width - x.shape[-1]))
        xs = x.reshape(-1, *self.axes_in)
        ops = [tensors[p.key].view(p.out_m, p.out_n, p.in_m, p.in_n) for p in self.pairs]
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.expression(xs.shape[0])(xs, *ops, backend="torch")
        return out.reshape(*lead, -1)[..., : self.out_features]  # padded layout: crop the output

    def delta(self, x: Tensor) -> Tensor:
        return self.apply_operator(x) - self.apply_operator(x, frozen=True)

    # ------------------------------------------------------------------ dense
    def operator_matrix(self, flat: Tensor, dtype: torch.dtype) -> Tensor:
        """The chain of the flat tensors ``flat`` (``quanta_T`` or ``quanta_T0``) as its (d_out, d_in) matrix,
        contracted in ``dtype``."""
        with torch.autocast(device_type=self.base.weight.device.type, enabled=False):
            full = dense_operator(self._views(flat.to(dtype)), self.pairs, self.dense_rows)
        if full.shape != (self.out_features, self.in_features):  # padded layout: crop
            full = full[: self.out_features, : self.in_features]
        return full

    def dense_update(self, dtype: torch.dtype) -> Tensor:
        """𝒯_θ − 𝒯_{θ0} as a (d_out, d_in) matrix in ``dtype``, unscaled; 𝒯_{θ0} is contracted once per
        dtype and kept (rebuilt if T0 changes: a load, ``.to()``, an in-place edit)."""
        frozen = self.quanta_T0
        key = (dtype, frozen._version)
        cached = self._frozen_dense
        if cached is None or cached[0] != key or cached[1] is not frozen:
            with torch.inference_mode(False), torch.no_grad():  # usable by a later training step
                matrix = self.operator_matrix(frozen, dtype).contiguous()
            cached = self._frozen_dense = (key, frozen, matrix)
        return self.operator_matrix(self.quanta_T, dtype) - cached[2]

    def delta_weight(self) -> Tensor:
        """scaling · (𝒯_θ − 𝒯_{θ0}) as a dense (d_out, d_in) matrix, in the adapter dtype."""
        return self.scaling * self.dense_update(self._compute_dtype())

    def dense_pays(self, n_tokens: int, grad: bool, dropout: bool = False) -> bool:
        """Whether ``n_tokens`` cost fewer multiply-adds through the dense update than per token.

        Dense: the weight contraction (3× with its backward) plus, per token, the weight gradient of the
        folded matmul (with ``dropout``, the separate matmul: forward, and with ``grad`` its two gradients).
        Per token: 𝒯_θ and 𝒯_{θ0} forward, and backward both input gradients and T's gradient, each
        multiply-add weighted by :attr:`CHAIN_MAC_COST`.
        """
        matrix = self.out_features * self.in_features
        per_token = (3 if grad else 1) if dropout else (1 if grad else 0)
        dense = self.weight_macs * (3 if grad else 1) + n_tokens * matrix * per_token
        chain = self.CHAIN_MAC_COST * n_tokens * self.token_macs * (5 if grad else 2)
        return dense < chain

    def _compute_dtype(self) -> torch.dtype:
        """``quanta_T``'s dtype, read directly (the base class walks the parameters; this runs every call)."""
        return self.quanta_T.dtype

    def _narrowed(self, dtype: torch.dtype, device_type: str) -> torch.dtype:
        """``dtype``, or the autocast dtype where autocast would run a float32 matmul in it."""
        if dtype == torch.float32 and torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base(x)
        dropout = self.training and isinstance(self.dropout, nn.Dropout)
        grad = torch.is_grad_enabled() and (x.requires_grad or self.quanta_T.requires_grad)
        if not self.dense_pays(x.numel() // max(x.shape[-1], 1), grad, dropout):
            return super().forward(x)
        device = x.device.type
        update = self.dense_update(self._narrowed(self._compute_dtype(), device))
        if dropout:
            y = self.base(x)
            return y + (self.scaling * F.linear(self.dropout(x).to(update.dtype), update)).to(y.dtype)
        # W0 + s·Δ in the dtype the matmul runs in (W0's autocast copy: no float32 W on the way)
        low = self._narrowed(self.base.weight.dtype, device)
        weight = torch.add(self.base.weight.to(low), update, alpha=self.scaling).to(low)
        return F.linear(x, weight, self.base.bias)

    def base_used_as_module_only(self) -> bool:
        """False: the dense route multiplies by W0 + s·(𝒯_θ − 𝒯_{θ0}), read off ``base.weight``."""
        return False

    # ------------------------------------------------------------------ config
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Shape-free checks; whether the axes fit a layer is checked on the meta model."""
        one_of("adapter.layout", cfg.layout, LAYOUTS)
        if cfg.n_axes is not None and (isinstance(cfg.n_axes, bool) or cfg.n_axes < 2):
            raise ConfigError(f"adapter.n_axes={cfg.n_axes} must be >= 2 (one pair of axes), or null for the rank")
        for key in ("axes_in", "axes_out"):
            if getattr(cfg, key) is not None and not list(getattr(cfg, key)):
                raise ConfigError(f"adapter.{key}=[] is empty; allowed: null (factored from the layer's dimension) "
                                  "or a list of at least 2 positive ints")
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
