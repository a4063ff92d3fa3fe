"""Shared set-up for the tests that use peft as the oracle (LoRA, DoRA): one tiny Llama, and
peft's trainable parameters renamed to ours so the two can be compared name by name."""
from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

TINY = LlamaConfig(
    vocab_size=300, hidden_size=64, intermediate_size=128,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
)
TARGETS = ["q_proj", "v_proj"]  # v_proj: 64 -> 32


def tiny_llama(dtype: torch.dtype) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(TINY).to(dtype)


def peft_adapter_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """peft's trainable parameters under our names (drop the wrapper prefix and adapter name)."""
    return {
        n.removeprefix("base_model.model.").replace(".default.", "."): p
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def our_adapter_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def batch() -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (2, 9), generator=torch.Generator().manual_seed(5))
