"""Tiny MNIST-format IDX trees for tests (no real data needed): :func:`write_idx_tree`."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(a: np.ndarray) -> bytes:
    """``a`` (uint8) in the IDX format: magic 0x00 0x00 0x08 ndim, big-endian sizes, the data."""
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return head + np.ascontiguousarray(a, np.uint8).tobytes()


def write_idx_tree(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = False,
                   seed: int = 0) -> dict:
    """Write the four IDX files into ``folder`` (``.gz`` when ``gz``); images are random uint8
    28x28 and labels cycle 0..9. Returns ``{"train": (images, labels), "test": (...)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, a in zip(FILES[split], (images, labels)):
            data = idx_bytes(a)
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(data)
            else:
                (folder / name).write_bytes(data)
        out[split] = (images, labels)
    return out
