"""The real loaders on tiny data sets written in the real on-disk formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sj_bwsnn.data import DATASETS, DataInfo, build_loaders, data_info
from sj_bwsnn.engine.recipe import DataConfig
from sj_bwsnn.errors import UserError


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def make_cifar(root: Path, name: str, per_file: int = 4) -> None:
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, label_key, k = root / "cifar-10-batches-py", "labels", 10
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(k)]})
    else:
        folder, label_key, k = root / "cifar-100-python", "fine_labels", 100
        files = ["train", "test"]
        _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(k)]})
    for f in files:
        data = rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8)
        _pickle(folder / f, {"data": data, label_key: list(rng.integers(0, k, per_file))})


@pytest.mark.parametrize("name,k,n_train", [("cifar10", 10, 20), ("cifar100", 100, 4)])
def test_cifar_pickles(tmp_path, name, k, n_train):
    make_cifar(tmp_path, name)
    cfg = DataConfig(name=name, root=str(tmp_path), batch_size=4, pad=4, scale=[0.64, 0.64],
                     ratio=[1, 1], auto_augment="rand-m9-mstd0.5-inc1", mixup=0.0)
    train, test, info = build_loaders(cfg, seed=0)
    assert (info.num_classes, info.in_chans, info.input_size, info.frames) == (k, 3, (32, 32), False)
    assert data_info(cfg) == info
    assert len(train.dataset) == n_train and len(test.dataset) == 4
    x, y = next(iter(train))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (4,)
    xt, _ = next(iter(test))
    assert xt.shape == (4, 3, 32, 32)
    assert abs(float(xt.mean())) < 0.5  # normalised with the CIFAR mean/std


def test_cifar_missing_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"cifar10 not found: expected .*cifar-10-batches-py.*download"):
        build_loaders(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)
    assert not any(tmp_path.iterdir())  # nothing was downloaded or created
    with pytest.raises(UserError, match="data.root is required"):
        build_loaders(DataConfig(name="cifar100"), seed=0)


def test_imagenet_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for c in ("n01", "n02"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")
    cfg = DataConfig(name="imagenet", root=str(tmp_path), batch_size=2, input_size=32)
    train, test, info = build_loaders(cfg, seed=0)
    assert info.num_classes == 2 and len(train.dataset) == 6 and len(test.dataset) == 2
    assert data_info(cfg) == DataInfo(1000, 3, (32, 32))  # ILSVRC's count: it reads no folder
    assert next(iter(train))[0].shape == (2, 3, 32, 32)
    assert next(iter(test))[0].shape == (2, 3, 32, 32)
    (tmp_path / "missing").mkdir()
    with pytest.raises(UserError, match=r"imagenet not found: expected .*/train/<class>/\*\.JPEG"):
        build_loaders(DataConfig(name="imagenet", root=str(tmp_path / "missing")), seed=0)


def make_dvs(root: Path, per_class: int = 10) -> None:
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    rng = np.random.default_rng(0)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    for c in classes:
        d = root / "events_np" / c
        d.mkdir(parents=True)
        for i in range(per_class):
            n = 200
            np.savez(d / f"cifar10_{c}_{i}.npz", t=np.sort(rng.integers(0, 10_000, n)),
                     x=rng.integers(0, 128, n), y=rng.integers(0, 128, n), p=rng.integers(0, 2, n))
    assert CIFAR10DVS.get_H_W() == (128, 128)


def test_cifar10dvs_frames_and_split(tmp_path):
    make_dvs(tmp_path)
    cfg = DataConfig(name="cifar10dvs", root=str(tmp_path), batch_size=5, input_size=16,
                     augment=True)
    train, test, info = build_loaders(cfg, seed=0, T=3)
    assert info.frames and info.in_chans == 2 and info.input_size == (16, 16)
    assert data_info(cfg) == info
    assert len(train.dataset) == 90 and len(test.dataset) == 10  # 9:1 within every class
    test_labels = [test.dataset.dataset.targets[i] for i in test.dataset.indices]
    assert sorted(test_labels) == list(range(10))
    x, y = next(iter(test))
    assert x.shape == (5, 3, 2, 16, 16) and x.dtype == torch.float32
    # split_by='number': 200 events as 66 + 66 + 68 per frame; area resizing 128 -> 16 keeps the
    # mean, so each frame's sum is its event count / 64
    counts = x.sum((2, 3, 4)) * 64
    assert torch.allclose(counts, torch.tensor([66.0, 66.0, 68.0]).expand(5, 3), atol=1e-4)
    assert (tmp_path / "frames_number_3_split_by_number").is_dir()


def test_cifar10dvs_offline_trap(tmp_path):
    with pytest.raises(UserError, match=r"cifar10dvs not found: expected .*events_np/<class>/\*\.npz"):
        build_loaders(DataConfig(name="cifar10dvs", root=str(tmp_path)), seed=0, T=2)
    assert not (tmp_path / "events_np.building").exists()  # SpikingJelly never ran
    # integrated frames without events_np/: SpikingJelly would still start a download
    (tmp_path / "frames_number_2_split_by_number" / "airplane").mkdir(parents=True)
    with pytest.raises(UserError, match=r"cifar10dvs not found"):
        build_loaders(DataConfig(name="cifar10dvs", root=str(tmp_path)), seed=0, T=2)
    assert not (tmp_path / "events_np.building").exists() and not (tmp_path / "download").exists()
    (tmp_path / "events_np.building").touch()
    with pytest.raises(UserError, match=r"stopped half-way .*events_np\.building.*delete"):
        build_loaders(DataConfig(name="cifar10dvs", root=str(tmp_path), download=True), seed=0, T=2)


def test_data_info_reads_no_file_and_matches_the_loaders(tmp_path):
    """data_info describes every data set from the recipe alone (the checkpoint commands rebuild
    models with it where the data set is absent); where a set is here it agrees with the loaders."""
    from _mnist_util import write_idx_tree

    for name in DATASETS:
        info = data_info(DataConfig(name=name, root=str(tmp_path / "absent")))
        assert info.num_classes >= 10 and info.in_chans in (1, 2, 3)
    assert not (tmp_path / "absent").exists()
    assert data_info(DataConfig()) == build_loaders(DataConfig(), seed=0)[2]  # digits
    write_idx_tree(tmp_path / "MNIST" / "raw")
    cfg = DataConfig(name="mnist", root=str(tmp_path))
    assert data_info(cfg) == build_loaders(cfg, seed=0)[2]
    with pytest.raises(UserError, match="did you mean 'cifar10'"):
        data_info(DataConfig(name="cifar1O"))


def test_unknown_name_suggests():
    with pytest.raises(UserError, match="did you mean 'cifar10'"):
        build_loaders(DataConfig(name="cifar1O"), seed=0)


def test_max_train_test_is_a_fixed_subset():
    cfg = DataConfig(name="digits", max_train=100, max_test=30, batch_size=100)
    train, test, _ = build_loaders(cfg, seed=0)
    assert len(train.dataset) == 100 and len(test.dataset) == 30
    again, _, _ = build_loaders(cfg, seed=5)  # the subset depends on split_seed only
    assert train.dataset.indices == again.dataset.indices
    cfg.split_seed = 1
    other, _, _ = build_loaders(cfg, seed=0)
    assert other.dataset.indices != train.dataset.indices


def test_event_conversion_runs_in_one_thread_and_restores_the_setting():
    """SpikingJelly's thread pool parses .npy headers with ast.literal_eval, which CPython 3.11 does
    not make thread-safe (a spurious SystemError in CI): our loaders convert in one thread."""
    from spikingjelly import configure

    from sj_bwsnn.data.dvs import one_preprocess_thread

    before = configure.max_threads_number_for_datasets_preprocess
    with one_preprocess_thread():
        assert configure.max_threads_number_for_datasets_preprocess == 1
    assert configure.max_threads_number_for_datasets_preprocess == before
