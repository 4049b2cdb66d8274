"""Data sets by recipe name, returned as PyTorch loaders.

:func:`build_loaders` is the one entry point the engine calls. Every data set returns
``(images, labels)`` batches; images are ``[N, C, H, W]`` (static, direct encoding over T steps)
or ``[N, T, C, H, W]`` event frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..errors import UserError, closest

DATASETS = ("digits",)


@dataclass
class DataInfo:
    num_classes: int
    in_chans: int
    input_size: tuple[int, int]


def build_loaders(cfg: Any, seed: int) -> tuple[DataLoader, DataLoader, DataInfo]:
    """Train and test loaders for the recipe's ``data`` section.

    The training loader shuffles with a generator seeded by ``seed``, so a run is repeatable.
    """
    if cfg.name == "digits":
        from .digits import IN_CHANS, NUM_CLASSES, SIZE, digits_splits

        train, test = digits_splits(cfg.test_fraction, cfg.split_seed, cfg.augment)
        info = DataInfo(NUM_CLASSES, IN_CHANS, (SIZE, SIZE))
    else:
        raise UserError(f"data.name: unknown data set {cfg.name!r}{closest(cfg.name, DATASETS)}; "
                        f"choose one of {', '.join(DATASETS)}")
    gen = torch.Generator().manual_seed(seed)
    common = dict(num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available())
    train_loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=False,
                              generator=gen, **common)
    test_loader = DataLoader(test, batch_size=cfg.test_batch_size or cfg.batch_size,
                             shuffle=False, **common)
    return train_loader, test_loader, info
