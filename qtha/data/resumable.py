"""A shuffled training loader whose position survives a crash, so a resumed run sees the same batches.

Lightning saves the ``state_dict()`` of a training loader that has one with the loops in every
checkpoint and hands it back through ``load_state_dict`` on resume, before the first batch is
drawn; it calls ``sampler.set_epoch`` at each epoch start. A plain shuffled ``DataLoader`` would
restart the interrupted epoch from its first batch, in the order of a fresh generator. Under a
multi-process strategy the sampler shards the epoch itself (it *is* a ``DistributedSampler``, so
Lightning does not wrap it in one that would shuffle again), and every process resumes its shard.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from qtha.data.batching import LengthGroups, length_grouped


def shuffled_order(n: int, seed: int, epoch: int) -> list[int]:
    """Epoch ``epoch``'s order of ``DataLoader(shuffle=True, generator=manual_seed(seed))``, replayed.

    Replaying the reference loader (over indices only: cheap) keeps the data order of runs
    recorded before resuming existed, whatever torch draws from the generator per epoch.
    """
    reference = DataLoader(range(n), batch_size=n, shuffle=True, generator=torch.Generator().manual_seed(seed))
    for _ in range(epoch + 1):
        (order,) = list(reference)  # one batch: the whole permutation
    return order.tolist()


class EpochSampler(DistributedSampler):
    """The seeded shuffle of epoch ``set_epoch(e)``, computed from (seed, e) alone, and this process's
    shard of it (every ``world``-th index from ``rank``, the epoch padded by wrapping around as
    ``DistributedSampler`` pads; one process: the whole order). ``groups``: the shuffle regrouped into
    length-sorted batches first (:mod:`qtha.data.batching`), still a function of (seed, e). ``skip`` drops
    the first indices of the next epoch iterated (the batches trained on before a crash). ``world`` /
    ``rank`` default to the process group's."""

    def __init__(self, n: int, seed: int, groups: Optional[LengthGroups] = None,
                 world: Optional[int] = None, rank: Optional[int] = None) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if world is None:
            world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        super().__init__(range(n), num_replicas=world, rank=rank or 0, shuffle=False, seed=seed)
        self.n, self.groups, self.skip = n, groups, 0

    def __iter__(self) -> Iterator[int]:
        order = shuffled_order(self.n, self.seed, self.epoch)
        if self.groups is not None:
            order = length_grouped(order, self.groups, self.num_replicas, self.seed, self.epoch)
        order += order[: self.total_size - len(order)]
        skip, self.skip = self.skip, 0
        return iter(order[self.rank:self.total_size:self.num_replicas][skip:])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` that counts the batches it has handed out.

    Its state is (epoch, batches taken); loading it makes the next iteration of that same epoch
    skip those batches (each process's shard the same number). Any other sampler restarts the
    epoch, as a plain loader would.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position = (0, 0)
        self._pending: dict[str, int] = {}

    def __iter__(self) -> Iterator[Any]:  # a generator: runs at the first batch, after set_epoch
        sampler = self.sampler
        epoch = getattr(sampler, "epoch", 0)
        start = self._pending.get("batches", 0) if self._pending.get("epoch") == epoch else 0
        self._pending = {}
        if isinstance(sampler, EpochSampler):
            sampler.skip = start * (self.batch_size or 1)
        else:
            start = 0
        self._position = (epoch, start)
        for batch in super().__iter__():
            self._position = (epoch, self._position[1] + 1)
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._position[0], "batches": self._position[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._pending = dict(state)
