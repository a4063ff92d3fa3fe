"""QTHA specifics beyond the generic contract: SPEC §1.6 counts, ablation structure, quantum backends."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qtha.adapters import AdapterMergeError
from qtha.adapters.qtha import QTHALayer
from qtha.adapters.qtha import QTHA_VARIANTS, QTHAConfig
from qtha.config import QuantumConfig


def test_spec_worked_count_for_qwen2_7b_shapes():
    """SPEC §1.6: 569,856 with L = 1 (spec_v1), 572,544 with the authors' L = r = 4 (4·4·3 more angles a module)."""
    v1 = QTHAConfig(qnn_layers=1, init="spec_v1")
    assert QTHALayer.num_params(v1, 3584, 3584) == 11_248   # q_proj
    assert QTHALayer.num_params(v1, 3584, 512) == 9_104     # v_proj
    assert 28 * (11_248 + 9_104) == 569_856
    authors = QTHAConfig()
    assert QTHALayer.num_params(authors, 3584, 3584) == 11_248 + 48 and QTHALayer.num_params(authors, 3584, 512) == 9_152
    assert 28 * (11_296 + 9_152) == 572_544


def test_the_authors_defaults():
    """L = n_q = r, small linears Kaiming-uniform a = 0 (bound √(6/fan_in)), angles in [−π, π), scaling 2."""
    torch.manual_seed(0)
    layer = QTHALayer(nn.Linear(64, 32), QTHAConfig(rank=3, bottleneck=16, n_cores=2, bond_dim=4))
    assert layer.qnn.weights.shape == (3, 4, 3) and layer.scaling == 2.0
    assert layer.qnn.weights.min() >= -torch.pi and layer.qnn.weights.max() < torch.pi
    assert layer.qnn.weights.min() < 0
    for lin in (layer.A_lin, layer.W_q, layer.W_c, layer.B_lin):
        bound = (6 / lin.in_features) ** 0.5
        assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > (1 / lin.in_features) ** 0.5 * 1.2
    old = QTHALayer(nn.Linear(64, 32), QTHAConfig(rank=3, qnn_layers=1, init="spec_v1", bottleneck=16, n_cores=2,
                                                   bond_dim=4))
    assert old.qnn.weights.shape == (1, 4, 3) and old.qnn.weights.min() >= 0
    assert old.A_lin.weight.abs().max() <= (1 / 16) ** 0.5  # nn.Linear's a = √5: bound 1/√fan_in


def test_the_classical_control_replaces_the_qnn_by_a_silu_mlp():
    """branch=silu_mlp: NW_k(SiLU(⋯NW_1 c)) + W_c c, the last NW zero (the authors' BD/BE/BF at k = 2/3/4)."""
    torch.manual_seed(0)
    cfg = QTHAConfig(variant="mlp_qnn", branch="silu_mlp", mlp_layers=3, rank=4)
    layer = QTHALayer(nn.Linear(64, 32), cfg)
    assert not hasattr(layer, "qnn") and not hasattr(layer, "W_q")
    linears = [m for m in layer.mlp if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(4, 4)] * 3 and torch.equal(linears[-1].weight, torch.zeros(4, 4))
    assert sum(isinstance(m, nn.SiLU) for m in layer.mlp) == 2
    assert QTHALayer.num_params(cfg, 64, 32) == 64 * 4 + 3 * 16 + 16 + 4 * 32
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3) if p.requires_grad else None
    x = torch.randn(5, 64)
    c = layer.A_lin(x)
    expected = layer.B_lin(layer.mlp(c) + layer.W_c(c))
    torch.testing.assert_close(layer.delta(x), expected)


@pytest.mark.parametrize("variant", QTHA_VARIANTS)
def test_every_variant_counts_exactly_on_the_meta_device(variant):
    cfg = QTHAConfig(variant=variant)
    layer = QTHALayer(nn.Linear(3584, 512, bias=False, device="meta"), cfg)
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert trainable == QTHALayer.num_params(cfg, 3584, 512)


def test_variants_have_the_documented_parts():
    parts = {v: {n.split(".")[0] for n, _ in QTHALayer(nn.Linear(64, 32), QTHAConfig(
        variant=v, bottleneck=16, n_cores=2, bond_dim=4)).named_parameters() if not n.startswith("base")}
        for v in QTHA_VARIANTS}
    assert parts["full"] == {"mpo_A", "mpo_B", "A_lin", "qnn", "W_q", "W_c", "B_lin"}
    assert parts["mpo"] == {"mpo_A", "mpo_B"}
    assert parts["mpo_mlp"] == {"mpo_A", "mpo_B", "A_lin", "W_c", "B_lin"}
    assert parts["mlp_qnn"] == {"A_lin", "qnn", "W_q", "W_c", "B_lin"}
    assert parts["qnn"] == {"A_lin", "qnn", "W_q", "B_lin"}


def test_merge_raises_a_clear_error():
    layer = QTHALayer(nn.Linear(64, 32), QTHAConfig(bottleneck=16, n_cores=2))
    with pytest.raises(AdapterMergeError, match="QTHALayer cannot be merged: .*not linear"):
        layer.merge()


def _perturbed(layer: QTHALayer) -> QTHALayer:
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not name.startswith("base"):
                p.normal_(0, 0.3)
    return layer


def test_quantum_branch_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    layer = _perturbed(QTHALayer(nn.Linear(64, 32), QTHAConfig(bottleneck=16, n_cores=2, bond_dim=4)))
    seen = []
    layer.qnn.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.randn(3, 5, 64)
    plain = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert seen == [torch.float32, torch.float32]
    assert plain.abs().sum() > 0  # the branch is live once the zero core moves


def test_pennylane_backend_gives_the_same_layer_output_as_the_torch_kernel():
    torch.manual_seed(1)
    cfg = QTHAConfig(rank=3, bottleneck=16, n_cores=2, bond_dim=4)
    base = nn.Linear(16, 8)
    fast = _perturbed(QTHALayer(base, cfg, quantum=QuantumConfig(backend="torch", dtype="float64")))
    ref = QTHALayer(base, cfg, quantum=QuantumConfig(backend="pennylane", device="default.qubit",
                                                      diff_method="backprop", dtype="float64"))
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(4, 16)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-6, atol=1e-7)
