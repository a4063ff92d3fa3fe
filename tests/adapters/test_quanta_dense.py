"""QuanTA's two routes to Δ (per token, and the weight-only dense update folded into W0) and its checkpoints.

Both routes are held to the index-loop reference of ``test_quanta_reference``, to each other (outputs and
gradients), and to the identity at init, in float64, float32 and under bf16 autocast. Checkpoints store
where T0 was drawn instead of T0 when that regenerates it exactly, and still load the earlier format.
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from test_quanta_reference import SHAPES, make_layer, make_padded, reference_operator

from qtha.adapters import (AdapterLayer, adapter_layers, adapter_state_dict, count_trainable, inject_adapters,
                           load_adapter_file, save_adapter_file)
from qtha.adapters.quanta import QuanTAConfig, QuanTALayer, chain_macs, dense_macs, dense_operator

LAYERS = [pytest.param(lambda a=a, b=b: make_layer(a, b), id=f"exact-{a}-{b}") for a, b in SHAPES] + [
    pytest.param(lambda d=d: make_padded(*d), id=f"padded-{d}") for d in ((12, 12, 2), (10, 3, 3), (5, 9, 2), (17, 17, 4))]


def per_token(layer: QuanTALayer, x: Tensor) -> Tensor:
    """The layer's output through the per-token chain, whatever route ``forward`` would pick."""
    return AdapterLayer.forward(layer, x)


# --------------------------------------------------------------------------- the dense operator
@pytest.mark.parametrize("build", LAYERS)
def test_dense_operator_is_the_reference_operator(build) -> None:
    layer = build()
    for frozen, flat in ((False, layer.quanta_T), (True, layer.quanta_T0)):
        dense = layer.operator_matrix(flat, torch.float64)
        torch.testing.assert_close(dense, reference_operator(layer, frozen), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("build", LAYERS)
def test_cost_model_counts_what_torch_counts(build) -> None:
    """The route choice's multiply-adds are those torch counts: ``dense_macs`` for :func:`dense_operator`;
    ``token_macs`` (the chain in order) per token bounds the einsum's (its path is that order at SmolLM2's
    shapes, below)."""
    layer = build()
    with FlopCounterMode(display=False) as counter:
        dense_operator(list(layer.pair_tensors().values()), layer.pairs, layer.dense_rows)
    assert counter.get_total_flops() == 2 * layer.weight_macs == 2 * dense_macs(layer.pairs, layer.dense_rows)
    x = torch.randn(50, layer.in_features, dtype=torch.float64)
    with FlopCounterMode(display=False) as counter:
        layer.apply_operator(x)
    assert counter.get_total_flops() <= 2 * 50 * layer.token_macs == 2 * 50 * chain_macs(layer.axes_in, layer.pairs)


@pytest.mark.parametrize("cfg", [QuanTAConfig(rank=4), QuanTAConfig(layout="exact", n_axes=5)], ids=["padded", "exact"])
def test_token_cost_is_the_einsum_path_at_smollm2_shapes(cfg) -> None:
    layer = QuanTALayer(nn.Linear(576, 576), cfg)
    with FlopCounterMode(display=False) as counter:
        layer.apply_operator(torch.randn(64, 576))
    assert counter.get_total_flops() == 2 * 64 * layer.token_macs


def test_route_choice_on_smollm2_shapes() -> None:
    """A training batch (512 tokens) takes the dense update on both presets and both SmolLM2 shapes; one
    generated token per row of a small batch stays per token."""
    for cfg in (QuanTAConfig(rank=4), QuanTAConfig(layout="exact", n_axes=5)):
        for d_out in (576, 192):
            layer = QuanTALayer(nn.Linear(576, d_out, device="meta"), cfg)
            assert layer.dense_pays(512, grad=True) and layer.dense_pays(512, grad=False)
            assert not layer.dense_pays(8, grad=False) and not layer.dense_pays(8, grad=True)


# --------------------------------------------------------------------------- the two routes agree
@pytest.mark.parametrize("build", LAYERS)
@pytest.mark.parametrize("n_tokens", [1, 64])
def test_both_routes_equal_the_reference_with_gradients(build, n_tokens) -> None:
    layer = build()
    x = torch.randn(n_tokens, layer.in_features, dtype=torch.float64, requires_grad=True)
    ref = layer.base(x) + 1.5 * x @ (reference_operator(layer, False) - reference_operator(layer, True)).T
    grads = {}
    for route, fn in (("dense", layer.forward), ("token", lambda v: per_token(layer, v))):
        if route == "dense":
            assert layer.dense_pays(n_tokens, grad=True) or n_tokens == 1
        y = fn(x)
        torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
        y.square().sum().backward()
        grads[route] = [x.grad.clone(), layer.quanta_T.grad.clone()]
        x.grad = None
        layer.zero_grad()
    for a, b in zip(grads["dense"], grads["token"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert layer.base.weight.grad is None and layer.quanta_T0.grad is None


def test_dense_route_is_taken_and_equals_per_token_in_float32() -> None:
    torch.manual_seed(0)
    layer = QuanTALayer(nn.Linear(64, 32), QuanTAConfig(rank=4))
    with torch.no_grad():
        layer.quanta_T.mul_(1.3)
    x = torch.randn(4, 16, 64)
    assert layer.dense_pays(64, grad=True)
    torch.testing.assert_close(layer(x), per_token(layer, x), rtol=1e-5, atol=1e-6)
    assert not layer.base_used_as_module_only()  # the dense route reads base.weight: generation must not swap it


def test_dropout_route_matches_per_token_with_the_same_mask() -> None:
    torch.manual_seed(0)
    layer = QuanTALayer(nn.Linear(64, 32), QuanTAConfig(layout="exact", n_axes=3, dropout=0.3, alpha=2.0)).double()
    with torch.no_grad():
        layer.quanta_T.mul_(1.3)
    layer.train()
    x = torch.randn(256, 64, dtype=torch.float64)
    assert layer.dense_pays(256, grad=True, dropout=True)
    torch.manual_seed(5)
    dense = layer(x)
    torch.manual_seed(5)
    token = per_token(layer, x)
    torch.testing.assert_close(dense, token, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(dense, layer.eval()(x))  # the mask did act


@pytest.mark.parametrize("cfg", [QuanTAConfig(rank=4), QuanTAConfig(layout="exact", n_axes=5)], ids=["padded", "exact"])
def test_bf16_autocast_identity_at_init_and_accuracy(cfg) -> None:
    """Under bf16 autocast the dense route is exactly the base at init and, once T has moved, no further from
    the float64 output than the per-token route (which adds an fp32 Δ to the bf16 base output)."""
    torch.manual_seed(0)
    base = nn.Linear(576, 192)
    torch.manual_seed(1)
    layer = QuanTALayer(base, cfg)
    x = torch.randn(512, 576)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.dense_pays(512, grad=True)
        assert torch.equal(layer(x), base(x))
    with torch.no_grad():
        layer.quanta_T.mul_(1.3)
        exact = layer.double()(x.double())
        delta = (exact - layer.base(x.double())).abs().max().item()
        layer.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            dense, token = layer(x), per_token(layer, x)
    error = {k: (v.double() - exact).abs().max().item() for k, v in (("dense", dense), ("token", token))}
    assert error["dense"] <= 1.25 * error["token"] and error["dense"] < 0.1 * delta, (error, delta)


def test_dense_cache_built_in_inference_mode_serves_training_and_follows_t0() -> None:
    torch.manual_seed(0)
    layer = QuanTALayer(nn.Linear(64, 32), QuanTAConfig(rank=4))
    x = torch.randn(128, 64)
    with torch.inference_mode():
        layer(x)
    layer(x).square().sum().backward()  # the cached 𝒯_{θ0} is an ordinary tensor
    assert layer.quanta_T.grad is not None
    with torch.no_grad():  # T0 edited in place: the cache must notice
        layer.pair_tensors(frozen=True)["0_1"].mul_(0.5)
    torch.testing.assert_close(layer(x), per_token(layer, x), rtol=1e-5, atol=1e-6)
    layer.double()
    xd = x.double()
    torch.testing.assert_close(layer(xd), per_token(layer, xd), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- checkpoints
class _Two(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.q_proj, self.v_proj = nn.Linear(d_in, d_in, bias=False), nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.q_proj(x).sum(-1, keepdim=True) + self.v_proj(x)


def _model(cfg: QuanTAConfig, seed: int, d_in: int = 64, d_out: int = 32, locate: bool = True) -> nn.Module:
    torch.manual_seed(100)
    model = _Two(d_in, d_out)
    torch.manual_seed(seed)
    if not locate:
        torch.rand(1)  # a draw between the seed and the layers: T0's draws cannot be located
    inject_adapters(model, cfg)
    return model


def _perturb(model: nn.Module, seed: int = 9) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.mul_(1 + 0.5 * torch.randn(p.shape, generator=g))


CFGS = [QuanTAConfig(rank=4), QuanTAConfig(layout="exact", n_axes=3)]


@pytest.mark.parametrize("cfg", CFGS, ids=["padded", "exact"])
def test_seeded_layers_store_where_t0_was_drawn(cfg, tmp_path) -> None:
    model = _model(cfg, seed=7)
    layers = [layer for _, layer in adapter_layers(model)]
    per_layer = [sum(math.prod(p.matrix_shape) for p in layer.pairs) for layer in layers]
    assert [layer.t0_stream for layer in layers] == [(7, 0), (7, per_layer[0])]  # one after the other
    state = adapter_state_dict(model)
    assert not any(k.endswith("quanta_T0") for k in state)
    assert {k for k in state if k.endswith("quanta_T0_stream")} == {"q_proj.quanta_T0_stream", "v_proj.quanta_T0_stream"}
    trainable = count_trainable(model)
    assert sum(t.numel() * t.element_size() for t in state.values()) == 4 * trainable + 2 * 16
    path = tmp_path / "a.safetensors"
    save_adapter_file(model, path)
    assert path.stat().st_size <= 1.1 * 4 * trainable + 1024  # tensors + the safetensors header
    assert len(state) == 4  # one tensor per role: the header stays small
    for layer in layers:  # what a load regenerates is T0 bit for bit
        t0 = layer._regenerate(*layer.t0_stream)
        assert torch.equal(t0, layer.quanta_T0) and torch.equal(t0, layer.quanta_T)


def test_same_seed_same_initial_tensors_as_ever() -> None:
    """T is still drawn from the global generator in pair order (the runs behind existing records)."""
    torch.manual_seed(11)
    layer = QuanTALayer(nn.Linear(64, 32), QuanTAConfig(rank=4))
    torch.manual_seed(11)
    nn.Linear(64, 32)
    for p, t in zip(layer.pairs, layer.pair_tensors().values()):
        expected = nn.init.kaiming_uniform_(torch.empty(p.matrix_shape), a=math.sqrt(5))
        assert torch.equal(t, expected)


def test_huge_seed_round_trips() -> None:
    torch.manual_seed(2**64 - 5)
    layer = QuanTALayer(nn.Linear(12, 12), QuanTAConfig(layout="exact", n_axes=2))
    assert layer.t0_stream is None  # nn.Linear drew after the seed
    torch.manual_seed(2**64 - 5)
    base = nn.Linear(12, 12)
    torch.manual_seed(2**64 - 5)
    layer = QuanTALayer(base, QuanTAConfig(layout="exact", n_axes=2))
    assert layer.t0_stream == (2**64 - 5, 0)
    assert int(layer.quanta_T0_stream[0]) < 0  # stored as int64


@pytest.mark.parametrize("cfg", CFGS, ids=["padded", "exact"])
@pytest.mark.parametrize(("src_locate", "dst_locate"), [(True, True), (True, False), (False, True), (False, False)])
def test_either_format_loads_into_either_layer(cfg, src_locate, dst_locate, tmp_path) -> None:
    """A file with T0 (every earlier checkpoint, or an unlocatable init) and a file with [seed, draws] both load
    into a layer of either kind, which then saves in the file's format; outputs match the saved model exactly."""
    src = _model(cfg, seed=3, locate=src_locate)
    _perturb(src)
    path = tmp_path / "a.safetensors"
    save_adapter_file(src, path)
    keys = set(load_file(path))
    assert any(k.endswith(".quanta_T0") for k in keys) != src_locate
    dst = _model(cfg, seed=4, locate=dst_locate)
    x = torch.randn(200, 64)
    before = dst(x)  # builds dst's cached 𝒯_{θ0}, which the load must replace
    assert load_adapter_file(dst, path).missing == []
    assert torch.equal(dst(x), src(x)) and not torch.equal(before, dst(x))
    assert set(adapter_state_dict(dst)) == keys
    assert [l.t0_stream for _, l in adapter_layers(dst)] == [l.t0_stream for _, l in adapter_layers(src)]


def test_torch_load_state_dict_takes_the_file_format_too() -> None:
    """Lightning resumes through ``load_state_dict(strict=False)`` on the adapter tensors."""
    src = _model(CFGS[0], seed=3, locate=False)
    _perturb(src)
    dst = _model(CFGS[0], seed=4)
    result = dst.load_state_dict(adapter_state_dict(src), strict=False)
    assert not result.unexpected_keys and all(not k.startswith(("q_proj.quanta", "v_proj.quanta"))
                                              for k in result.missing_keys)
    x = torch.randn(200, 64)
    assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize("cfg", CFGS, ids=["padded", "exact"])
def test_checkpoint_of_the_earlier_format_loads(cfg, tmp_path) -> None:
    """Files written before this format: ``quanta_T.m_n`` and ``quanta_T0.m_n`` per pair, nothing else."""
    src = _model(cfg, seed=3, locate=False)
    _perturb(src)
    old = {f"{name}.{role}.{key}": t.contiguous() for name, layer in adapter_layers(src)
           for role, frozen in (("quanta_T", False), ("quanta_T0", True))
           for key, t in layer.pair_tensors(frozen).items()}
    path = tmp_path / "old.safetensors"
    save_file(old, os.fspath(path))
    dst = _model(cfg, seed=4)
    x = torch.randn(200, 64)
    dst(x)
    assert load_adapter_file(dst, path) == ([], [])
    assert torch.equal(dst(x), src(x))
    assert all(layer.t0_stream is None for _, layer in adapter_layers(dst))  # it keeps carrying T0
    broken = dict(old)
    broken["q_proj.quanta_T.0_1"] = broken["q_proj.quanta_T.0_1"].T.contiguous()
    if broken["q_proj.quanta_T.0_1"].shape != old["q_proj.quanta_T.0_1"].shape:
        with pytest.raises(ValueError, match="QuanTA checkpoint shape mismatch"):
            load_adapter_file(dst, _save(broken, tmp_path))


def test_negative_draw_count_is_rejected(tmp_path) -> None:
    model = _model(CFGS[0], seed=3)
    state = adapter_state_dict(model)
    state["q_proj.quanta_T0_stream"] = torch.tensor([3, -1])
    with pytest.raises(ValueError, match="draw count must be >= 0"):
        load_adapter_file(_model(CFGS[0], seed=3), _save(state, tmp_path))


def _save(state: dict[str, Tensor], tmp_path) -> str:
    path = os.fspath(tmp_path / "s.safetensors")
    save_file(state, path)
    return path
