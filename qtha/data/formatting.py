"""Chat formatting and response-only labels.

The prompt is rendered with the tokenizer's own chat template (with the generation
prompt), the response is the rest of the fully rendered conversation; the two are
tokenised separately and concatenated so the label boundary is exact even for BPE
vocabularies that would merge across it. Prompt and padding labels are -100.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
Message = dict[str, str]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def split_prompt_response(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> tuple[str, str]:
    """Render ``messages`` (last one = the assistant target) as (prompt text, response text)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a training example must end with an assistant message")
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently inside the full conversation; "
                         "response-only labels need a prefix-stable template")
    return prompt, full[len(prompt):]


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_length: int) -> Encoded:
    """Token ids + labels (loss on response tokens only), left-truncated to ``max_length``."""
    prompt, response = split_prompt_response(tokenizer, messages)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = p_ids + r_ids
    labels = [IGNORE_INDEX] * len(p_ids) + r_ids
    truncated = len(ids) > max_length
    if truncated:
        ids, labels = ids[-max_length:], labels[-max_length:]
    return Encoded(ids, labels, truncated)


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and of the loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
