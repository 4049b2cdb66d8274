"""The training sampler: an epoch's order fixed by ``(seed, epoch)``, resumable mid-epoch.

:class:`EpochSampler` is torch's ``DistributedSampler`` (shuffled with a generator seeded by
``seed + epoch``; rank ``r`` of ``world`` takes every ``world``-th index of the order padded to a
multiple of ``world``) plus ``set_start(k)``, which skips the first ``k`` samples of this rank's
share, so a run interrupted after ``b`` batches resumes with exactly the batches an uninterrupted
epoch would have drawn next, without loading the skipped ones. It also works without a process
group (``world = 1``).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DistributedSampler


class EpochSampler(DistributedSampler):
    """Shuffled, optionally sharded indices of ``n`` samples for one epoch at a time (see the
    module docstring); ``set_epoch`` as ``DistributedSampler``'s, plus ``set_start``."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1):
        super().__init__(range(n), num_replicas=world, rank=rank, shuffle=True, seed=int(seed))
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the current epoch."""
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        share = list(super().__iter__())
        return iter(share[self.start:])

    def __len__(self) -> int:
        return super().__len__() - self.start
