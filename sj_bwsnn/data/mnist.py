"""MNIST and Fashion-MNIST from their IDX files, parsed with numpy (no torchvision download logic
unless ``data.download: true``).

:func:`mnist_splits` is the whole API: ``(train, test)`` datasets whose items are a float32
``[1, 28, 28]`` tensor (pixels / 255, then standardised) and an int64 label 0..9.

Augmentation (``data.augment: true``, training set only): :func:`train_transform` builds timm's
``create_transform`` from the same recipe keys as CIFAR (``pad``, ``scale``, ``ratio``, ``hflip``,
``color_jitter``, ``auto_augment``, ``re_prob``; see :func:`sj_bwsnn.data.vision.image_transforms`)
applied to the 28x28 grey PIL image: ``pad: 2, scale: [0.765625, 0.765625], ratio: [1, 1]`` is
RandomCrop(28, padding=2) (a 28x28 window of the 32x32 padded image, area (28/32)^2), and
``hflip`` defaults to 0.5 (right for Fashion-MNIST's clothes, wrong for MNIST's digits: set 0).
Without it (the default) items are converted straight from the uint8 tensor, and the test set is
always so: the same values timm's test transform gives at crop_pct 1 (resize and centre crop of a
28x28 image to 28x28 are the identity), without the trip through PIL.

Where the four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ``.gz``) are looked for, in order:

1. ``<data.root>/MNIST/raw/`` or ``<data.root>/FashionMNIST/raw/`` (torchvision's layout);
2. ``<data.root>/`` itself (the raw files as published);
3. Fashion-MNIST only, when ``data.root`` is null: ``/usr/share/datasets/fashion-mnist/``
   (Debian's ``dataset-fashion-mnist`` package).

Normalisation (mean, std of pixels / 255):

* MNIST ``(0.1307, 0.3081)``: the values of PyTorch's MNIST example, which the IDE code also uses
  (pkuxmq/IDE-FSNN mnist_conv.py:100).
* Fashion-MNIST ``(0.2860, 0.3530)``: its own training-set statistics, measured on the 60,000
  training images of Debian's package (0.28604, 0.35302). Deliberate difference: IDE's
  fashionmnist_fc.py:100 normalises Fashion-MNIST with MNIST's values; the two differ by an affine
  change of the input, which the first layer (and its BN) absorbs.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError

NUM_CLASSES = 10
IN_CHANS = 1
SIZE = 28
STATS = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}
FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision's <root>/<FOLDER>/raw
SYSTEM_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}  # used when root is null
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class MNISTDataset(Dataset):
    """``images`` uint8 ``[N, 28, 28]``, ``labels`` int64 ``[N]``; items are standardised float32
    ``[1, 28, 28]`` tensors (converted per item, so the set stays 47 MB instead of 188 MB).
    ``transform``: a torchvision/timm transform of the grey PIL image that ends in a normalised
    tensor (:func:`train_transform`); None: the direct conversion."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
                 transform=None):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.transform is not None:
            from PIL import Image

            return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), self.labels[i]
        x = self.images[i].to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        return x.unsqueeze(0), self.labels[i]


def train_transform(cfg):
    """The training transform for a recipe's ``data`` section: timm's ``create_transform`` when
    ``cfg.augment`` (module docstring), else None (no augmentation)."""
    if not cfg.augment:
        return None
    from .vision import image_transforms

    if cfg.input_size not in (None, SIZE):
        raise UserError(f"data.input_size: {cfg.name} images are {SIZE}x{SIZE}; leave it null "
                        f"(got {cfg.input_size})")
    mean, std = STATS[cfg.name]
    return image_transforms(cfg, SIZE, (mean,), (std,), 1.0)[0]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or gzip) as a uint8 array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(shape)):
        raise UserError(f"{path} is truncated or corrupt: header says {shape}, "
                        f"{len(data) - offset} bytes of data follow")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    for p in (folder / name, folder / f"{name}.gz"):
        if p.is_file():
            return p
    return None


def _candidates(name: str, root: str | None) -> list[Path]:
    if root is None:
        return [SYSTEM_DIRS[name]] if name in SYSTEM_DIRS else []
    r = Path(root).expanduser()
    return [r / FOLDER[name] / "raw", r]


def locate(name: str, root: str | None) -> list[Path] | None:
    """The four IDX files (in :data:`FILES` order) of the first folder that has them all."""
    for folder in _candidates(name, root):
        found = [_find(folder, f) for f in FILES]
        if all(found):
            return found
    return None


def _missing(name: str, root: str | None) -> UserError:
    files = "{" + ",".join(FILES) + "}[.gz]"
    system = SYSTEM_DIRS.get(name)
    if root is None:
        if system is None:
            return UserError(f"{name} not found: data.root is null; set it to a folder holding "
                             f"{files} (in <root>/{FOLDER[name]}/raw/ or <root>/ itself), and add "
                             f"data.download=true to fetch them")
        return UserError(f"{name} not found: data.root is null and {system}/ lacks {files}; "
                         f"apt-get install dataset-fashion-mnist, or set data.root to a folder "
                         f"holding them (<root>/{FOLDER[name]}/raw/ or <root>/ itself; add "
                         f"data.download=true to fetch them)")
    r = Path(root).expanduser()
    also = (f", or leave data.root null to read {system}/ (apt-get install dataset-fashion-mnist)"
            if system else "")
    return UserError(f"{name} not found: expected {files} in {r / FOLDER[name] / 'raw'}/ or {r}/; "
                     f"set data.download=true to fetch them{also}")


def _download(name: str, root: str | None) -> None:
    if root is None:
        raise UserError(f"data.download=true needs data.root (the folder to put {name} in)")
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        cls(str(Path(root).expanduser()), train=True, download=True)
    except (OSError, RuntimeError) as e:
        raise UserError(f"{name}: could not download into {root} ({e})") from None


def mnist_splits(name: str = "mnist", root: str | None = None, download: bool = False,
                 transform=None):
    """``(train, test)`` :class:`MNISTDataset` for ``mnist`` or ``fashion_mnist`` (60,000 / 10,000
    images in the full sets); ``transform`` (e.g. :func:`train_transform`) applies to the training
    set only. Nothing is downloaded unless ``download``; missing files are one
    :class:`~sj_bwsnn.errors.UserError` line naming the folders searched and how to get them."""
    if name not in STATS:
        raise UserError(f"mnist_splits: name must be mnist or fashion_mnist, got {name!r}")
    paths = locate(name, root)
    if paths is None and download:
        _download(name, root)
        paths = locate(name, root)
    if paths is None:
        raise _missing(name, root)
    tr_x, tr_y, te_x, te_y = (read_idx(p) for p in paths)
    for x, y, p in ((tr_x, tr_y, paths[0]), (te_x, te_y, paths[2])):
        if x.ndim != 3 or x.shape[1:] != (SIZE, SIZE) or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{p}: expected N x {SIZE} x {SIZE} images and N labels, got "
                            f"{x.shape} and {y.shape}")
    mean, std = STATS[name]

    def ds(x, y, tf=None):
        return MNISTDataset(torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64)),
                            mean, std, tf)

    return ds(tr_x, tr_y, transform), ds(te_x, te_y)
