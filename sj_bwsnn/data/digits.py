"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes, no download.

Pixels (0..16) are scaled to [0, 1] and standardised with the training split's mean and std.
The stratified train/test split is fixed by ``split_seed`` so every run sees the same test set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

NUM_CLASSES = 10
IN_CHANS = 1
SIZE = 8


class DigitsDataset(Dataset):
    """Tensors ``[1, 8, 8]`` (float32, standardised) and labels 0..9.

    :param augment: random shifts of up to one pixel (zero padding), drawn per item.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.augment:
            dy, dx = torch.randint(-1, 2, (2,)).tolist()
            x = torch.roll(torch.nn.functional.pad(x, (1, 1, 1, 1)), (dy, dx), (1, 2))[:, 1:-1, 1:-1]
        return x, self.labels[i]


def digits_splits(test_fraction: float = 0.25, split_seed: int = 0, augment: bool = False):
    """``(train, test)`` :class:`DigitsDataset` with a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None]
    labels = bunch.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=test_fraction,
                                              random_state=split_seed, stratify=labels)
    mean, std = float(tr_x.mean()), float(tr_x.std())
    tr_x, te_x = (tr_x - mean) / std, (te_x - mean) / std
    return (DigitsDataset(torch.from_numpy(tr_x), torch.from_numpy(tr_y), augment),
            DigitsDataset(torch.from_numpy(te_x), torch.from_numpy(te_y), False))
