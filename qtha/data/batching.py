"""Length-grouped batch order (``data.batching=length``): rows of similar length share a batch, so a
right-padded batch carries little padding, while the order of the batches stays a seeded shuffle.

The epoch's seeded shuffle (the order ``data.batching=random`` trains on) is cut into windows of
``window`` batches; each window is sorted by length (ties keep the shuffled order) and cut into batches;
the full batches of the whole epoch are shuffled by a generator seeded with (seed, epoch), and the one
partial batch an epoch can have stays last, as it is in a random epoch. The order is a function of
(lengths, seed, epoch, batch size) alone, so a resumed run replays it exactly (:mod:`qtha.data.resumable`).

A batch here is a *global* batch, ``batch_size`` rows of every process: the sampler deals every
``world``-th index to a process, so a process's batch j is its share of global batch j and every
process pads to about the same width.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class LengthGroups:
    """Row lengths (tokens, by index) and how to group them: ``batch_size`` rows per process, ``window``
    batches per length-sorted window (1: each batch is the random batch, only sorted inside)."""

    lengths: Sequence[int]
    batch_size: int
    window: int


def length_grouped(order: Sequence[int], groups: LengthGroups, world: int, seed: int, epoch: int) -> list[int]:
    """``order`` (an epoch's shuffle) regrouped into length-sorted global batches of ``batch_size × world`` rows,
    the batches in a seeded random order."""
    size = groups.batch_size * world
    span = size * groups.window
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        window = sorted(order[start:start + span], key=lambda i: groups.lengths[i])
        batches += [window[i:i + size] for i in range(0, len(window), size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < size else []
    random.Random(f"length batches {seed} {epoch}").shuffle(batches)
    return [i for batch in batches + tail for i in batch]
