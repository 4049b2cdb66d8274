"""EpochSampler: the order is a function of (seed, epoch), shards cover the data, set_start skips."""

from __future__ import annotations

import pytest

from sj_bwsnn.data.sampler import EpochSampler


def order(n, seed, epoch, rank=0, world=1, start=0):
    s = EpochSampler(n, seed, rank, world)
    s.set_epoch(epoch)
    s.set_start(start)
    return list(s), len(s)


def test_order_is_fixed_by_seed_and_epoch():
    assert order(50, 3, 1) == order(50, 3, 1)
    assert order(50, 3, 1)[0] != order(50, 3, 2)[0] and order(50, 3, 1)[0] != order(50, 4, 1)[0]
    assert sorted(order(50, 3, 1)[0]) == list(range(50))


@pytest.mark.parametrize("n,world", [(10, 3), (17, 4), (1, 3), (2, 5)])
def test_ranks_cover_every_sample_with_equal_shares(n, world):
    shares = [order(n, 0, 2, r, world) for r in range(world)]
    assert all(len(idx) == length == shares[0][1] for idx, length in shares)  # what len() promises
    assert set().union(*(idx for idx, _ in shares)) == set(range(n))


def test_set_start_skips_exactly_the_first_samples_of_the_share():
    full, _ = order(23, 1, 0, rank=1, world=2)
    for start in (0, 1, 5, len(full)):
        idx, length = order(23, 1, 0, rank=1, world=2, start=start)
        assert idx == full[start:] and length == len(full) - start
