"""N-MNIST and DVS128 Gesture through SpikingJelly's loaders, on tiny event sets written in
SpikingJelly's on-disk layout (events_np/{train,test}/<class>/*.npz, keys t, x, y, p)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sj_bwsnn.data import build_loaders
from sj_bwsnn.data.neuromorphic import SETS
from sj_bwsnn.engine.recipe import DataConfig
from sj_bwsnn.errors import UserError

EVENTS = 200  # per sample; split_by='number' puts 66 + 66 + 68 of them in T=3 frames


def make_events(root: Path, name: str, train: int = 2, test: int = 1) -> None:
    """A tiny copy of ``name`` in SpikingJelly's layout: ``train``/``test`` samples per class."""
    spec = SETS[name]
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for c in range(spec.num_classes):
            d = root / "events_np" / split / str(c)
            d.mkdir(parents=True)
            for i in range(count):
                np.savez(d / f"{c}_{i}.npz", t=np.sort(rng.integers(0, 10_000, EVENTS)),
                         x=rng.integers(0, spec.size, EVENTS), y=rng.integers(0, spec.size, EVENTS),
                         p=rng.integers(0, 2, EVENTS))


@pytest.mark.parametrize("name, classes, side", [("nmnist", 10, 34), ("dvs128_gesture", 11, 128)])
def test_event_sets_give_frames_at_T(tmp_path, name, classes, side):
    make_events(tmp_path, name)
    cfg = DataConfig(name=name, root=str(tmp_path), batch_size=4, augment=True)
    train, test, info = build_loaders(cfg, seed=0, T=3)
    assert info.frames and info.in_chans == 2 and info.num_classes == classes
    assert info.input_size == (side, side)
    assert len(train.dataset) == 2 * classes and len(test.dataset) == classes
    x, y = next(iter(test))
    assert x.shape == (4, 3, 2, side, side) and x.dtype == torch.float32
    counts = x.sum((2, 3, 4))  # integrated by number: 200 events as 66 + 66 + 68
    assert torch.equal(counts, torch.tensor([66.0, 66.0, 68.0]).expand(4, 3))
    assert sorted(int(v) for _, v in test.dataset.samples) == list(range(classes))
    assert (tmp_path / "frames_number_3_split_by_number" / "train").is_dir()
    xt, _ = next(iter(train))  # shifted (zero fill) but never flipped or rescaled
    assert xt.shape == (4, 3, 2, side, side) and xt.sum((2, 3, 4)).le(68).all()
    small = DataConfig(name=name, root=str(tmp_path), batch_size=4, input_size=side // 2)
    x17, _ = next(iter(build_loaders(small, seed=0, T=3)[1]))
    assert x17.shape[-2:] == (side // 2, side // 2)  # area resizing keeps the mean count
    torch.testing.assert_close(x17.mean((3, 4)), x.mean((3, 4)))


@pytest.mark.parametrize("name", ["nmnist", "dvs128_gesture"])
def test_event_sets_offline_traps(tmp_path, name):
    cfg = DataConfig(name=name, root=str(tmp_path))
    with pytest.raises(UserError, match=rf"{name} not found: expected .*events_np/\{{train,test\}}"
                                        rf"/<class>/\*\.npz.* in .*download/"):
        build_loaders(cfg, seed=0, T=2)
    assert not (tmp_path / "events_np.building").exists()  # SpikingJelly never ran
    # a corrupt archive in download/: refused before SpikingJelly would delete it
    archive = SETS and __import__("sj_bwsnn.data.neuromorphic", fromlist=["_sj_class"])
    first = archive._sj_class(SETS[name]).resource_url_md5()[0][0]
    (tmp_path / "download").mkdir()
    (tmp_path / "download" / first).write_bytes(b"not the archive")
    with pytest.raises(UserError, match=r"incomplete or corrupt \(MD5 mismatch\)"):
        build_loaders(cfg, seed=0, T=2)
    assert (tmp_path / "download" / first).exists()
    assert not (tmp_path / "events_np.building").exists() and not (tmp_path / "events_np").exists()
    # half a layout, then SpikingJelly's marker of an interrupted preparation
    (tmp_path / "events_np" / "train" / "0").mkdir(parents=True)
    with pytest.raises(UserError, match=r"has no train or test/<class>/\*\.npz"):
        build_loaders(cfg, seed=0, T=2)
    (tmp_path / "frames_number_2_split_by_number.building").touch()
    with pytest.raises(UserError, match=r"stopped half-way .*frames_number_2_split_by_number\.build"
                                        r"ing.*delete"):
        build_loaders(cfg, seed=0, T=2)
    with pytest.raises(UserError, match=rf"data.root is required for {name}"):
        build_loaders(DataConfig(name=name), seed=0, T=2)


@pytest.mark.parametrize("recipe, name, model", [
    ("nmnist_opzo", "nmnist", "model.kwargs={widths: [16, 16], input_size: 8}"),
    ("dvs_gesture_opzo_bp", "dvs128_gesture", "model.kwargs={widths: [4, 8], pool_after: [0]}")])
def test_event_recipes_run_end_to_end(tmp_path, recipe, name, model):
    """The bundled recipe for the set, one epoch on the tiny copy (small net, 8x8 frames, T=2)."""
    import json

    from sj_bwsnn.cli import main

    make_events(tmp_path, name)
    sets = [f"data.root={tmp_path}", "data.input_size=8", "T=2", model, "train.epochs=1",
            "data.num_workers=0", "data.batch_size=8", "train.plot=false", "train.tensorboard=false"]
    out = tmp_path / "run"
    assert main(["train", recipe, "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    row = json.loads((out / "metrics.json").read_text())[0]
    assert torch.isfinite(torch.tensor(row["train_loss"])) and 0.0 <= row["test_acc"] <= 1.0
