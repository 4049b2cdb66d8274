"""MNIST / Fashion-MNIST: the IDX loader on tiny trees written here (no real data needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _mnist_util import idx_bytes, write_idx_tree

from sj_bwsnn.data import build_loaders, mnist
from sj_bwsnn.data.mnist import STATS, mnist_splits, read_idx
from sj_bwsnn.engine.recipe import DataConfig
from sj_bwsnn.errors import UserError


@pytest.mark.parametrize("name,layout,gz", [("mnist", "torchvision", True),
                                            ("fashion_mnist", "torchvision", False),
                                            ("mnist", "flat", False),
                                            ("fashion_mnist", "flat", True)])
def test_idx_tree_loads(tmp_path, name, layout, gz):
    folder = tmp_path / {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name] / "raw" \
        if layout == "torchvision" else tmp_path
    truth = write_idx_tree(folder, n_train=20, n_test=10, gz=gz)
    train, test = mnist_splits(name, str(tmp_path))
    assert len(train) == 20 and len(test) == 10
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    mean, std = STATS[name]
    images, labels = truth["train"]
    expect = (torch.from_numpy(images[3].astype(np.float32)) / 255 - mean) / std
    assert torch.allclose(x[0], expect, atol=1e-6) and int(y) == int(labels[3])
    assert [int(test[i][1]) for i in range(10)] == list(range(10))


def test_build_loaders_and_info(tmp_path):
    write_idx_tree(tmp_path, n_train=12, n_test=6, gz=True)
    cfg = DataConfig(name="mnist", root=str(tmp_path), batch_size=4)
    train, test, info = build_loaders(cfg, seed=0)
    assert (info.num_classes, info.in_chans, info.input_size, info.frames) == (10, 1, (28, 28), False)
    x, y = next(iter(train))
    assert x.shape == (4, 1, 28, 28) and y.shape == (4,)
    assert sum(len(b[1]) for b in test) == 6


def test_fashion_falls_back_to_system_folder(tmp_path, monkeypatch):
    write_idx_tree(tmp_path / "sys", n_train=5, n_test=5, gz=True)
    monkeypatch.setitem(mnist.SYSTEM_DIRS, "fashion_mnist", tmp_path / "sys")
    train, test = mnist_splits("fashion_mnist")  # data.root null
    assert len(train) == 5 and len(test) == 5


def test_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(mnist.SYSTEM_DIRS, "fashion_mnist", tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"fashion_mnist not found: data.root is null and .*"
                                        r"nowhere/ lacks .*; apt-get install "
                                        r"dataset-fashion-mnist, or set data.root") as e:
        mnist_splits("fashion_mnist")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"mnist not found: expected .*train-images-idx3-ubyte.*"
                                        r"MNIST/raw/ or .*data.download=true to fetch them$"):
        build_loaders(DataConfig(name="mnist", root=str(tmp_path)), seed=0)
    assert not any(p for p in tmp_path.iterdir() if p.name != "nowhere")  # nothing was created
    with pytest.raises(UserError, match="fashion_mnist not found: .*leave data.root null to read"):
        mnist_splits("fashion_mnist", str(tmp_path))
    with pytest.raises(UserError, match="mnist not found: data.root is null; set it"):
        mnist_splits("mnist")
    with pytest.raises(UserError, match="data.download=true needs data.root"):
        mnist_splits("mnist", None, download=True)


def test_corrupt_files_are_one_line(tmp_path):
    write_idx_tree(tmp_path, n_train=4, n_test=4)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(UserError, match=r"expected N x 28 x 28 images and N labels"):
        mnist_splits("mnist", str(tmp_path))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-5])
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(UserError, match="bad magic number"):
        read_idx(tmp_path / "junk")
