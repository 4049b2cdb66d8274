"""The bundled CIFAR and CIFAR10-DVS recipes end to end on tiny on-disk data sets.

The architecture is swapped for ``bw_resnet_tiny`` and AMP is off (CPU time); everything else is the
recipe's: timm augmentation, channels_last, warmup + cosine, the two-stage schedule
(``model.init_from``) and distillation from the full-precision run's ``best.pt``.
"""

from __future__ import annotations

import json

import pytest
import torch

from sj_bwsnn.cli import main
from sj_bwsnn.engine import load_checkpoint

from test_data import make_cifar, make_dvs

TINY = ["model.name=bw_resnet_tiny", "train.epochs=1", "data.num_workers=0", "data.batch_size=10",
        "train.plot=false", "train.tensorboard=false", "train.amp=off"]  # bf16: test_engine.py


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_cifar10_two_stage_kd_pipeline(tmp_path, monkeypatch):
    make_cifar(tmp_path / "data" / "cifar10", "cifar10")
    monkeypatch.chdir(tmp_path)  # the recipes use relative data/ and runs/ paths
    sets = TINY + ["T=1"]
    assert main(["train", "cifar10_fp_resnet18", "--out", "runs/cifar10_fp_resnet18",
                 *_sets(sets)]) == 0
    fp = load_checkpoint(tmp_path / "runs/cifar10_fp_resnet18/best.pt")
    assert fp["recipe"]["model"]["binary"] is False
    assert main(["train", "cifar10_bwsnn_t2", "--out", "runs/student", *_sets(sets)]) == 0
    student = load_checkpoint(tmp_path / "runs/student/last.pt")
    assert student["recipe"]["teacher"]["checkpoint"] == "runs/cifar10_fp_resnet18/best.pt"
    rows = json.loads((tmp_path / "runs/student/metrics.json").read_text())
    assert len(rows) == 1 and torch.isfinite(torch.tensor(rows[0]["train_loss"]))


@pytest.fixture(scope="module")
def dvs_run(tmp_path_factory):
    """cifar10dvs_bwsnn_t4 trained for one epoch on tiny CIFAR10-DVS data in the real layout."""
    root = tmp_path_factory.mktemp("dvs")
    make_dvs(root, per_class=2)
    sets = TINY + [f"data.root={root}", "data.input_size=16", "T=2",
                   "teacher.checkpoint=null", "model.init_from=null"]
    out = root / "run"
    assert main(["train", "cifar10dvs_bwsnn_t4", "--out", str(out), *_sets(sets)]) == 0
    return root, out, sets


def test_cifar10dvs_recipe_runs(dvs_run):
    root, out, _ = dvs_run
    rows = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= rows[0]["test_acc"] <= 1.0 and (root / "frames_number_2_split_by_number").is_dir()


def test_analysis_commands_on_event_frames(dvs_run, tmp_path, capsys):
    """summary / energy / export feed DVS batches time-first, as the trainer does."""
    _, out, sets = dvs_run
    capsys.readouterr()
    assert main(["summary", str(out / "last.pt"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    sn = next(l for l in summary["layers"] if l["kind"] == "LIFNode")
    assert summary["input_shape"][:2] == [2, 1] and sn["out_shape"][0] == 2  # [T, N, ...] in
    assert main(["energy", "cifar10dvs_bwsnn_t4", "--checkpoint", str(out / "last.pt"), "--json",
                 *_sets(sets)]) == 0
    energy = json.loads(capsys.readouterr().out)
    assert energy["samples"] == 10  # 2 recordings per class, 9:1 split: 1 per class to test
    assert main(["export", str(out / "last.pt"), "--out", str(tmp_path / "m.bwsnn")]) == 0
    assert "identical" in capsys.readouterr().out
