"""The fast generation path (pre-cast frozen weights, preallocated KV cache) against plain ``generate``.

"Plain" is what evaluation ran before: ``model.generate`` under the evaluation autocast, on the model as
loaded. The fast path must give the same tokens — and the same logits, bit for bit — for every adapter, and
leave every weight as it found it.
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from conftest import randomised_tiny
from qtha.adapters import adapter_layers
from qtha.generation import autocast_weights, decoding, generate, kv_cache, left_pad, prompt_ids, to_generations

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}],
    [{"role": "user", "content": "A much longer question about apples, pears and plums, all of them?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
]
ADAPTERS = ["none", "lora", "dora", "qtha"]
PRECISIONS = ["bf16-mixed", "32-true"]
NEW_TOKENS = 12


def tiny_model(adapter: str) -> tuple[nn.Module, object]:
    """The tiny Llama with ``adapter`` injected and every adapter parameter randomised (Δ ≠ 0), in eval mode."""
    model, tok = randomised_tiny(f"adapter={adapter}")
    return model.eval(), tok


def plain_generate(model: nn.Module, tok, precision: str, **kwargs):
    """One left-padded batch of every conversation through ``model.generate`` under the evaluation autocast."""
    ids, mask = left_pad([prompt_ids(tok, c, 64) for c in CONVERSATIONS], tok.pad_token_id)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision.startswith("bf16") else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW_TOKENS,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kwargs), ids.shape[1]


def state(model: nn.Module) -> dict[str, tuple[int, torch.Tensor]]:
    return {k: (id(p), p.detach().clone()) for k, p in model.named_parameters(remove_duplicate=False)}


@pytest.mark.parametrize("precision", [p if p.startswith("bf16") else pytest.param(p, marks=pytest.mark.slow)
                                       for p in PRECISIONS])  # fp32: nothing is cast; the full suite checks it
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_fast_path_logits_are_plain_generates_bit_for_bit(adapter: str, precision: str) -> None:
    model, tok = tiny_model(adapter)
    every_step = {"min_new_tokens": NEW_TOKENS, "output_logits": True, "return_dict_in_generate": True}
    plain, width = plain_generate(model, tok, precision, **every_step)
    with decoding(model, precision) as kv_dtype:
        cache = kv_cache(model, width + NEW_TOKENS, kv_dtype)
        assert cache is not None and kv_dtype == (torch.bfloat16 if precision.startswith("bf16") else None)
        fast, _ = plain_generate(model, tok, precision, cache=cache, **every_step)
    assert torch.equal(fast.sequences, plain.sequences)
    assert all(torch.equal(a, b) for a, b in zip(fast.logits, plain.logits, strict=True))


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_generate_gives_plain_generates_tokens_and_restores_the_model(adapter: str) -> None:
    model, tok = tiny_model(adapter)
    before = state(model)
    plain, width = plain_generate(model, tok, "bf16-mixed")
    prompts = [prompt_ids(tok, c, 64) for c in CONVERSATIONS]
    gens = generate(model, tok, CONVERSATIONS, max_new_tokens=NEW_TOKENS, batch_size=len(CONVERSATIONS),
                    max_prompt_length=64, precision="bf16-mixed")
    assert gens == to_generations(plain, width, prompts, tok, NEW_TOKENS)
    after = state(model)
    assert after.keys() == before.keys()
    for k, (ident, value) in before.items():  # the very same tensors, unchanged
        assert after[k][0] == ident and torch.equal(after[k][1], value), k
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie is back


def test_only_frozen_linears_outside_adapters_and_plain_bases_are_cast() -> None:
    model, _ = tiny_model("lora")
    dora, _ = tiny_model("dora")
    with autocast_weights(model, torch.bfloat16) as n:
        assert model.lm_head.weight.dtype == torch.bfloat16 and model.model.embed_tokens.weight.dtype == torch.float32
        for _, layer in adapter_layers(model):
            assert layer.base.weight.dtype == torch.bfloat16
            assert layer.lora_A.weight.dtype == layer.lora_B.weight.dtype == torch.float32
            assert layer.lora_A.weight.requires_grad
    assert n == sum(isinstance(m, nn.Linear) and not m.weight.requires_grad for m in model.modules())
    with autocast_weights(dora, torch.bfloat16):
        assert all(layer.base.weight.dtype == torch.float32 for _, layer in adapter_layers(dora))
        assert dora.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_weights_come_back_when_generation_fails() -> None:
    model, _ = tiny_model("none")
    weight = model.model.layers[0].mlp.up_proj.weight
    with pytest.raises(RuntimeError, match="boom"), autocast_weights(model, torch.bfloat16):
        raise RuntimeError("boom")
    assert model.model.layers[0].mlp.up_proj.weight is weight


def test_preallocated_cache_refuses_to_overflow() -> None:
    model, _ = tiny_model("none")
    layer = kv_cache(model, 4, None).layers[0]
    states = torch.zeros(1, 2, 3, 8)
    keys, _ = layer.update(states, states)
    assert keys.shape == (1, 2, 3, 8) and layer.get_seq_length() == 3
    with pytest.raises(RuntimeError, match="holds 4 positions; 6 were asked for"):
        layer.update(states, states)


def test_lora_compute_dtype_follows_its_parameters() -> None:
    model, _ = tiny_model("lora")
    _, layer = adapter_layers(model)[0]
    assert layer._compute_dtype() == torch.float32
    layer.double()
    assert layer._compute_dtype() == torch.float64
