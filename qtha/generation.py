"""Batched greedy generation for evaluation (SPEC §3: greedy by default, settings recorded).

Prompts are the test rows' conversations minus the final assistant turn, rendered with the
tokenizer's chat template and left-truncated to ``max_prompt_length`` tokens (the most
recent context survives, as in training). Batches are left-padded so every prompt ends at
the same position. A generation is ``truncated`` when it used all ``max_new_tokens``
without emitting EOS: the maths metrics need that to tell a cut-off reasoning chain from
a finished one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qtha.data.formatting import Message


@dataclass
class Generation:
    text: str
    truncated: bool
    new_tokens: int
    prompt_tokens: int


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_length: int) -> list[int]:
    """Token ids of the conversation up to (not including) its last assistant turn."""
    history = list(messages[:-1]) if messages and messages[-1]["role"] == "assistant" else list(messages)
    text = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[-max_length:]


def _autocast(precision: str) -> contextlib.AbstractContextManager:
    """The training precision's autocast (bf16 on CPUs that do it natively), else nothing."""
    if precision.startswith("bf16"):
        return torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Message]],
             *, max_new_tokens: int, batch_size: int, max_prompt_length: int,
             precision: str = "32-true") -> list[Generation]:
    """Greedy continuations of every conversation, in order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    prompts = [prompt_ids(tokenizer, conv, max_prompt_length) for conv in conversations]
    eos = tokenizer.eos_token_id
    out: list[Generation] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(batch):
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            with _autocast(precision):
                seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                      max_new_tokens=max_new_tokens, eos_token_id=eos,
                                      pad_token_id=tokenizer.pad_token_id)
            for p, seq in zip(batch, seqs[:, width:].tolist()):
                ended = eos in seq
                n = seq.index(eos) if ended else len(seq)
                out.append(Generation(text=tokenizer.decode(seq[:n], skip_special_tokens=True).strip(),
                                      truncated=not ended and n >= max_new_tokens, new_tokens=n,
                                      prompt_tokens=len(p)))
    finally:
        model.train(was_training)
    return out
