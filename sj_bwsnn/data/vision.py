"""CIFAR-10/100 (torchvision, python pickle batches) and ImageNet (train/val ImageFolder).

Augmentation is timm's ``create_transform`` driven by the recipe's ``data`` keys (``scale``,
``ratio``, ``hflip``, ``color_jitter``, ``auto_augment`` = RandAugment strings, ``re_prob``,
``crop_pct``). ``pad`` prepends zero padding, so CIFAR's RandomCrop(32, padding=4) is
``pad: 4, scale: [0.64, 0.64], ratio: [1, 1]`` (a 32x32 window of the 40x40 padded image).

Nothing is downloaded unless ``download: true``; a missing set is one :class:`UserError` line
that names the folder layout expected under ``data.root``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from torchvision import datasets, transforms

from ..errors import UserError

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _root(cfg) -> Path:
    if not cfg.root:
        raise UserError(f"data.root is required for {cfg.name} (the folder holding the data set)")
    return Path(cfg.root).expanduser()


def image_transforms(cfg, size: int, mean, std, default_crop_pct: float):
    """``(train, test)`` transforms through timm's ``create_transform``. ``color_jitter: null``
    leaves ColorJitter out (timm adds it for any number, 0 included: a no-op that cost about
    0.1 ms per image on the 2-core machine, more than crop, flip and ToTensor together)."""
    from timm.data import create_transform

    train = create_transform(
        size, is_training=True, scale=tuple(cfg.scale) if cfg.scale else None,
        ratio=tuple(cfg.ratio) if cfg.ratio else None, hflip=cfg.hflip,
        color_jitter=cfg.color_jitter, auto_augment=cfg.auto_augment,
        re_prob=cfg.re_prob, mean=mean, std=std)
    if cfg.pad:
        train = transforms.Compose([transforms.Pad(cfg.pad), *train.transforms])
    test = create_transform(size, is_training=False, mean=mean, std=std,
                            crop_pct=cfg.crop_pct if cfg.crop_pct is not None else default_crop_pct)
    return train, test


class _CIFAR(object):
    """Mixin: replace torchvision's md5 check by a file-presence check.

    Hashing 170 MB on every start buys little (a corrupt pickle fails to load anyway) and it
    refuses re-packed or subset copies of the same format, such as the tests' tiny batches.
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class CIFAR10(_CIFAR, datasets.CIFAR10):
    pass


class CIFAR100(_CIFAR, datasets.CIFAR100):
    pass


def cifar_splits(cfg):
    """``(train, test, num_classes, size)`` for ``cifar10`` / ``cifar100``."""
    cls = CIFAR10 if cfg.name == "cifar10" else CIFAR100
    root = _root(cfg)
    folder = root / cls.base_folder
    files = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    if not cfg.download and not all((folder / f).is_file() for f in files):
        raise UserError(f"{cfg.name} not found: expected {folder}/{{{','.join(files)}}} "
                        f"(the python version from cs.toronto.edu); set data.download=true to "
                        f"fetch it")
    size = cfg.input_size or 32
    train_tf, test_tf = image_transforms(cfg, size, CIFAR_MEAN[cfg.name], CIFAR_STD[cfg.name], 1.0)
    try:
        train = cls(str(root), train=True, transform=train_tf, download=cfg.download)
        test = cls(str(root), train=False, transform=test_tf, download=False)
    except (OSError, RuntimeError) as e:
        raise UserError(f"{cfg.name}: could not get the data set into {root} ({e})") from None
    return train, test, len(train.classes), size


def imagenet_splits(cfg):
    """``(train, test, num_classes, size)`` from ``root/train/<wnid>/*`` and ``root/val/<wnid>/*``."""
    root = _root(cfg)
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir() or not any(p.is_dir() for p in d.iterdir()):
            raise UserError(f"imagenet not found: expected {root}/train/<class>/*.JPEG and "
                            f"{root}/val/<class>/*.JPEG (ImageFolder layout; {d} is missing or "
                            f"empty); ImageNet is never downloaded")
    size = cfg.input_size or 224
    train_tf, test_tf = image_transforms(cfg, size, IMAGENET_MEAN, IMAGENET_STD, 0.875)
    train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
    test = datasets.ImageFolder(str(root / "val"), transform=test_tf)
    if train.classes != test.classes:
        raise UserError(f"imagenet: {root}/train and {root}/val hold different class folders "
                        f"({len(train.classes)} vs {len(test.classes)})")
    return train, test, len(train.classes), size
