"""QuanTA (SPEC §1.3) against an independent dense reference.

The reference builds every pair operator as a full matrix by explicit index loops (no
einsum, no reshape tricks) and multiplies them in the documented order: lexicographic
pairs, (0,1) applied first; an axis maps in-size → out-size the first time a tensor touches
it and out → out afterwards.
"""
from __future__ import annotations

import itertools
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import opt_einsum
import pytest
import torch
from torch import Tensor, nn

from qtha.adapters import count_trainable
from qtha.adapters.quanta import QuanTAConfig, QuanTALayer, padded_size


# --------------------------------------------------------------------------- reference
def ravel(index: tuple[int, ...], shape: tuple[int, ...]) -> int:
    flat = 0
    for i, size in zip(index, shape):
        flat = flat * size + i
    return flat


def reference_steps(axes_in, axes_out) -> list[tuple[int, int, tuple[int, ...], tuple[int, ...]]]:
    """(m, n, shape before, shape after) for each pair in application order."""
    current, steps = list(axes_in), []
    for m in range(len(axes_in)):
        for n in range(m + 1, len(axes_in)):
            after = list(current)
            after[m], after[n] = axes_out[m], axes_out[n]
            steps.append((m, n, tuple(current), tuple(after)))
            current = after
    return steps


def pair_operator(t: Tensor, m: int, n: int, before: tuple[int, ...], after: tuple[int, ...]) -> Tensor:
    """Dense (∏after × ∏before) matrix of a (after_m·after_n × before_m·before_n) pair matrix
    acting on axes m, n and as the identity on every other axis."""
    dense = torch.zeros(math.prod(after), math.prod(before), dtype=t.dtype)
    for idx in itertools.product(*(range(s) for s in before)):
        col = idx[m] * before[n] + idx[n]
        for o_m in range(after[m]):
            for o_n in range(after[n]):
                out = list(idx)
                out[m], out[n] = o_m, o_n
                dense[ravel(tuple(out), after), ravel(idx, before)] += t[o_m * after[n] + o_n, col]
    return dense


def reference_operator(layer: QuanTALayer, frozen: bool) -> Tensor:
    """The (d_out × d_in) operator; with the padded layout, of the padded space restricted to the layer:
    the first d_in columns (the zero padding contributes nothing) and the first d_out rows (the crop)."""
    tensors = layer.pair_tensors(frozen)
    op = torch.eye(math.prod(layer.axes_in), dtype=torch.float64)
    for m, n, before, after in reference_steps(layer.axes_in, layer.axes_out):
        t = tensors[f"{m}_{n}"].detach()
        assert tuple(t.shape) == (after[m] * after[n], before[m] * before[n])
        op = pair_operator(t, m, n, before, after) @ op
    return op[: layer.out_features, : layer.in_features]


def make_layer(axes_in, axes_out, alpha: float = 1.5, seed: int = 0) -> QuanTALayer:
    torch.manual_seed(seed)
    base = nn.Linear(math.prod(axes_in), math.prod(axes_out))
    layer = QuanTALayer(base, QuanTAConfig(layout="exact", axes_in=list(axes_in), axes_out=list(axes_out), alpha=alpha)).double()
    with torch.no_grad():  # move θ away from θ0 so Δ ≠ 0
        layer.quanta_T.add_(0.3 * torch.randn_like(layer.quanta_T))
    return layer


SHAPES = [
    ((2, 3, 2), (2, 3, 2)),  # d_in = d_out = 12
    ((2, 3, 2), (3, 2, 4)),  # 12 -> 24: every axis changes size
    ((3, 2, 2), (2, 2, 1)),  # 12 -> 4, with a size-1 output axis
    ((2, 2, 3, 2), (3, 2, 2, 2)),  # 24 -> 24 with permuted axis sizes, 6 pairs
]


def make_padded(d_in: int, d_out: int, n_axes: int, seed: int = 0) -> QuanTALayer:
    torch.manual_seed(seed)
    layer = QuanTALayer(nn.Linear(d_in, d_out), QuanTAConfig(n_axes=n_axes, alpha=1.5)).double()
    with torch.no_grad():
        layer.quanta_T.add_(0.3 * torch.randn_like(layer.quanta_T))
    return layer


# --------------------------------------------------------------------------- Δ and merge
@pytest.mark.parametrize(("d_in", "d_out", "n_axes", "edge"), [(12, 12, 2, 4), (10, 3, 3, 3), (5, 9, 2, 3),
                                                               (17, 17, 4, 3)])
def test_padded_layout_is_the_cropped_dense_operator(d_in, d_out, n_axes, edge) -> None:
    """The authors' (official) QuanTA: equal axes of ⌈max(d_in, d_out)^(1/N)⌉, zero-padded input, cropped output."""
    layer = make_padded(d_in, d_out, n_axes)
    assert layer.axes_in == layer.axes_out == (edge,) * n_axes == (padded_size(max(d_in, d_out), n_axes),) * n_axes
    ref = reference_operator(layer, frozen=False) - reference_operator(layer, frozen=True)
    x = torch.randn(4, d_in, dtype=torch.float64)
    torch.testing.assert_close(layer.delta(x), x @ ref.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.delta_weight(), 1.5 * ref, rtol=1e-10, atol=1e-12)
    assert QuanTALayer.num_params(layer_cfg := QuanTAConfig(n_axes=n_axes), d_in, d_out) == count_trainable(layer)
    assert layer_cfg.layout == "padded"


def test_padded_layout_counts_the_authors_baseline_at_7b() -> None:
    """SPEC §1.3: d = rank = 4 axes, 3584 → 8·8·8·8 = 4096: 24,576 per module, q_proj and v_proj alike."""
    cfg = QuanTAConfig(rank=4)
    assert padded_size(3584, 4) == 8 and padded_size(576, 4) == 5 and padded_size(4096, 4) == 8
    assert QuanTALayer.num_params(cfg, 3584, 3584) == QuanTALayer.num_params(cfg, 3584, 512) == 6 * 64 * 64 == 24_576



@pytest.mark.parametrize(("axes_in", "axes_out"), SHAPES, ids=str)
def test_delta_equals_dense_reference(axes_in, axes_out) -> None:
    layer = make_layer(axes_in, axes_out)
    ref = reference_operator(layer, frozen=False) - reference_operator(layer, frozen=True)
    x = torch.randn(2, 5, layer.in_features, dtype=torch.float64)
    delta = layer.delta(x)
    assert delta.shape == (2, 5, layer.out_features)
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(delta, x @ ref.T, rtol=1e-10, atol=1e-12)
    # forward = base + alpha·Δ, and the merge matrix is the same dense operator
    torch.testing.assert_close(layer(x), layer.base(x) + 1.5 * x @ ref.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.delta_weight(), 1.5 * ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("axes_in", "axes_out"), SHAPES, ids=str)
def test_operator_alone_equals_reference(axes_in, axes_out) -> None:
    """𝒯_θ by itself (not only the difference) is the ordered product of pair operators."""
    layer = make_layer(axes_in, axes_out)
    x = torch.randn(7, layer.in_features, dtype=torch.float64)
    torch.testing.assert_close(layer.apply_operator(x), x @ reference_operator(layer, False).T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.apply_operator(x, frozen=True), x @ reference_operator(layer, True).T,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("axes_in", "axes_out"), SHAPES, ids=str)
def test_zero_at_init_with_nonzero_factors(axes_in, axes_out) -> None:
    torch.manual_seed(0)
    layer = QuanTALayer(nn.Linear(math.prod(axes_in), math.prod(axes_out)),
                        QuanTAConfig(layout="exact", axes_in=list(axes_in), axes_out=list(axes_out)))
    x = torch.randn(3, layer.in_features)
    assert layer.quanta_T.abs().min() > 0
    assert layer.apply_operator(x).abs().max() > 0
    assert torch.equal(layer.delta(x), torch.zeros(3, layer.out_features))
    assert torch.equal(layer.quanta_T, layer.quanta_T0)
    for t in layer.pair_tensors().values():  # Kaiming-uniform like nn.Linear: bound 1/sqrt(fan_in)
        assert t.abs().max() <= 1 / math.sqrt(t.shape[1])


def test_t0_is_frozen_buffer_in_either_checkpoint_format() -> None:
    """T0 is a buffer (never trained); a checkpoint holds it (``make_layer`` draws the base Linear after the
    seed, so T0's draws cannot be located) or, right after a seed, only where it was drawn."""
    layer = make_layer((2, 3, 2), (3, 2, 4))
    pairs = [f"{m}_{n}" for m, n in itertools.combinations(range(3), 2)]
    assert layer.t0_stream is None and list(layer.pair_tensors()) == pairs
    assert set(layer.state_dict()) == {"quanta_T", "quanta_T0", "base.weight", "base.bias"}
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"quanta_T"}
    layer(torch.randn(4, 12, dtype=torch.float64)).square().sum().backward()
    assert all(g.abs().sum() > 0 for g in layer._views(layer.quanta_T.grad))  # every pair is on the gradient path
    assert not layer.quanta_T0.requires_grad

    base = nn.Linear(12, 24)
    torch.manual_seed(3)
    seeded = QuanTALayer(base, QuanTAConfig(layout="exact", axes_in=[2, 3, 2], axes_out=[3, 2, 4]))
    assert seeded.t0_stream == (3, 0)
    assert set(seeded.state_dict()) == {"quanta_T", "quanta_T0_stream", "base.weight", "base.bias"}


def test_scaling_is_alpha_not_alpha_over_rank() -> None:
    layer = QuanTALayer(nn.Linear(12, 12), QuanTAConfig(layout="exact", n_axes=2, alpha=3.0, rank=4))
    assert layer.scaling == 3.0


# --------------------------------------------------------------------------- counts
def test_reference_count_4096() -> None:
    cfg = QuanTAConfig(layout="exact", axes_in=[16, 8, 8, 4], axes_out=[16, 8, 8, 4])
    assert QuanTALayer.num_params(cfg, 4096, 4096) == 43_008
    layer = QuanTALayer(nn.Linear(4096, 4096, device="meta"), cfg)
    assert count_trainable(layer) == 43_008


@pytest.mark.parametrize(("axes_in", "axes_out"), SHAPES, ids=str)
def test_count_follows_shape_convention(axes_in, axes_out) -> None:
    """Σ_{m<n} (d'_m d'_n)(c_m c_n), c = in-size at an axis' first touch, out-size after."""
    expected = sum(after[m] * after[n] * before[m] * before[n]
                   for m, n, before, after in reference_steps(axes_in, axes_out))
    cfg = QuanTAConfig(layout="exact", axes_in=list(axes_in), axes_out=list(axes_out))
    d_in, d_out = math.prod(axes_in), math.prod(axes_out)
    assert QuanTALayer.num_params(cfg, d_in, d_out) == expected == count_trainable(QuanTALayer(nn.Linear(d_in, d_out), cfg))
    if axes_in == axes_out:  # SPEC's Σ (d'_m d'_n)(d_m d_n)
        assert expected == sum(axes_out[m] * axes_out[n] * axes_in[m] * axes_in[n]
                               for m, n in itertools.combinations(range(len(axes_in)), 2))


# --------------------------------------------------------------------------- factorisation
@pytest.mark.parametrize(("d_in", "d_out"), [(3584, 512), (512, 3584), (3584, 3584), (4096, 512)])
def test_automatic_five_axes(d_in: int, d_out: int) -> None:
    cfg = QuanTAConfig(layout="exact", n_axes=5)
    layer = QuanTALayer(nn.Linear(d_in, d_out, device="meta"), cfg)
    for axes, dim in ((layer.axes_in, d_in), (layer.axes_out, d_out)):
        assert len(axes) == 5 and math.prod(axes) == dim
        assert all(a > 1 for a in axes) and list(axes) == sorted(axes, reverse=True)
        assert max(axes) <= 8  # balanced: 3584 = 2^9·7 and 512 = 2^9 need no factor above 8
    assert count_trainable(layer) == QuanTALayer.num_params(cfg, d_in, d_out) > 0


def test_automatic_axes_run_on_real_shape() -> None:
    torch.manual_seed(0)
    layer = QuanTALayer(nn.Linear(3584, 512), QuanTAConfig(layout="exact", n_axes=5))
    with torch.no_grad():
        layer.quanta_T.mul_(1.5)
    x = torch.randn(3, 3584)
    assert layer(x).shape == (3, 512)
    assert layer.delta(x).abs().max() > 0


def test_one_explicit_side_fixes_the_axis_count() -> None:
    layer = QuanTALayer(nn.Linear(64, 32, device="meta"), QuanTAConfig(layout="exact", axes_in=[4, 4, 4]))  # n_axes=5 ignored
    assert layer.axes_in == (4, 4, 4) and len(layer.axes_out) == 3 and math.prod(layer.axes_out) == 32


@pytest.mark.parametrize(("d_in", "d_out", "cfg", "match"), [
    (7, 8, QuanTAConfig(layout="exact", n_axes=2), "d_in=7 into 2 axes"),
    (64, 6, QuanTAConfig(layout="exact", n_axes=3), "d_out=6 into 3 axes"),
    (48, 48, QuanTAConfig(layout="exact", n_axes=6), "d_in=48 into 6 axes"),
    (12, 12, QuanTAConfig(layout="exact", n_axes=1), "n_axes=1"),
    (12, 12, QuanTAConfig(layout="exact", axes_in=[2, 3, 3]), r"axes_in=\[2, 3, 3\] multiplies to 18.*12"),
    (12, 12, QuanTAConfig(layout="exact", axes_in=[12]), "at least 2"),
    (12, 12, QuanTAConfig(layout="exact", axes_in=[0, 12]), "positive"),
    (12, 12, QuanTAConfig(layout="exact", axes_in=[2, 6], axes_out=[2, 3, 2]), "same length"),
])
def test_impossible_factorisations_raise_one_line(d_in, d_out, cfg, match) -> None:
    with pytest.raises(ValueError, match=match) as err:
        QuanTALayer.num_params(cfg, d_in, d_out)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        QuanTALayer(nn.Linear(d_in, d_out, device="meta"), cfg)


# --------------------------------------------------------------------------- einsum path
def test_einsum_path_computed_once_per_shape(monkeypatch) -> None:
    calls = []
    real = opt_einsum.contract_expression

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(opt_einsum, "contract_expression", counting)
    torch.manual_seed(0)
    layer = QuanTALayer(nn.Linear(64, 32), QuanTAConfig(layout="exact", n_axes=3))
    x = torch.randn(2, 5, 64)
    for _ in range(4):  # each call applies 𝒯_θ and 𝒯_{θ0}: one path serves both
        layer.delta(x).sum().backward()
    assert len(layer._expressions) == 1 and len(calls) == 1
    layer.delta(torch.randn(10, 64))  # same token count (10) under another leading shape: no new path
    assert len(calls) == 1
    layer.delta(torch.randn(3, 64))
    assert len(layer._expressions) == 2 and len(calls) == 2
    layer.delta_weight()  # the dense update contracts the weights alone: no per-token path
    assert len(calls) == 2
