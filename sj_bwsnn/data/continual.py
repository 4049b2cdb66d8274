"""Task sequences for continual learning: permuted and split variants of any image data set.

:class:`TaskSequence` turns the ``(train, test)`` pair of a recipe's ``data`` section into
``continual.tasks`` tasks:

* ``protocol: permuted`` -- every task has all classes under its own fixed pixel permutation (the
  same ``[C*H*W]`` permutation for train and test), one shared head. As the group's PMNIST loader
  (pkuxmq/HLOP-SNN dataloader/pmnist.py:26-41), *every* task is permuted, the first one included,
  after normalisation. Task ``t``'s permutation is drawn with ``numpy`` from ``(task_seed, t)``.
* ``protocol: split`` -- task ``t`` holds ``classes_per_task`` classes (``0..k-1`` for task 0,
  then the next ``k``... as HLOP-SNN dataloader/cifar100.py:26-33; ``shuffle_classes`` draws the
  order from ``task_seed`` instead). Labels are the position in one output layer of
  ``tasks * classes_per_task`` logits, ``t * k + local``: task ``t``'s head is the slice
  ``[t*k, (t+1)*k)`` (:meth:`TaskSequence.head`), so "one head per task" is one ``Linear`` whose
  row blocks are the heads (the continual runner scores each sample on its own head).

``continual.image_size`` resizes images (bilinear) before permuting: for the 8x8 digits, 16x16
leaves room in the input space for ten tasks' principal subspaces (docs/continual.md). The
tasks are fixed by ``task_seed``, never by the run's ``seed``, so every seed and every ``protect``
method sees the same tasks. ``data.max_train`` / ``max_test`` cap the base sets first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..errors import UserError
from . import DataInfo, _cap, build_datasets


class Resized(Dataset):
    """``base`` with images resized to ``size`` (bilinear); with ``cache`` (a base without random
    augmentation) each image is resized once and kept."""

    def __init__(self, base: Dataset, size: int, cache: bool = False):
        self.base, self.size = base, size
        self._cache: dict[int, tuple] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        x, y = self.base[i]
        item = (resize(x, self.size), y)
        if self._cache is not None:
            self._cache[i] = item
        return item


class PermutedTask(Dataset):
    """``base`` with the pixels of every image permuted by ``perm``."""

    def __init__(self, base: Dataset, perm: torch.Tensor | None):
        self.base, self.perm = base, perm

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.perm is not None:
            x = x.reshape(-1)[self.perm].reshape(x.shape)
        return x, y


class SplitTask(Dataset):
    """The samples of ``base`` at ``indices``, labels mapped by ``label_map`` (global class ->
    position in the output layer)."""

    def __init__(self, base: Dataset, indices: list[int], label_map: dict[int, int]):
        self.base, self.indices, self.label_map = base, indices, label_map

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.base[self.indices[i]]
        return x, self.label_map[int(y)]


def resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """``[C, H, W]`` bilinearly resized to ``[C, size, size]`` (unchanged when ``size`` is None
    or already the image's)."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x[None].float(), size=(size, size), mode="bilinear",
                         align_corners=False)[0]


def labels_of(ds: Dataset) -> np.ndarray:
    """Every label of ``ds`` without loading its images where the data set exposes them
    (``labels`` / ``targets``, through ``Subset``); otherwise by iterating once."""
    if isinstance(ds, Subset):
        return labels_of(ds.dataset)[np.asarray(ds.indices)]
    for attr in ("labels", "targets"):
        found = getattr(ds, attr, None)
        if found is not None:
            return np.asarray(found.numpy() if isinstance(found, torch.Tensor) else found)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


class TaskSequence:
    """The tasks of a continual run (module docstring).

    :param train, test: the base data sets (items ``(image [C, H, W], label)``).
    :param info: their :class:`~sj_bwsnn.data.DataInfo`.
    :param cfg: the recipe's ``continual`` section.
    :param random_train: whether the training items are randomly augmented (then resized images
        are not cached).
    """

    def __init__(self, train: Dataset, test: Dataset, info: DataInfo, cfg,
                 random_train: bool = True):
        if info.frames:
            raise UserError("continual learning takes static images; event-frame data sets "
                            "(cifar10dvs) are not supported")
        self.cfg, self.protocol, self.tasks = cfg, cfg.protocol, cfg.tasks
        self.size = cfg.image_size
        self.base = {"train": train, "test": test}
        self._labels = {s: labels_of(ds) for s, ds in self.base.items()}
        if self.size is not None:
            self.base = {s: Resized(ds, self.size, cache=s == "test" or not random_train)
                         for s, ds in self.base.items()}
        side = self.size or info.input_size[0]
        classes = info.num_classes
        if self.protocol == "permuted":
            self.classes_per_task = classes
            self.outputs = classes
            c, (h, w) = info.in_chans, ((side, side) if self.size else info.input_size)
            self.perms = [torch.from_numpy(np.random.default_rng([cfg.task_seed, t])
                                           .permutation(c * h * w)) for t in range(self.tasks)]
        else:
            k = cfg.classes_per_task or classes // self.tasks
            if k < 1 or k * self.tasks > classes:
                raise UserError(f"continual: {self.tasks} tasks of {k} classes need "
                                f"{self.tasks * k} classes; the data set has {classes} (lower "
                                f"continual.tasks or continual.classes_per_task)")
            self.classes_per_task, self.outputs = k, k * self.tasks
            order = (np.random.default_rng(cfg.task_seed).permutation(classes)
                     if cfg.shuffle_classes else np.arange(classes))
            self.task_classes = [[int(c) for c in order[t * k:(t + 1) * k]]
                                 for t in range(self.tasks)]
        self.info = DataInfo(self.outputs, info.in_chans, (side, side) if self.size
                             else info.input_size)

    def head(self, task: int) -> slice:
        """The logits of ``task`` in the output layer (all of them for ``permuted``)."""
        if self.protocol == "permuted":
            return slice(0, self.outputs)
        k = self.classes_per_task
        return slice(task * k, (task + 1) * k)

    def _task(self, split: str, task: int) -> Dataset:
        base = self.base[split]
        if self.protocol == "permuted":
            return PermutedTask(base, self.perms[task])
        k = self.classes_per_task
        label_map = {c: task * k + i for i, c in enumerate(self.task_classes[task])}
        keep = np.flatnonzero(np.isin(self._labels[split], list(label_map)))
        return SplitTask(base, keep.tolist(), label_map)

    def train_set(self, task: int) -> Dataset:
        return self._task("train", task)

    def test_set(self, task: int) -> Dataset:
        return self._task("test", task)

    def joint_train_set(self) -> Dataset:
        """Every task's training samples at once (``protect: joint``)."""
        return ConcatDataset([self.train_set(t) for t in range(self.tasks)])

    def memory_set(self, tasks: range, per_class: int) -> Dataset:
        """The first ``per_class`` training samples of each class of each task in ``tasks`` (the
        replay buffer, chosen as HLOP-SNN spiking_train_pmnist.py:219-232 does)."""
        parts = []
        for t in tasks:
            ds = self.train_set(t)
            labels = np.asarray([ds.label_map[int(y)] for y in self._labels["train"][ds.indices]]
                                if isinstance(ds, SplitTask) else self._labels["train"])
            keep = [int(i) for c in np.unique(labels)
                    for i in np.flatnonzero(labels == c)[:per_class]]
            parts.append(Subset(ds, sorted(keep)))
        return ConcatDataset(parts)


def task_sequence(recipe) -> TaskSequence:
    """The :class:`TaskSequence` of a recipe with a ``continual`` section (``data`` gives the base
    data set, capped by ``data.max_train`` / ``max_test``)."""
    data = recipe.data
    train, test, info = build_datasets(data, recipe.T)
    train = _cap(train, data.max_train, data.split_seed)
    test = _cap(test, data.max_test, data.split_seed)
    fixed = data.name in ("mnist", "fashion_mnist") or (data.name == "digits" and not data.augment)
    return TaskSequence(train, test, info, recipe.continual, random_train=not fixed)
