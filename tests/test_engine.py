"""Trainer: exact resume, precision switches, files written, and every bundled recipe."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sj_bwsnn.cli import main, recipe_dirs
from sj_bwsnn.engine import Precision, Trainer, load_checkpoint, load_recipe
from sj_bwsnn.errors import UserError

# a fast digits run: 128 training images (2 batches), 128 test images, T=1
FAST = ["T=1", "data.max_train=128", "data.max_test=128", "data.test_batch_size=128",
        "train.deterministic=true"]
DIGITS = str(recipe_dirs()[0] / "digits_bwsnn.yaml")


def _sets(*items):
    return [a for item in items for a in ("--set", item)]


def test_resume_is_bitwise_exact(tmp_path, capsys):
    """2 epochs straight == 1 epoch + --resume 1 epoch (model, EMA, optimizer, metrics)."""
    extra = FAST + ["data.augment=true", "data.mixup=0.4", "data.cutmix=1.0",
                    "train.label_smoothing=0.1", "train.ema_decay=0.9", "train.plot=false"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", DIGITS, "--out", str(a), *_sets(*extra, "train.epochs=2")]) == 0
    recipe = load_recipe(DIGITS, extra + ["train.epochs=2"])
    b.mkdir()
    Trainer(recipe, b).fit(until=1)  # a run cut off after epoch 1 (same cosine schedule)
    assert load_checkpoint(b / "last.pt")["epoch"] == 1
    assert main(["train", DIGITS, "--out", str(b), "--resume",
                 *_sets(*extra, "train.epochs=2")]) == 0
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] == 2
    for key in ("model", "ema"):
        assert ca[key].keys() == cb[key].keys()
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), (key, k)
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    strip = [{k: v for k, v in m.items() if k != "time_s"} for m in ca["metrics"]]
    assert strip == [{k: v for k, v in m.items() if k != "time_s"} for m in cb["metrics"]]
    assert "test_acc_ema" in ca["metrics"][0]
    capsys.readouterr()
    assert main(["eval", DIGITS, "--checkpoint", str(a / "last.pt"), "--ema",
                 *_sets(*extra, "train.epochs=2")]) == 0
    assert f"test_acc={ca['metrics'][-1]['test_acc_ema']:.4f}" in capsys.readouterr().out


def test_run_writes_files_and_eval_matches(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", DIGITS, "--out", str(out), *_sets(*FAST, "train.epochs=1")]) == 0
    for name in ("last.pt", "best.pt", "metrics.json", "recipe.yaml"):
        assert (out / name).is_file()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((out / "tb").glob("events.out.tfevents.*"))
    acc = load_checkpoint(out / "last.pt")["metrics"][0]["test_acc"]
    capsys.readouterr()
    assert main(["eval", DIGITS, "--checkpoint", str(out / "best.pt"), *_sets(*FAST)]) == 0
    assert f"test_acc={acc:.4f}" in capsys.readouterr().out
    assert main(["eval", DIGITS, "--checkpoint", str(out / "best.pt"), "--ema"]) == 2
    assert "holds no EMA weights" in capsys.readouterr().err


def test_precision_switches_train(tmp_path):
    """bf16 autocast, channels_last and clipping run end to end on CPU."""
    recipe = load_recipe(DIGITS, FAST + ["train.epochs=1", "train.amp=bf16",
                                         "train.channels_last=true", "train.clip_grad=0.5",
                                         "train.tensorboard=false", "train.plot=false"])
    trainer = Trainer(recipe, tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.fit()
    assert trainer.precision.dtype == torch.bfloat16
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"])
    after = trainer.model.state_dict()
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert after["stem.0.weight"].is_contiguous(memory_format=torch.channels_last)


def test_precision_clip_and_fp16_scaler():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    p = Precision("off", "cpu", clip_grad=0.01)
    (lin(torch.randn(8, 4)) ** 2).sum().mul(100).backward()
    p.step(opt)
    norm = torch.sqrt(sum((q.grad ** 2).sum() for q in lin.parameters()))
    assert norm <= 0.01 * (1 + 1e-5)

    p16 = Precision("fp16", "cpu")
    with p16.autocast():
        assert lin(torch.randn(2, 4)).dtype == torch.float16
    before = [q.detach().clone() for q in lin.parameters()]
    opt.zero_grad()
    scale = p16.scaler.get_scale()
    p16.backward(lin(torch.randn(2, 4)).sum() * float("inf"))
    p16.step(opt)  # inf gradients: the step is skipped and the scale halves
    assert all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))
    assert p16.scaler.get_scale() == scale / 2
    assert Precision("bf16", "cpu").scaler is None


def test_bad_switches_are_one_line():
    with pytest.raises(UserError, match="train.amp' must be off, bf16 or fp16"):
        load_recipe(DIGITS, ["train.amp=fp8"])
    assert load_recipe(DIGITS, ["train.amp=off"]).train.amp == "off"  # YAML reads off as false
    with pytest.raises(UserError, match="train.ema_decay' must lie in"):
        load_recipe(DIGITS, ["train.ema_decay=1.5"])
    with pytest.raises(UserError, match=r"unknown recipe key 'teacher.temperature'"):
        load_recipe(DIGITS, ["teacher.temperature=2"])


RECIPES = sorted(p for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads(path: Path):
    r = load_recipe(path, ["train.epochs=1", "T=2"])
    assert r.train.epochs == 1 and r.T == 2
    assert r.description.strip() and "\n" not in r.description.strip()
    if r.teacher.checkpoint:  # points at the best.pt of a bundled full-precision recipe
        stem = Path(r.teacher.checkpoint).parent.name
        teacher = load_recipe(path.parent / f"{stem}.yaml")
        assert teacher.model.binary is False and teacher.data.name == r.data.name
    if r.model.init_from:
        assert load_recipe(path.parent / f"{Path(r.model.init_from).parent.name}.yaml").model.binary is False


def test_recipes_are_listed(capsys):
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert all(p.stem in listed for p in RECIPES)
