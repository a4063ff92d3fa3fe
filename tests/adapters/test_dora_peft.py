"""peft's DoRA (``LoraConfig(use_dora=True)``) as the oracle (SPEC §1.2): same weights ⇒ same
logits and gradients (detached norm included); same seed ⇒ same initialisation; same merge."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from peft_oracle import TARGETS, batch, our_adapter_params, peft_adapter_params, tiny_llama
from qtha.adapters import (
    adapter_layers,
    count_trainable,
    expected_trainable,
    inject_adapters,
    merge_adapters,
    unmerge_adapters,
)
from qtha.adapters.dora import DoRAConfig, DoRALayer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers API


def peft_dora(rank: int, alpha: float, dtype: torch.dtype, dropout: float = 0.0, seed: int = 1) -> nn.Module:
    model = tiny_llama(dtype)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=dropout, use_dora=True)
    return get_peft_model(model, cfg)


def ours(rank: int, alpha: float, dtype: torch.dtype, dropout: float = 0.0, seed: int = 1,
         adapter_dtype: torch.dtype | None = None) -> nn.Module:
    model = tiny_llama(dtype)
    torch.manual_seed(seed)
    cfg = DoRAConfig(rank=rank, alpha=alpha, dropout=dropout, target_modules=TARGETS)
    inject_adapters(model, cfg, dtype=adapter_dtype or dtype)
    return model


@torch.no_grad()
def share_random_weights(theirs: nn.Module, mine: nn.Module) -> tuple[dict, dict]:
    """Same random A and B (B ≠ 0) in both, and the magnitude perturbed away from ‖W0‖."""
    p_theirs, p_mine = peft_adapter_params(theirs), our_adapter_params(mine)
    assert p_theirs.keys() == p_mine.keys()
    assert any(k.endswith("lora_magnitude_vector.weight") for k in p_theirs)
    g = torch.Generator().manual_seed(9)
    for name in sorted(p_theirs):
        p = p_theirs[name]
        noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        if name.endswith("lora_magnitude_vector.weight"):
            p.mul_(1 + 0.2 * noise)
        else:
            p.copy_(0.1 * noise)
        p_mine[name].copy_(p)
    return p_theirs, p_mine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("rank", "alpha"), [(1, 2.0), (4, 8.0), (4, 3.0)])
def test_logits_and_gradients_match_peft(rank: int, alpha: float, dtype: torch.dtype) -> None:
    theirs, mine = peft_dora(rank, alpha, dtype), ours(rank, alpha, dtype)
    p_theirs, p_mine = share_random_weights(theirs, mine)

    ids = batch()
    out_theirs = theirs(input_ids=ids, labels=ids)
    out_mine = mine(input_ids=ids, labels=ids)
    assert out_mine.logits.dtype == dtype
    assert not torch.allclose(out_mine.logits, tiny_llama(dtype)(input_ids=ids).logits, atol=1e-3)
    torch.testing.assert_close(out_mine.logits, out_theirs.logits, rtol=0, atol=1e-6)

    out_theirs.loss.backward()
    out_mine.loss.backward()
    for name in p_theirs:
        assert p_mine[name].dtype == dtype
        assert p_mine[name].grad.abs().sum() > 0, name
        torch.testing.assert_close(p_mine[name].grad, p_theirs[name].grad, rtol=0, atol=1e-6, msg=name)


def test_dropout_in_training_matches_peft() -> None:
    """With dropout active peft recomputes W0·dropout(x) instead of reusing the base output."""
    theirs, mine = peft_dora(4, 8.0, torch.float32, dropout=0.3), ours(4, 8.0, torch.float32, dropout=0.3)
    share_random_weights(theirs, mine)
    theirs.train()
    mine.train()
    ids = batch()
    torch.manual_seed(11)
    out_theirs = theirs(input_ids=ids, labels=ids)
    torch.manual_seed(11)
    out_mine = mine(input_ids=ids, labels=ids)
    torch.manual_seed(12)
    other_mask = mine(input_ids=ids).logits
    assert not torch.allclose(other_mask, out_mine.logits, atol=1e-4)  # dropout is really on
    torch.testing.assert_close(out_mine.logits, out_theirs.logits, rtol=0, atol=1e-6)
    out_theirs.loss.backward()
    out_mine.loss.backward()
    p_theirs, p_mine = peft_adapter_params(theirs), our_adapter_params(mine)
    for name in p_theirs:
        torch.testing.assert_close(p_mine[name].grad, p_theirs[name].grad, rtol=0, atol=1e-6, msg=name)


def test_bf16_base_close_to_peft() -> None:
    """bf16 LM, float32 adapters in both (peft's autocast_adapter_dtype): same up to bf16 rounding."""
    theirs = peft_dora(4, 8.0, torch.bfloat16)
    mine = ours(4, 8.0, torch.bfloat16, adapter_dtype=torch.float32)
    p_theirs, p_mine = share_random_weights(theirs, mine)
    assert {p.dtype for p in p_theirs.values()} == {p.dtype for p in p_mine.values()} == {torch.float32}
    ids = batch()
    out_theirs, out_mine = theirs(input_ids=ids).logits, mine(input_ids=ids).logits
    assert out_mine.dtype == torch.bfloat16
    torch.testing.assert_close(out_mine.float(), out_theirs.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_merge_matches_peft_and_unmerge_restores(dtype: torch.dtype) -> None:
    theirs, mine = peft_dora(4, 8.0, dtype), ours(4, 8.0, dtype)
    share_random_weights(theirs, mine)
    w0 = {name: layer.base.weight.detach().clone() for name, layer in adapter_layers(mine)}
    ids = batch()
    before = mine(input_ids=ids).logits

    for name, layer in adapter_layers(mine):
        peft_layer = theirs.get_submodule(f"base_model.model.{name}")
        expected = peft_layer.base_layer.weight.detach().clone()
        peft_layer.merge(safe_merge=True)
        merged_theirs = peft_layer.base_layer.weight.detach()
        assert not torch.allclose(merged_theirs, expected)
        torch.testing.assert_close(layer.delta_weight() + w0[name], merged_theirs, rtol=0, atol=1e-6)

    merge_adapters(mine)
    for name, layer in adapter_layers(mine):
        merged_theirs = theirs.get_submodule(f"base_model.model.{name}").base_layer.weight
        torch.testing.assert_close(layer.base.weight, merged_theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(mine(input_ids=ids).logits, before, rtol=0, atol=1e-5)

    unmerge_adapters(mine)
    for name, layer in adapter_layers(mine):
        assert torch.equal(layer.base.weight, w0[name])  # exact: W0 is kept while merged
    assert torch.equal(mine(input_ids=ids).logits, before)


def test_trainable_counts_match_peft() -> None:
    theirs, mine = peft_dora(4, 8.0, torch.float32), ours(4, 8.0, torch.float32)
    expected = expected_trainable(tiny_llama(torch.float32), DoRAConfig(rank=4, target_modules=TARGETS))
    assert count_trainable(mine) == theirs.get_nb_trainable_parameters()[0] == sum(expected.values())
    assert expected == {"q_proj": 2 * (4 * (64 + 64) + 64), "v_proj": 2 * (4 * (64 + 32) + 32)}


def test_same_seed_gives_peft_init() -> None:
    theirs = peft_adapter_params(peft_dora(4, 8.0, torch.float32))
    model = ours(4, 8.0, torch.float32)
    mine = our_adapter_params(model)
    assert mine.keys() == theirs.keys()
    for name, p in mine.items():
        torch.testing.assert_close(p, theirs[name], rtol=0, atol=0, msg=name)
        if "lora_B" in name:
            assert not p.any()
    for name, layer in adapter_layers(model):  # m = ‖W0‖ per output row
        torch.testing.assert_close(layer.magnitude, layer.base.weight.norm(dim=1), rtol=1e-6, atol=0)


def test_delta_matches_forward() -> None:
    """``delta`` is the unscaled branch: base(x) + scaling·delta(x) is the layer output."""
    torch.manual_seed(0)
    layer = DoRALayer(nn.Linear(12, 20), DoRAConfig(rank=3, alpha=5.0)).double()
    with torch.no_grad():
        layer.lora_B.weight.normal_()
        layer.lora_magnitude_vector.weight.mul_(1.5)
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.base(x) + layer.scaling * layer.delta(x), rtol=0, atol=1e-12)
    assert DoRALayer.num_params(DoRAConfig(rank=3), 12, 20) == 3 * (12 + 20) + 20 == count_trainable(layer)
