"""QTHA's folded maps (MPO_A then A_lin, B_lin then MPO_B as one product matrix when cheaper): the same Δ
and the same gradients as applying the maps one after the other."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import qtha.adapters.qtha as qtha_module
from qtha.adapters.qtha import QTHALayer
from qtha.adapters.qtha import QTHAConfig
from qtha.config import QuantumConfig

F64 = torch.float64


def _value_and_grads(layer: QTHALayer, x: torch.Tensor, ct: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    params = [p for p in layer.parameters() if p.requires_grad]
    out = layer.delta(x)
    return [out.detach(), *torch.autograd.grad(out, [x, *params], ct)]


@pytest.mark.parametrize("variant", ["full", "mpo", "mpo_mlp", "mlp_qnn", "qnn"])
def test_folded_maps_give_the_same_delta_and_gradients(variant, monkeypatch):
    torch.manual_seed(0)
    cfg = QTHAConfig(variant=variant, bottleneck=16, n_cores=2, bond_dim=3, rank=3)
    layer = QTHALayer(nn.Linear(48, 8), cfg, dtype=F64, quantum=QuantumConfig(dtype="float64"))
    with torch.no_grad():
        for p in layer.parameters():  # every factor non-zero (MPO_B's last core starts at zero)
            if p.requires_grad:
                p.normal_(0.0, 0.3)
    x, ct = torch.randn(2, 30, 48, dtype=F64), torch.randn(2, 30, 8, dtype=F64)
    assert qtha_module._fold(60, 3, 16, 48) and qtha_module._fold(60, 8, 16, 3)
    folded = _value_and_grads(layer, x, ct)
    with torch.no_grad():  # no gradients: never folded (the MPOs serve their cached matrices)
        torch.testing.assert_close(layer.delta(x), folded[0], rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(qtha_module, "_fold", lambda *dims: False)
    in_turn = _value_and_grads(layer, x, ct)
    for a, b in zip(folded, in_turn):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fold_only_from_a_few_tokens_on():
    """SmolLM2 q_proj, rank 4, bottleneck 256: a training batch folds; one generated token does not."""
    assert qtha_module._fold(512, 4, 256, 576) and qtha_module._fold(512, 576, 256, 4)
    assert not qtha_module._fold(1, 4, 256, 576) and not qtha_module._fold(1, 576, 256, 4)
