"""The training loader's order is the seeded shuffle's, and its saved position skips exactly what was trained on."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

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
