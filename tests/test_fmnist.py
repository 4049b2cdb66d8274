"""Fashion-MNIST (issue 19): bw_resnet_small, timm augmentation of the IDX loader, the two recipes'
first steps and bench/fmnist.py, all on tiny IDX trees written here (no real data needed)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from _mnist_util import write_idx_tree

from sj_bwsnn.cli import main
from sj_bwsnn.data import build_loaders
from sj_bwsnn.data.mnist import STATS, mnist_splits, train_transform
from sj_bwsnn.engine import Trainer, load_checkpoint, load_recipe
from sj_bwsnn.engine.objectives import DistillationObjective
from sj_bwsnn.engine.recipe import DataConfig
from sj_bwsnn.errors import UserError
from sj_bwsnn.layers import BinaryLayer

BENCH = Path(__file__).resolve().parents[1] / "bench"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
pytestmark = pytest.mark.usefixtures("one_thread")

# the recipes' first steps: everything as bundled except the data folder, epochs and batch size
FIRST_STEPS = ["train.epochs=1", "data.batch_size=10", "train.plot=false", "train.tensorboard=false"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_bw_resnet_small_is_registered_with_timm():
    import sj_bwsnn  # noqa: F401

    model = timm.create_model("bw_resnet_small", num_classes=10, T=2)
    binary = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    assert len(binary) == 8 and model.in_chans == 1  # 4 blocks x 2 units, grey input
    assert [m.out_channels for m in binary] == [16, 16, 32, 32, 64, 64, 128, 128]
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def _augment(**keys) -> DataConfig:
    return DataConfig(name="fashion_mnist", augment=True, **keys)


def test_identity_augmentation_gives_the_direct_values(tmp_path):
    """timm's pipeline with nothing random left (no pad, whole-image crop, no flip) reproduces the
    loader's own uint8 -> float conversion exactly: the transform path adds nothing of its own."""
    write_idx_tree(tmp_path, n_train=8, n_test=4)
    tf = train_transform(_augment(scale=[1.0, 1.0], ratio=[1.0, 1.0], hflip=0.0))
    plain, _ = mnist_splits("fashion_mnist", str(tmp_path))
    aug, test = mnist_splits("fashion_mnist", str(tmp_path), transform=tf)
    for i in range(8):
        assert torch.equal(aug[i][0], plain[i][0]) and aug[i][1] == plain[i][1]
    assert test.transform is None  # the test set is never augmented
    assert train_transform(DataConfig(name="fashion_mnist")) is None  # augment: false


def test_pad_crop_and_flip_are_a_window_of_the_padded_image(tmp_path):
    """pad 4 with scale (28/36)^2 and ratio 1 is RandomCrop(28, padding=4): every augmented image is
    one of the 81 windows of the zero-padded image (or its mirror), standardised."""
    truth = write_idx_tree(tmp_path, n_train=6, n_test=2)["train"][0]
    mean, std = STATS["fashion_mnist"]
    tf = train_transform(_augment(pad=4, scale=[(28 / 36) ** 2] * 2, ratio=[1.0, 1.0], hflip=0.5))
    aug, _ = mnist_splits("fashion_mnist", str(tmp_path), transform=tf)
    torch.manual_seed(0)
    offsets, flips = set(), set()
    for i in range(6):
        padded = np.pad(truth[i], 4).astype(np.float32) / 255
        for _ in range(4):
            x = aug[i][0][0].numpy() * std + mean
            found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                     if np.allclose(x, (padded[dy:dy + 28, dx:dx + 28])[:, ::-1 if f else 1], atol=1e-5)]
            assert found, f"image {i} is not a window of its padded original"
            offsets.add(found[0][:2])
            flips.add(found[0][2])
    assert len(offsets) > 5 and flips == {0, 1}  # it does move and flip


def test_augmented_loader_batches_and_input_size_check(tmp_path):
    write_idx_tree(tmp_path, n_train=12, n_test=6, gz=True)
    cfg = _augment(root=str(tmp_path), batch_size=4, pad=2, scale=[0.765625] * 2, ratio=[1.0, 1.0])
    train, _, info = build_loaders(cfg, seed=0)
    x, y = next(iter(train))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and info.input_size == (28, 28)
    with pytest.raises(UserError, match="fashion_mnist images are 28x28; leave it null"):
        train_transform(_augment(input_size=32))


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory):
    """fmnist_fp, then fmnist_bwsnn (its default teacher / init_from paths), one epoch each on a
    tiny IDX tree, run as a user runs them (relative runs/ paths, from the working directory)."""
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_tree(root / "FashionMNIST" / "raw", n_train=40, n_test=20, gz=True)
    sets = _sets(FIRST_STEPS + [f"data.root={root}"])
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "fmnist_fp", "--out", "runs/fmnist_fp", *sets]) == 0
        assert main(["train", "fmnist_bwsnn", "--out", "runs/fmnist_bwsnn", *sets]) == 0
        student = Trainer(load_recipe(RECIPES / "fmnist_bwsnn.yaml",
                                      [*FIRST_STEPS, f"data.root={root}"]), out=None)
    finally:
        os.chdir(cwd)
    return root, sets, student


def test_recipes_first_steps(recipe_runs):
    root, _, student = recipe_runs
    fp = load_checkpoint(root / "runs/fmnist_fp/last.pt")
    bw = load_checkpoint(root / "runs/fmnist_bwsnn/last.pt")
    assert fp["recipe"]["model"]["binary"] is False and bw["recipe"]["model"]["binary"] is True
    for r in (fp["recipe"], bw["recipe"]):
        assert r["model"]["name"] == "bw_resnet_small" and r["T"] == 2 and r["data"]["augment"]
        assert r["neuron"]["tau"] == 1.1 and r["neuron"]["v_reset"] is None  # preset sltt
    rows = json.loads((root / "runs/fmnist_bwsnn/metrics.json").read_text())
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"]) and 0 <= rows[0]["test_acc"] <= 1
    # stage 2 starts from the teacher's weights and distils from it (KD only, tau 1)
    assert isinstance(student.objective, DistillationObjective) and student.objective.weight == 1.0
    start = student.model.state_dict()
    assert all(torch.equal(start[k], v) for k, v in fp["model"].items())
    assert all(torch.equal(a, b) for a, b in zip(student.teacher.state_dict().values(),
                                                 fp["model"].values()))


def test_student_without_the_teacher_run_is_one_line(tmp_path, monkeypatch, capsys):
    write_idx_tree(tmp_path, n_train=10, n_test=10)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fmnist_bwsnn", *_sets(FIRST_STEPS + [f"data.root={tmp_path}"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.init_from: checkpoint not found: runs/fmnist_fp/last.pt")
    assert "sj-bwsnn train" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    import fmnist

    return fmnist


def test_bench_budget_and_rows(bench):
    assert bench.parse_budget("full") == ("full", [])
    assert bench.parse_budget("3") == ("3", ["train.epochs=3"])
    assert bench.parse_budget("2x20000") == ("2x20000", ["train.epochs=2", "data.max_train=20000"])
    for bad in ("x", "0x5", "2x0", "two"):
        with pytest.raises(SystemExit, match="--budget"):
            bench.parse_budget(bad)
    assert [r.name for r in bench.select(["bw_kd_t*"])][:3] == ["bw_kd_t2", "bw_kd_t1", "bw_kd_t4"]
    with pytest.raises(SystemExit, match="no row matches nope"):
        bench.select(["nope"])
    methods = {r.method for r in bench.ROWS}
    assert {"bptt", "sltt", "ottt", "dsr", "ide", "spide", "opzo", "dfa", "hlop"} <= methods
    assert {r.recipe for r in bench.ROWS} == {"fmnist_fp", "fmnist_bwsnn", "fashion_mnist_ide",
                                              "mnist_spide"}
    # feedback SNNs train on their own nets and recipes, never on BW-ResNet (a certain refusal)
    assert all(r.recipe != "fmnist_bwsnn" for r in bench.ROWS if r.method in ("ide", "spide"))
    ts = {s for r in bench.ROWS for s in r.sets if s.startswith("T=")}
    assert ts == {"T=1", "T=4"}  # and T=2, the recipes' own


def test_bench_table_on_a_tiny_budget(bench, recipe_runs, tmp_path, monkeypatch, capsys):
    """The recipes' runs are reused as the budget's fp_t2 / bw_kd_t2 rows (measured, not retrained);
    bw_t2 trains through the CLI in a child process; a method missing from METHODS is skipped."""
    from sj_bwsnn.engine import methods

    root, _, _ = recipe_runs
    runs = tmp_path / "bench" / "1"
    runs.mkdir(parents=True)
    (runs / "fp_t2").symlink_to(root / "runs/fmnist_fp")
    (runs / "bw_kd_t2").symlink_to(root / "runs/fmnist_bwsnn")
    monkeypatch.delitem(methods.METHODS, "sltt")
    out = tmp_path / "fmnist.json"
    assert bench.main(["--budget", "1", "--rows", "fp_t2", "bw_kd_t2", "bw_t2", "bw_kd_t2_sltt",
                       "--runs", str(tmp_path / "bench"), "--data-root", str(root), "--threads", "1",
                       "--energy-batches", "1", "--set", "data.batch_size=10", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["complete"] and rec["budget"] == "1"
    rows = {r["name"]: r for r in rec["rows"]}
    assert rows["bw_kd_t2_sltt"]["skipped"].startswith("skipped: train.method sltt is not in")
    assert rows["fp_t2"]["reused"] and rows["bw_kd_t2"]["reused"] and not rows["bw_t2"].get("reused")
    assert "--set teacher.checkpoint=null" in rows["bw_t2"]["command"]
    assert (runs / "bw_t2.train.log").read_text().count("epoch   1/1") == 1
    for name in ("fp_t2", "bw_kd_t2", "bw_t2"):
        r = rows[name]
        assert r["epochs"] == 1 and r["train_images"] == 40 and r["test_images"] == 20, name
        assert 0 <= r["test_acc"] <= 1 and r["T"] == 2 and r["method"] == "bptt"
        assert r["energy_pj"] > 0 and r["energy_images"] == 10 and r["act_mib"] > 0 and r["act_batch"] == 10
    # the row records its timings (their values belong to bench/, not to a test)
    assert {"wall_s", "cpu_s"} <= rows["bw_t2"].keys()
    # 1-bit hardware costs only change the 1-bit layers' price
    assert rows["fp_t2"]["energy_1bit_pj"] == pytest.approx(rows["fp_t2"]["energy_pj"])
    assert rows["bw_kd_t2"]["energy_1bit_pj"] < rows["bw_kd_t2"]["energy_pj"]
    printed = capsys.readouterr().out
    assert "| bw_kd_t2_sltt |" in printed and "targets (issue 19): bw_kd_t2" in printed
    assert rec["table"].count("\n") == 5  # header, rule, 4 rows
