"""Data sets by recipe name, returned as PyTorch loaders.

:func:`build_loaders` is the one entry point the engine calls; :func:`data_info` describes a data
set (classes, channels, size) from the recipe alone. Names: ``digits`` (embedded),
``mnist``, ``fashion_mnist`` (IDX files), ``cifar10``, ``cifar100`` (torchvision), ``imagenet`` (ImageFolder ``train/`` and ``val/``),
``cifar10dvs``, ``nmnist``, ``dvs128_gesture`` (SpikingJelly event frames). Every data set returns ``(images, labels)`` batches;
images are ``[N, C, H, W]`` (static: direct encoding over T steps) or ``[N, T, C, H, W]`` event
frames (``DataInfo.frames``; the trainer transposes them to ``[T, N, C, H, W]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from ..errors import UserError, closest
from .sampler import EpochSampler

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet", "cifar10dvs",
            "nmnist", "dvs128_gesture")


@dataclass
class DataInfo:
    num_classes: int
    in_chans: int
    input_size: tuple[int, int]
    frames: bool = False  # batches are [N, T, C, H, W] event frames


def data_info(cfg: Any) -> DataInfo:
    """The :class:`DataInfo` of the recipe's ``data`` section without reading any file (to rebuild
    a trained model or make an input of the right shape when the data set is not here).
    ``imagenet``: 1000 classes (ILSVRC-2012); a subset's count is that of its class folders, which
    only :func:`build_datasets` reads."""
    if cfg.name == "digits":
        from .digits import IN_CHANS, NUM_CLASSES, SIZE
    elif cfg.name in ("mnist", "fashion_mnist"):
        from .mnist import IN_CHANS, NUM_CLASSES, SIZE
    elif cfg.name == "cifar10dvs":
        from .dvs import IN_CHANS, NUM_CLASSES, SIZE

        size = cfg.input_size or SIZE
        return DataInfo(NUM_CLASSES, IN_CHANS, (size, size), frames=True)
    elif cfg.name in ("nmnist", "dvs128_gesture"):
        from .neuromorphic import IN_CHANS as EVENT_CHANS, SETS

        spec = SETS[cfg.name]
        size = cfg.input_size or spec.size
        return DataInfo(spec.num_classes, EVENT_CHANS, (size, size), frames=True)
    elif cfg.name in ("cifar10", "cifar100", "imagenet"):
        size = cfg.input_size or (224 if cfg.name == "imagenet" else 32)
        return DataInfo({"cifar10": 10, "cifar100": 100, "imagenet": 1000}[cfg.name], 3, (size, size))
    else:
        raise UserError(f"data.name: unknown data set {cfg.name!r}{closest(cfg.name, DATASETS)}; "
                        f"choose one of {', '.join(DATASETS)}")
    return DataInfo(NUM_CLASSES, IN_CHANS, (SIZE, SIZE))


def build_datasets(cfg: Any, T: int = 4):
    """``(train, test, DataInfo)`` for the recipe's ``data`` section (``T``: DVS frames)."""
    if cfg.name == "digits":
        from .digits import IN_CHANS, NUM_CLASSES, SIZE, digits_splits

        train, test = digits_splits(cfg.test_fraction, cfg.split_seed, cfg.augment)
        return train, test, DataInfo(NUM_CLASSES, IN_CHANS, (SIZE, SIZE))
    if cfg.name in ("mnist", "fashion_mnist"):
        from .mnist import IN_CHANS, NUM_CLASSES, SIZE, mnist_splits, train_transform

        train, test = mnist_splits(cfg.name, cfg.root, cfg.download, train_transform(cfg))
        return train, test, DataInfo(NUM_CLASSES, IN_CHANS, (SIZE, SIZE))
    if cfg.name in ("cifar10", "cifar100"):
        from .vision import cifar_splits

        train, test, k, size = cifar_splits(cfg)
        return train, test, DataInfo(k, 3, (size, size))
    if cfg.name == "imagenet":
        from .vision import imagenet_splits

        train, test, k, size = imagenet_splits(cfg)
        return train, test, DataInfo(k, 3, (size, size))
    if cfg.name == "cifar10dvs":
        from .dvs import IN_CHANS, cifar10dvs_splits

        train, test, k, size = cifar10dvs_splits(cfg, T)
        return train, test, DataInfo(k, IN_CHANS, (size, size), frames=True)
    if cfg.name in ("nmnist", "dvs128_gesture"):
        from .neuromorphic import IN_CHANS as EVENT_CHANS, event_splits

        train, test, k, size = event_splits(cfg, T)
        return train, test, DataInfo(k, EVENT_CHANS, (size, size), frames=True)
    raise UserError(f"data.name: unknown data set {cfg.name!r}{closest(cfg.name, DATASETS)}; "
                    f"choose one of {', '.join(DATASETS)}")


def _cap(ds, n: int | None, seed: int):
    """A fixed random subset of ``n`` samples (chosen by ``seed``), or ``ds`` itself."""
    if n is None or n >= len(ds):
        return ds
    keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(ds, sorted(keep.tolist()))


def to_model_input(x: torch.Tensor, info: DataInfo) -> torch.Tensor:
    """A loader batch as the models take it: event frames ``[N, T, C, H, W]`` become time-first
    ``[T, N, C, H, W]``; static images ``[N, C, H, W]`` pass unchanged."""
    return x.transpose(0, 1).contiguous() if info.frames else x


def build_loaders(cfg: Any, seed: int, T: int = 4, rank: int = 0, world: int = 1,
                  drop_last: bool = False) -> tuple[DataLoader, DataLoader, DataInfo]:
    """Train and test loaders for the recipe's ``data`` section.

    The training loader draws its order from an :class:`~.sampler.EpochSampler` (fixed by
    ``seed`` and the epoch, sharded over ``world`` ranks, resumable mid-epoch; the trainer calls
    ``set_epoch``/``set_start``). With ``world > 1`` (DDP) the test set is sharded
    ``rank::world`` without padding, so summed metrics count every test sample once.
    ``drop_last`` keeps training batches full (timm Mixup needs an even batch).
    """
    train, test, info = build_datasets(cfg, T)
    train = _cap(train, cfg.max_train, cfg.split_seed)
    test = _cap(test, cfg.max_test, cfg.split_seed)
    train_loader, test_loader = make_loaders(train, test, cfg, seed, rank, world, drop_last)
    return train_loader, test_loader, info


def make_loaders(train, test, cfg: Any, seed: int, rank: int = 0, world: int = 1,
                 drop_last: bool = False) -> tuple[DataLoader, DataLoader]:
    """The loaders of :func:`build_loaders` for given ``train`` / ``test`` datasets (the continual
    runner builds one pair per task this way); ``cfg`` gives batch sizes, workers, pinning."""
    pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
    # no persistent workers: fresh workers each epoch draw their seeds from ``gen``, whose state
    # the checkpoint restores, so augmentation stays exactly resumable with num_workers > 0
    common = dict(num_workers=cfg.num_workers, pin_memory=pin)
    gen = torch.Generator().manual_seed(seed)  # only seeds the workers; the order is the sampler's
    sampler = EpochSampler(len(train), seed, rank, world)
    train_loader = DataLoader(train, batch_size=cfg.batch_size, sampler=sampler,
                              drop_last=drop_last, generator=gen, **common)
    if world > 1:
        test = Subset(test, range(rank, len(test), world))
    test_loader = DataLoader(test, batch_size=cfg.test_batch_size or cfg.batch_size,
                             shuffle=False, **common)
    return train_loader, test_loader
