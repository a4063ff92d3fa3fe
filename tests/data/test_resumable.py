"""The training loader's order is the seeded shuffle's, and its saved position skips exactly what was trained on."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from qtha.data.batching import LengthGroups
from qtha.data.resumable import EpochSampler, ResumableLoader, shuffled_order


def _loader(n: int = 10, seed: int = 3) -> ResumableLoader:
    return ResumableLoader(list(range(n)), batch_size=3, sampler=EpochSampler(n, seed),
                           generator=torch.Generator().manual_seed(seed))


def _epoch(loader: ResumableLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [b.tolist() for b in loader]


def test_order_matches_a_seeded_shuffling_dataloader_epoch_after_epoch():
    plain = DataLoader(list(range(10)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))
    for epoch in range(3):
        assert [i for b in plain for i in b.tolist()] == shuffled_order(10, 3, epoch)
        assert [i for b in _epoch(_loader(), epoch) for i in b] == shuffled_order(10, 3, epoch)


def test_a_restored_position_skips_the_batches_already_taken():
    full = _epoch(_loader(), 1)
    interrupted = _loader()
    interrupted.sampler.set_epoch(1)
    it = iter(interrupted)
    taken = [next(it).tolist(), next(it).tolist()]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches": 2} and taken == full[:2]

    resumed = _loader()
    resumed.load_state_dict(state)
    assert _epoch(resumed, 1) == full[2:]
    assert _epoch(resumed, 2) == _epoch(_loader(), 2)  # only the interrupted epoch is shortened


def test_a_position_from_another_epoch_is_ignored():
    resumed = _loader()
    resumed.load_state_dict({"epoch": 0, "batches": 4})  # saved at the very end of epoch 0
    assert _epoch(resumed, 1) == _epoch(_loader(), 1)


# --------------------------------------------------------------------------- data.batching=length
LENGTHS = [(7 * i) % 23 + 1 for i in range(30)]  # 30 rows of lengths 1..23


def _grouped(world: int = 1, rank: int = 0, window: int = 2, batch: int = 3) -> ResumableLoader:
    groups = LengthGroups(LENGTHS, batch, window)
    return ResumableLoader(list(range(30)), batch_size=batch, sampler=EpochSampler(30, 3, groups, world, rank),
                           generator=torch.Generator().manual_seed(3))


def _padding(batches: list[list[int]]) -> int:
    return sum(len(b) * max(LENGTHS[i] for i in b) - sum(LENGTHS[i] for i in b) for b in batches)


def test_length_grouping_keeps_the_epochs_rows_and_sorts_within_windows_of_its_shuffle():
    shuffle = shuffled_order(30, 3, 1)
    grouped = _epoch(_grouped(), 1)
    assert sorted(i for b in grouped for i in b) == list(range(30))  # the same rows, each once
    windows = [set(shuffle[s:s + 6]) for s in range(0, 30, 6)]  # 2 batches of 3 per window
    assert all(any(set(b) <= w for w in windows) for b in grouped)  # a batch never mixes windows
    assert all(sorted(LENGTHS[i] for i in b) == [LENGTHS[i] for i in b] for b in grouped)
    assert _padding(grouped) < _padding(_epoch(_loader(30), 1))
    assert _epoch(_grouped(), 1) == grouped != _epoch(_grouped(), 2)  # deterministic, reshuffled per epoch
    one = [set(b) for b in _epoch(_grouped(window=1), 1)]  # window 1: the random batches, reordered
    assert sorted(map(sorted, one)) == sorted(sorted(shuffle[s:s + 3]) for s in range(0, 30, 3))


def test_a_partial_last_batch_stays_last():
    groups = LengthGroups(LENGTHS, 4, 3)
    loader = ResumableLoader(list(range(30)), batch_size=4, sampler=EpochSampler(30, 3, groups))
    assert [len(b) for b in _epoch(loader, 0)] == [4] * 7 + [2]


def test_a_restored_position_skips_the_same_length_grouped_batches():
    full = _epoch(_grouped(), 1)
    interrupted = _grouped()
    interrupted.sampler.set_epoch(1)
    it = iter(interrupted)
    taken = [next(it).tolist() for _ in range(3)]
    resumed = _grouped()
    resumed.load_state_dict(interrupted.state_dict())
    assert taken == full[:3] and _epoch(resumed, 1) == full[3:]


def test_processes_share_each_global_length_batch():
    """Two processes: disjoint shards covering the epoch, and each process's batch j is its half of global batch j."""
    single = _epoch(_grouped(batch=6, window=2), 0)  # one process, global batches of 2 × 3 rows
    shards = [_epoch(_grouped(world=2, rank=r), 0) for r in (0, 1)]
    assert sorted(i for s in shards for b in s for i in b) == list(range(30))
    assert [sorted(a + b) for a, b in zip(*shards)] == [sorted(b) for b in single]
