"""peft's LoRA as the oracle (SPEC §1.1): same weights ⇒ same logits and gradients;
same seed ⇒ same initialisation."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from peft_oracle import TARGETS, batch, our_adapter_params, peft_adapter_params, tiny_llama
from qtha.adapters import adapter_layers, count_trainable, expected_trainable, inject_adapters
from qtha.adapters.lora import LoRALayer
from qtha.adapters.lora import LoRAConfig

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers API


def peft_lora(rank: int, alpha: float, dtype: torch.dtype, seed: int = 1) -> nn.Module:
    model = tiny_llama(dtype)
    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0))


def ours(rank: int, alpha: float, dtype: torch.dtype, seed: int = 1) -> nn.Module:
    model = tiny_llama(dtype)
    torch.manual_seed(seed)
    inject_adapters(model, LoRAConfig(rank=rank, alpha=alpha, target_modules=TARGETS), dtype=dtype)
    return model


@torch.no_grad()
def share_random_weights(theirs: nn.Module, mine: nn.Module, dtype: torch.dtype) -> tuple[dict, dict]:
    """Give both models the same random A and B (B nonzero, else Δ = 0 and the test is trivial)."""
    p_theirs, p_mine = peft_adapter_params(theirs), our_adapter_params(mine)
    assert p_theirs.keys() == p_mine.keys()
    g = torch.Generator().manual_seed(9)
    for name in sorted(p_theirs):
        p_theirs[name].copy_(torch.randn(p_theirs[name].shape, generator=g, dtype=dtype) * 0.1)
        p_mine[name].copy_(p_theirs[name])
    return p_theirs, p_mine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("rank", "alpha"), [(1, 2.0), (4, 8.0), (4, 3.0)])
def test_logits_and_gradients_match_peft(rank: int, alpha: float, dtype: torch.dtype) -> None:
    theirs, mine = peft_lora(rank, alpha, dtype), ours(rank, alpha, dtype)
    p_theirs, p_mine = share_random_weights(theirs, mine, dtype)

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
        torch.testing.assert_close(p_mine[name].grad, p_theirs[name].grad, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("rank", [1, 4])
def test_delta_weight_matches_peft(rank: int) -> None:
    theirs, mine = peft_lora(rank, 8.0, torch.float32), ours(rank, 8.0, torch.float32)
    share_random_weights(theirs, mine, torch.float32)
    for name, layer in adapter_layers(mine):
        peft_layer = theirs.get_submodule(f"base_model.model.{name}")
        torch.testing.assert_close(layer.delta_weight(), peft_layer.get_delta_weight("default"))


def test_trainable_counts_match_peft() -> None:
    theirs, mine = peft_lora(4, 8.0, torch.float32), ours(4, 8.0, torch.float32)
    expected = expected_trainable(tiny_llama(torch.float32), LoRAConfig(rank=4, target_modules=TARGETS))
    assert count_trainable(mine) == theirs.get_nb_trainable_parameters()[0] == sum(expected.values())
    assert expected == {"q_proj": 2 * 4 * (64 + 64), "v_proj": 2 * 4 * (64 + 32)}


def test_same_seed_gives_peft_init() -> None:
    theirs, mine = peft_adapter_params(peft_lora(4, 8.0, torch.float32)), our_adapter_params(ours(4, 8.0, torch.float32))
    for name, p in mine.items():
        assert torch.equal(p, theirs[name]), name
        if "lora_B" in name:
            assert not p.any()


def test_single_layer_init_matches_peft() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(48, 80)

    torch.manual_seed(3)
    a_theirs = get_peft_model(Holder(), LoraConfig(r=4, lora_alpha=8, target_modules=["proj"])).base_model.model.proj
    torch.manual_seed(3)
    a_mine = LoRALayer(Holder().proj, LoRAConfig(rank=4))
    assert torch.equal(a_mine.lora_A.weight, a_theirs.lora_A["default"].weight)
    assert a_mine.lora_A.weight.abs().max() <= 1 / 48**0.5  # Kaiming-uniform(a=√5) bound: 1/sqrt(d_in)
    assert a_mine.scaling == a_theirs.scaling["default"] == 2.0
