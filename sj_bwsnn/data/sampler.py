"""The training sampler: an epoch's order fixed by ``(seed, epoch)``, resumable mid-epoch.

For epoch ``e`` the order is ``randperm(n)`` drawn from a generator seeded with ``seed + e``; with
``world`` processes, rank ``r`` takes ``order[r::world]`` after padding the order (by repeating its
head) to a multiple of ``world``, as ``DistributedSampler`` does. ``set_start(k)`` skips the first
``k`` samples of this rank's share, so a run interrupted after ``b`` batches resumes with exactly
the batches an uninterrupted epoch would have drawn next, without loading the skipped ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Shuffled, optionally sharded indices for one epoch at a time (see the module docstring)."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, int(seed), rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the current epoch."""
        self.start = int(start)

    def _share(self) -> list[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = order.tolist()
        total = math.ceil(self.n / self.world) * self.world
        order += order[: total - self.n]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._share()[self.start:])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) - self.start
