"""MPO (TT-matrix) map: factorisation, exact counts, both contraction paths, TT-SVD, init, meta."""
from __future__ import annotations

import itertools
import math
import string

import pytest
import torch

from qtha.tn import MPO, bond_dims, choose_path, contraction_costs, factorize
from qtha.tn.mpo import MEMORY_WEIGHT


# ----------------------------------------------------------------------------- references
def naive_matrix(cores: list[torch.Tensor]) -> torch.Tensor:
    """W (J, I) as ONE einsum over all cores with every bond index named — independent of to_matrix."""
    n = len(cores)
    letters = iter(string.ascii_letters)
    bonds = [next(letters) for _ in range(n + 1)]
    js = [next(letters) for _ in range(n)]
    is_ = [next(letters) for _ in range(n)]
    spec = ",".join(bonds[k] + js[k] + is_[k] + bonds[k + 1] for k in range(n))
    t = torch.einsum(f"{spec}->{''.join(js)}{''.join(is_)}", *cores)  # D_0 = D_n = 1 summed trivially
    J = math.prod(c.shape[1] for c in cores)
    return t.reshape(J, -1)


def loop_matrix(cores: list[torch.Tensor]) -> torch.Tensor:
    """W by the definition, entry by entry: product of the (D_{k-1}, D_k) slices (tiny cases only)."""
    out_modes = [c.shape[1] for c in cores]
    in_modes = [c.shape[2] for c in cores]
    W = torch.empty(math.prod(out_modes), math.prod(in_modes), dtype=cores[0].dtype)
    for row, js in enumerate(itertools.product(*map(range, out_modes))):  # row-major, j_1 slowest
        for col, is_ in enumerate(itertools.product(*map(range, in_modes))):
            prod = torch.eye(1, dtype=cores[0].dtype)
            for core, j, i in zip(cores, js, is_):
                prod = prod @ core[:, j, i, :]
            W[row, col] = prod[0, 0]
    return W


def random_mpo(in_modes, out_modes, bond, seed=0, dtype=torch.float64) -> MPO:
    torch.manual_seed(seed)
    mpo = MPO(in_modes, out_modes, bond, dtype=dtype)
    with torch.no_grad():
        for core in mpo.cores:
            core.normal_()  # O(1) entries: a stricter numerical test than the small Kaiming scale
    return mpo


# ----------------------------------------------------------------------------- factorize
@pytest.mark.parametrize("dim, expected", [
    (3584, (8, 8, 8, 7)), (18944, (37, 8, 8, 8)), (4096, (8, 8, 8, 8)), (512, (8, 4, 4, 4)), (256, (4, 4, 4, 4)),
])
def test_factorize_reproduces_authors_table(dim, expected):
    assert factorize(dim, 4) == expected


def brute_force_splits(dim: int, n: int) -> set[tuple[int, ...]]:
    """All splits of dim into n factors > 1 (as descending tuples), by plain enumeration."""
    divisors = [d for d in range(2, dim + 1) if dim % d == 0]
    return {tuple(sorted(c, reverse=True)) for c in itertools.product(divisors, repeat=n) if math.prod(c) == dim}


@pytest.mark.parametrize("dim", [576, 192, 1536, 896, 64, 32, 1024, 960, 2560, 11008])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_factorize_is_the_most_balanced_split(dim, n):
    modes = factorize(dim, n)
    assert len(modes) == n and math.prod(modes) == dim
    assert list(modes) == sorted(modes, reverse=True) and min(modes) > 1
    splits = brute_force_splits(dim, n)
    assert modes in splits

    def log_spread(split):
        return sum((math.log(f) - math.log(dim) / n) ** 2 for f in split)

    assert log_spread(modes) <= min(log_spread(s) for s in splits) + 1e-12


@pytest.mark.parametrize("dim", [576, 192, 1536, 896, 64, 32, 1024, 2048, 960, 14336, 3584, 4096])
def test_factorize_smooth_dims_have_close_factors(dim):
    modes = factorize(dim, 4)  # dims whose prime factors are all ≤ 7
    assert max(modes) / min(modes) <= 2


def test_factorize_sensible_values():
    assert factorize(576, 4) == (6, 6, 4, 4)     # SmolLM2 hidden size
    assert factorize(192, 4) == (4, 4, 4, 3)
    assert factorize(64, 4) == (4, 4, 2, 2)
    assert factorize(32, 4) == (4, 2, 2, 2)
    assert factorize(13, 1) == (13,)


@pytest.mark.parametrize("dim, n", [(7, 4), (8, 4), (1, 2), (0, 1), (-4, 2), (16, 0)])
def test_factorize_rejects_impossible_splits(dim, n):
    with pytest.raises(ValueError) as info:
        factorize(dim, n)
    message = str(info.value)
    assert "\n" not in message and str(dim) in message


def test_bond_dims():
    assert bond_dims(8, 4) == (1, 8, 8, 8, 1)
    assert bond_dims([2, 3, 5], 4) == (1, 2, 3, 5, 1)
    assert bond_dims(8, 1) == (1, 1)
    for bad in ([2, 3], 0, [2, -1, 3]):
        with pytest.raises(ValueError):
            bond_dims(bad, 4)


# ----------------------------------------------------------------------------- counts
@pytest.mark.parametrize("d_in, d_out, expected", [(3584, 256, 4576), (256, 512, 2432), (256, 3584, 4576)])
def test_num_params_spec_worked_numbers(d_in, d_out, expected):
    mpo = MPO.build(d_in, d_out, n_cores=4, bond_dim=8)
    assert MPO.num_params(mpo.in_modes, mpo.out_modes, 8) == expected
    assert sum(p.numel() for p in mpo.parameters()) == expected
    if d_in == 3584:
        assert (mpo.in_modes, mpo.out_modes) == ((8, 8, 8, 7), (4, 4, 4, 4))


def test_num_params_with_bond_list():
    mpo = MPO((3, 4, 5), (2, 2, 6), [3, 7])
    assert MPO.num_params((3, 4, 5), (2, 2, 6), [3, 7]) == sum(p.numel() for p in mpo.parameters())
    assert mpo.ranks == (1, 3, 7, 1) and [tuple(c.shape) for c in mpo.cores] == [(1, 2, 3, 3), (3, 2, 4, 7), (7, 6, 5, 1)]


def test_meta_device_build():
    mpo = MPO.build(3584, 256, device="meta")
    assert all(p.is_meta for p in mpo.parameters())
    assert sum(p.numel() for p in mpo.parameters()) == MPO.num_params(mpo.in_modes, mpo.out_modes, 8) == 4576
    x = torch.empty(2, 3, 3584, device="meta")
    assert mpo._forward_sequential(x).shape == mpo._forward_dense(x).shape == mpo(x).shape == (2, 3, 256)


def test_build_validates_explicit_modes():
    mpo = MPO.build(12, 6, n_cores=2, in_modes=(2, 6), out_modes=(3, 2))
    assert (mpo.in_modes, mpo.out_modes) == ((2, 6), (3, 2))
    with pytest.raises(ValueError, match="product"):
        MPO.build(12, 6, n_cores=2, in_modes=(2, 5))
    with pytest.raises(ValueError, match="n_cores"):
        MPO.build(12, 6, n_cores=3, in_modes=(2, 6))
    with pytest.raises(ValueError, match="cannot split dim=13"):
        MPO.build(13, 6, n_cores=2)


# ----------------------------------------------------------------------------- apply
def test_references_agree_on_a_tiny_case():
    mpo = random_mpo((2, 3), (3, 2), 2)
    cores = [c.detach() for c in mpo.cores]
    torch.testing.assert_close(naive_matrix(cores), loop_matrix(cores), rtol=0, atol=1e-12)
    torch.testing.assert_close(mpo.to_matrix().detach(), loop_matrix(cores), rtol=0, atol=1e-12)


CASES = [  # (in_modes, out_modes, bond)
    ((5,), (3,), 4),
    ((2, 3), (4, 2), 3),
    ((4, 3, 2), (2, 2, 5), [2, 5]),
    ((2, 3, 2, 3), (3, 2, 2, 2), [3, 1, 4]),
    ((2, 2, 3, 2, 2), (2, 3, 2, 2, 1), 3),
    ((8, 8, 8, 7), (4, 4, 4, 4), 8),
]


@pytest.mark.parametrize("in_modes, out_modes, bond", CASES)
@pytest.mark.parametrize("lead", [(), (7,), (2, 3)])
def test_both_paths_match_independent_reference(in_modes, out_modes, bond, lead):
    mpo = random_mpo(in_modes, out_modes, bond)
    x = torch.randn(*lead, mpo.in_features, dtype=torch.float64)
    W_ref = naive_matrix([c.detach() for c in mpo.cores])
    y_ref = x @ W_ref.T
    scale = y_ref.abs().max().clamp_min(1.0)
    torch.testing.assert_close(mpo.to_matrix().detach(), W_ref, rtol=1e-10, atol=1e-10 * scale)
    for y in (mpo._forward_sequential(x), mpo._forward_dense(x), mpo(x)):
        assert y.shape == (*lead, mpo.out_features) and y.dtype == torch.float64
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10 * scale)


def test_float32_paths_agree():
    mpo = random_mpo((4, 3, 2), (2, 3, 3), 3, dtype=torch.float32)
    x = torch.randn(5, 24)
    torch.testing.assert_close(mpo._forward_sequential(x), mpo._forward_dense(x), rtol=1e-4, atol=1e-4)
    assert mpo(x).dtype == torch.float32


def test_zero_tokens():
    mpo = random_mpo((2, 3), (3, 2), 2)
    assert mpo._forward_sequential(torch.empty(0, 6, dtype=torch.float64)).shape == (0, 6)


@pytest.mark.parametrize("in_modes, out_modes, bond", CASES[1:4])
def test_gradients_of_both_paths_agree(in_modes, out_modes, bond):
    mpo = random_mpo(in_modes, out_modes, bond)
    x = torch.randn(2, 3, mpo.in_features, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, mpo.out_features, dtype=torch.float64)
    inputs = [x, *mpo.cores]
    grads = [torch.autograd.grad((path(x) * g).sum(), inputs) for path in (mpo._forward_sequential, mpo._forward_dense)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # and the x-gradient is the reference Wᵀ g
    W_ref = naive_matrix([c.detach() for c in mpo.cores])
    torch.testing.assert_close(grads[0][0], g @ W_ref, rtol=1e-10, atol=1e-10)


def test_bad_input_width():
    with pytest.raises(ValueError, match="last dimension 6"):
        random_mpo((2, 3), (3, 2), 2)(torch.zeros(4, 5, dtype=torch.float64))


# ----------------------------------------------------------------------------- cost model
def test_cost_model_formulas_on_a_small_case():
    # modes (2,3)→(4,5), ranks (1,2,1), N=10
    costs = contraction_costs((2, 3), (4, 5), (1, 2, 1), 10)
    w = MEMORY_WEIGHT
    # arithmetic + twice the intermediates (4·3·2 after core 1, 20·1 after core 2) at the memory weight
    assert costs["sequential"] == 10 * ((1 * 2 * 4 * 6 + 2 * 1 * 20 * 3) + w * 2 * (4 * 3 * 2 + 20 * 1))
    # building W: arithmetic, and twice each build step's result (4·2·2 after core 1, 20·6·1 after core 2)
    assert costs["dense"] == (1 * 4 * 2 * 2 + 4 * 2 * 2 * 5 * 3 * 1) + w * 2 * (4 * 2 * 2 + 20 * 6 * 1) \
        + 10 * (6 * 20 + w * (6 + 20))


def test_cost_model_decisions():
    big = ((8, 8, 8, 8), (8, 8, 8, 8), bond_dims(2, 4))
    assert choose_path(*big, n_tokens=4096) == "sequential"           # large dims, small bonds, many tokens
    small_full_rank = ((4, 4), (4, 4), bond_dims(16, 2))
    assert choose_path(*small_full_rank, n_tokens=4096) == "dense"    # W (16×16) tiny next to the tokens
    qtha_a = ((8, 8, 8, 7), (4, 4, 4, 4), bond_dims(8, 4))
    assert choose_path(*qtha_a, n_tokens=2048) == "dense"              # measured 3-9x faster on CPU
    wide = ((8, 8, 8, 7), (37, 8, 8, 8), bond_dims(8, 4))               # 3584 -> 18944: W too big to build
    assert choose_path(*wide, n_tokens=2048) == "sequential"


def test_forward_follows_the_cost_model(monkeypatch):
    mpo = random_mpo((4, 4), (4, 4), 16)
    calls = []
    monkeypatch.setattr(mpo, "_forward_dense", lambda x: calls.append("dense") or x)
    monkeypatch.setattr(mpo, "_forward_sequential", lambda x: calls.append("sequential") or x)
    mpo(torch.zeros(64, 64, 16, dtype=torch.float64))
    assert calls == ["dense"]
    wide = random_mpo((8, 8, 8, 8), (8, 8, 8, 8), 2)
    monkeypatch.setattr(wide, "_forward_dense", lambda x: calls.append("dense") or x)
    monkeypatch.setattr(wide, "_forward_sequential", lambda x: calls.append("sequential") or x)
    wide(torch.zeros(4096, 4096, dtype=torch.float64))
    assert calls == ["dense", "sequential"]


# ----------------------------------------------------------------------------- TT-SVD
@pytest.mark.parametrize("max_bond", [3, 4, 50])
def test_tt_svd_recovers_a_bond_3_mpo(max_bond):
    src = random_mpo((2, 3, 4, 2), (3, 2, 2, 3), 3, seed=1)
    W = src.to_matrix().detach()
    mpo, err = MPO.from_matrix(W, src.in_modes, src.out_modes, max_bond)
    assert err < 1e-10
    assert all(r <= max_bond for r in mpo.ranks)
    torch.testing.assert_close(mpo.to_matrix().detach(), W, rtol=0, atol=1e-10 * W.abs().max())


def test_tt_svd_truncation_error_is_exact():
    src = random_mpo((2, 3, 4, 2), (3, 2, 2, 3), 3, seed=2)
    W = src.to_matrix().detach()
    mpo, err = MPO.from_matrix(W, src.in_modes, src.out_modes, 1)
    assert mpo.ranks == (1, 1, 1, 1, 1)
    recomputed = (torch.linalg.matrix_norm(W - mpo.to_matrix().detach()) / torch.linalg.matrix_norm(W)).item()
    assert err > 1e-3 and err == pytest.approx(recomputed, rel=1e-9)


def test_tt_svd_full_rank_matrix_with_enough_bond_is_exact():
    torch.manual_seed(3)
    in_modes, out_modes = (3, 2, 4), (2, 4, 2)
    W = torch.randn(16, 24, dtype=torch.float64)
    # full TT ranks of the interleaved (J_k I_k) unfoldings: min(6, 64) = 6, min(48, 8) = 8
    mpo, err = MPO.from_matrix(W, in_modes, out_modes, [6, 8])
    assert mpo.ranks == (1, 6, 8, 1) and err < 1e-12
    torch.testing.assert_close(mpo.to_matrix().detach(), W, rtol=0, atol=1e-10)
    mpo_big, _ = MPO.from_matrix(W, in_modes, out_modes, 100)
    assert mpo_big.ranks == (1, 6, 8, 1)  # capped at the unfolding sizes
    _, err_short = MPO.from_matrix(W, in_modes, out_modes, [6, 7])
    assert err_short > 1e-3


def test_tt_svd_single_core_is_the_matrix_itself():
    W = torch.randn(4, 6, dtype=torch.float64)
    mpo, err = MPO.from_matrix(W, (6,), (4,), [])
    assert err == 0.0 and mpo.ranks == (1, 1)
    torch.testing.assert_close(mpo.to_matrix().detach(), W, rtol=0, atol=0)


def test_tt_svd_rejects_mismatched_shape():
    with pytest.raises(ValueError, match="does not match"):
        MPO.from_matrix(torch.zeros(5, 6), (2, 3), (2, 2), 2)


# ----------------------------------------------------------------------------- init
def test_zeros_last_is_an_exact_zero_map_with_live_earlier_cores():
    mpo = MPO.build(256, 576, init="zeros_last", dtype=torch.float64)
    assert torch.count_nonzero(mpo.to_matrix()) == 0
    assert torch.count_nonzero(mpo(torch.randn(3, 256, dtype=torch.float64))) == 0
    assert all(torch.count_nonzero(c) > 0 for c in mpo.cores[:-1])
    assert torch.count_nonzero(mpo.cores[-1]) == 0


def test_zeros_init():
    mpo = MPO((2, 3), (3, 2), 2, init="zeros")
    assert all(torch.count_nonzero(c) == 0 for c in mpo.cores)
    with pytest.raises(ValueError, match="unknown MPO init"):
        MPO((2, 3), (3, 2), 2, init="orthogonal")


def test_kaiming_normal_matrix_variance():
    """Var(W_ji) = 2/I for 3584 → 256; averaged over a few fixed seeds (one draw wobbles ±30 %)."""
    mpo = MPO.build(3584, 256, bond_dim=8, dtype=torch.float64)
    ratios = []
    for seed in range(8):
        torch.manual_seed(seed)
        mpo.reset_parameters()
        ratios.append((mpo.to_matrix().var() * mpo.in_features / 2).item())
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, rel=0.25)


def test_inference_reuses_the_matrix_until_a_core_changes():
    """Without gradients W is built once (generation calls the layer per token) and rebuilt after an update."""
    mpo = MPO.build(24, 16, 2, 3, init="kaiming_normal")
    x = torch.randn(5, 24)
    with torch.no_grad():
        first = mpo(x)
        cached = mpo._inference_matrix()
        assert mpo._inference_matrix() is cached
        torch.testing.assert_close(first, x @ mpo.to_matrix().T)
        mpo.cores[0].mul_(2.0)                      # an optimiser step updates cores in place
        torch.testing.assert_close(mpo(x), x @ mpo.to_matrix().T)
        assert mpo._inference_matrix() is not cached
    y = mpo(x.requires_grad_(True))                 # with gradients: never the cached, detached W
    y.sum().backward()
    assert all(c.grad is not None for c in mpo.cores)
