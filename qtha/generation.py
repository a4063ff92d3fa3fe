"""Batched greedy generation for evaluation (SPEC §3: greedy by default, settings recorded).

Prompts are the test rows' conversations minus the final assistant turn, rendered with the
tokenizer's chat template and left-truncated to ``max_prompt_length`` tokens (the most
recent context survives, as in training). Batches are left-padded so every prompt ends at
the same position. A generation is ``truncated`` when it used all ``max_new_tokens``
without emitting EOS: the maths metrics need that to tell a cut-off reasoning chain from
a finished one.

Speed, with the same tokens (and logits, bit for bit) as plain ``generate`` under the autocast:
a decode step reads every weight of the LM once, so what it costs is mostly memory traffic. Under a
bf16 autocast each frozen ``nn.Linear`` is handed a bf16 copy of its weight for the whole call —
the very values autocast would otherwise cast it to at every step, reading the fp32 weights and
writing bf16 ones per token (:func:`autocast_weights`). And the KV cache is allocated once per batch
in the dtype attention reads it in (:class:`PreallocatedLayer`), so a step writes one position instead
of concatenating, and autocast then re-casting, the whole cache.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qtha.adapters.base import AdapterLayer
from qtha.data.formatting import Message

try:  # transformers whose caches are made of per-layer objects (the lock has 5.24)
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
except ImportError:  # older ones: generate keeps its own cache
    DynamicLayer = None


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


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of one batch, left-padded so every prompt ends at the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def _autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """The training precision's autocast dtype (bf16 on CPUs that do it natively), else None."""
    return torch.bfloat16 if precision.startswith("bf16") else None


def _castable_linears(model: nn.Module) -> list[nn.Linear]:
    """The frozen linears whose weights only ever reach ``F.linear``: the LM's own, and an adapter's base
    when :meth:`AdapterLayer.base_used_as_module_only` says so; never a linear inside an adapter."""
    adapters = {name: m for name, m in model.named_modules() if isinstance(m, AdapterLayer)}
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module.weight.requires_grad:
            continue
        owner = next((a for prefix, a in adapters.items() if name.startswith(f"{prefix}.")), None)
        if owner is None or (module is owner.base and owner.base_used_as_module_only()):
            found.append(module)
    return found


@contextlib.contextmanager
def autocast_weights(model: nn.Module, dtype: torch.dtype) -> Iterator[int]:
    """Hand every castable frozen linear (:func:`_castable_linears`) a ``dtype`` copy of its weight and bias
    while the block runs, and its own tensors back afterwards; yields how many tensors were swapped.

    Only for a block running under a ``dtype`` autocast, which would cast exactly these tensors (floating,
    not float64) to exactly these values in every call. A tied output layer gets its own copy: the
    embedding it shares its weight with is not autocast and keeps the original. Costs the copies' memory
    (half the fp32 bytes of the frozen linears) while it lasts.
    """
    swapped: list[tuple[nn.Linear, str, nn.Parameter]] = []
    try:
        for linear in _castable_linears(model):
            for key in ("weight", "bias"):
                p = getattr(linear, key)
                if p is not None and p.is_floating_point() and p.dtype not in (dtype, torch.float64):
                    swapped.append((linear, key, p))
                    setattr(linear, key, nn.Parameter(p.detach().to(dtype), requires_grad=False))
        yield len(swapped)
    finally:
        for linear, key, p in reversed(swapped):
            setattr(linear, key, p)


if DynamicLayer is not None:
    class PreallocatedLayer(DynamicLayer):
        """A :class:`DynamicLayer` whose keys and values live in buffers of ``capacity`` positions allocated at
        the first update, in ``dtype`` (None: the states' own): an update writes the new positions in place and
        returns views of the filled part — the values and shapes the concatenating layer returns, without
        copying the whole cache every step. ``dtype`` must be what attention casts the states to anyway (the
        autocast dtype), so that storing them cast changes nothing."""

        def __init__(self, capacity: int, dtype: Optional[torch.dtype]) -> None:
            super().__init__()
            self.capacity, self.dtype = capacity, dtype

        def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self._storage = [torch.empty((*s.shape[:-2], self.capacity, s.shape[-1]), dtype=self.dtype or s.dtype,
                                         device=s.device) for s in (key_states, value_states)]

        def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, end = self.get_seq_length(), self.get_seq_length() + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"KV cache holds {self.capacity} positions; {end} were asked for")
            for buffer, states in zip(self._storage, (key_states, value_states)):
                buffer[..., start:end, :].copy_(states)
            self.keys, self.values = (buffer[..., :end, :] for buffer in self._storage)
            return self.keys, self.values


def kv_cache(model: PreTrainedModel, capacity: int, dtype: Optional[torch.dtype]) -> Optional["Cache"]:
    """A cache of :class:`PreallocatedLayer` for one batch of ``capacity`` positions (prompt width + new
    tokens), or None — generate's own cache — where the model's layers are not all plain full-attention
    ones (sliding windows, hybrids) or transformers predates layer caches."""
    if DynamicLayer is None:
        return None
    layers = DynamicCache(config=model.config).layers
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return Cache(layers=[PreallocatedLayer(capacity, dtype) for _ in layers])


def _cache_kwarg(model: PreTrainedModel) -> str:
    """The name ``forward`` takes a cache under: ``cache`` (transformers ≥ 5.x), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@contextlib.contextmanager
def decoding(model: PreTrainedModel, precision: str) -> Iterator[Optional[torch.dtype]]:
    """The evaluation precision for a block of ``generate`` calls: an autocast on the model's own device type
    (the one training ran under) with the pre-cast weights (:func:`autocast_weights`). Yields the dtype to
    keep the KV cache in (the autocast dtype; None: the states' own)."""
    dtype = _autocast_dtype(precision)
    if dtype is None:
        yield None
        return
    with torch.autocast(next(model.parameters()).device.type, dtype=dtype), autocast_weights(model, dtype):
        yield dtype


def to_generations(seqs: Tensor, width: int, prompts: Sequence[Sequence[int]], tokenizer: PreTrainedTokenizerBase,
                   max_new_tokens: int) -> list[Generation]:
    """The :class:`Generation` of each row of ``generate``'s output for a batch padded to ``width``: the text up
    to the first EOS, and whether the budget ran out first."""
    eos = tokenizer.eos_token_id
    out = []
    for p, seq in zip(prompts, seqs[:, width:].tolist()):
        ended = eos in seq
        n = seq.index(eos) if ended else len(seq)
        out.append(Generation(text=tokenizer.decode(seq[:n], skip_special_tokens=True).strip(),
                              truncated=not ended and n >= max_new_tokens, new_tokens=n, prompt_tokens=len(p)))
    return out


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Message]],
             *, max_new_tokens: int, batch_size: int, max_prompt_length: int,
             precision: str = "32-true", device: Optional[torch.device] = None) -> list[Generation]:
    """Greedy continuations of every conversation, in order, on ``device`` (default: where the model is; the
    model is moved there for the call and back afterwards — Lightning leaves a fitted model on the CPU, so a
    GPU run passes its trainer's root device, or it would decode on the CPU in float32)."""
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    was_training = model.training
    model.eval()
    if device != home:
        model.to(device)
    prompts = [prompt_ids(tokenizer, conv, max_prompt_length) for conv in conversations]
    out: list[Generation] = []
    try:
        with decoding(model, precision) as kv_dtype:
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                ids, mask = left_pad(batch, tokenizer.pad_token_id)
                cache = kv_cache(model, ids.shape[1] + max_new_tokens, kv_dtype)
                seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                      max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id,
                                      **({_cache_kwarg(model): cache} if cache is not None else {}))
                out += to_generations(seqs, ids.shape[1], batch, tokenizer, max_new_tokens)
    finally:
        if device != home:
            model.to(home)
        model.train(was_training)
    return out
