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
    cfg = QTHAConfig()
    assert QTHALayer.num_params(cfg, 3584, 3584) == 11_248   # q_proj
    assert QTHALayer.num_params(cfg, 3584, 512) == 9_104     # v_proj
    assert 28 * (11_248 + 9_104) == 569_856


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
