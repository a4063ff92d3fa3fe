"""Chat formatting and response-only labels, for single- and multi-turn conversations alike.

The conversation is rendered with the tokenizer's own chat template and cut into pieces at
every assistant turn: the text before turn i is the template's rendering of the history
with the generation prompt, turn i is what the full rendering adds after it. Each piece is
tokenised on its own and the ids concatenated, so label boundaries are exact even for BPE
vocabularies that would merge across them. Every assistant turn is a target (labels =
ids); system, user and template tokens are -100. A single-turn example is the one-turn case.

Sequences longer than ``max_length`` lose tokens from the left (the oldest turns go first). Pieces
are tokenised from the last one back, and only as much text as could still be kept: a piece that
starts further back than ``CHARS_PER_TOKEN`` characters per remaining token is tokenised from that
point on (no token spans that many characters; the few tokens at the new start, which could merge
differently, are past the cut), and earlier pieces not at all — so a 50 MB row costs what a
``max_length`` row costs. Before the template renders anything, a message longer than twice that many
characters is cut to its tail (the template would otherwise copy a 50 MB text several times over): left
truncation drops its start whatever the template does with it. (A template that rewrites an assistant turn
from a marker inside it, as DeepSeek-R1's drops everything up to ``</think>``, sees the marker only within
that tail.)
A target cut in two there becomes context (-100): the model never learns a reply from its
middle without the history that led to it. The exception is the last target, whose tail
stays labelled when nothing else is left (a single long response keeps its final answer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from qtha.data.rows import Message

IGNORE_INDEX = -100
CHARS_PER_TOKEN = 64  # characters of text tokenised per token that may still be kept
MARGIN = 16  # tokens tokenised beyond max_length: the start of a shortened piece falls in the cut part


@dataclass
class Encoded:
    """Token ids and labels; ``turns`` assistant turns in the conversation, ``targets`` still labelled;
    ``index``: the row's position in its split (validation gathers shards by it)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool
    turns: int = 1
    targets: int = 1
    index: int = 0


def render_pieces(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[tuple[str, bool]]:
    """The rendered conversation as consecutive (text, is_target) pieces; assistant turns are targets."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a training example must end with an assistant message")
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(list(messages[:i]), tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(list(messages[: i + 1]), tokenize=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError("the chat template renders a conversation's history differently inside the longer "
                             "conversation; response-only labels need a prefix-stable template")
        pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return [(text, target) for text, target in pieces if text]


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_length: int) -> Encoded:
    """Token ids + labels (loss on every assistant turn only), left-truncated to ``max_length``."""
    budget = max_length + MARGIN
    keep = 2 * CHARS_PER_TOKEN * budget
    messages = [{**m, "content": m["content"][-keep:]} if len(m["content"]) > keep else m for m in messages]
    pieces = render_pieces(tokenizer, messages)
    tokenised: list[tuple[list[int], bool]] = []  # last piece first, only what can still be kept
    for text, target in reversed(pieces):
        if budget <= 0:
            tokenised.append(([], target))  # wholly before the cut: never tokenised
            continue
        shortened = len(text) > CHARS_PER_TOKEN * budget
        piece = tokenizer(text[-CHARS_PER_TOKEN * budget:] if shortened else text, add_special_tokens=False)["input_ids"]
        tokenised.append((piece, target))
        budget = 0 if shortened else budget - len(piece)
    ids: list[int] = []
    labels: list[int] = []
    spans: list[tuple[int, int]] = []  # [start, end) of each target in ``ids``
    for piece, target in reversed(tokenised):
        if target:
            spans.append((len(ids), len(ids) + len(piece)))
        labels += piece if target else [IGNORE_INDEX] * len(piece)
        ids += piece
    cut = max(0, len(ids) - max_length)
    truncated = cut > 0 or budget <= 0
    for start, end in spans[:-1]:
        if start < cut < end:
            labels[cut:end] = [IGNORE_INDEX] * (end - cut)
    kept = sum(1 for start, end in spans if end > start and (start >= cut or ((start, end) == spans[-1] and end > cut)))
    return Encoded(ids[cut:], labels[cut:], truncated, len(spans), kept)


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and of the loss. ``index`` names the rows."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask,
            "index": torch.tensor([e.index for e in examples], dtype=torch.long)}
