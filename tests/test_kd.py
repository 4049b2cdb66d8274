"""Knowledge distillation: the loss, the once-per-batch teacher, teachers from files, init_from."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from sj_bwsnn.cli import recipe_dirs
from sj_bwsnn.data import DataInfo
from sj_bwsnn.engine import Trainer, build_model, load_recipe, save_checkpoint
from sj_bwsnn.engine.distill import FrameMean, build_teacher
from sj_bwsnn.engine.objectives import CrossEntropyObjective, DistillationObjective
from sj_bwsnn.errors import UserError

DIGITS = str(recipe_dirs()[0] / "digits_bwsnn.yaml")
INFO = DataInfo(10, 1, (8, 8))


class Counting(torch.nn.Module):
    def __init__(self, k: int = 10):
        super().__init__()
        self.lin, self.calls = torch.nn.Linear(64, k), 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x.flatten(1))


def test_kd_loss_matches_the_formula():
    torch.manual_seed(0)
    x, y, zs = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,)), torch.randn(6, 10)
    teacher = Counting()
    zt = teacher(x).detach()
    tau, w = 3.0, 0.7
    kd = DistillationObjective(teacher, tau, w, CrossEntropyObjective())
    pt, ps = torch.softmax(zt / tau, 1), torch.softmax(zs / tau, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    ce = -torch.log_softmax(zs, 1)[torch.arange(6), y].mean()
    assert torch.allclose(kd(zs, y, x), w * tau ** 2 * kl + (1 - w) * ce, atol=1e-5)
    only_ce = DistillationObjective(teacher, tau, 0.0, CrossEntropyObjective())
    assert torch.allclose(only_ce(zs, y, x), ce, atol=1e-6)
    # gradients reach the student logits only
    zs.requires_grad_(True)
    kd(zs, y, x).backward()
    assert zs.grad.abs().sum() > 0 and teacher.lin.weight.grad is None


def test_teacher_runs_once_per_batch():
    teacher = Counting()
    kd = DistillationObjective(teacher, 2.0, 1.0, CrossEntropyObjective())
    x, y, zs = torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), torch.randn(4, 10)
    for _ in range(3):  # e.g. SLTT: once per time step, same x
        kd(zs, y, x)
    assert teacher.calls == 1
    kd(zs, y, x.clone())  # a new batch (another object)
    assert teacher.calls == 2 and kd.teacher_calls == 2


def test_timm_teacher_of_other_classes_is_refused_when_built(tmp_path):
    """The one class check: at build time (the loss does not check again)."""
    net = timm.create_model("test_resnet", num_classes=5, in_chans=1)
    torch.save(net.state_dict(), tmp_path / "t.pth")
    recipe = load_recipe(DIGITS, [f"teacher.checkpoint={tmp_path / 't.pth'}",
                                  "teacher.model=test_resnet"])
    with pytest.raises(UserError, match="predicts 5 classes but the student's data has 10") as e:
        build_teacher(recipe, INFO, torch.device("cpu"))
    assert "\n" not in str(e.value)


def _fp_checkpoint(tmp_path, T=2):
    fp = load_recipe(DIGITS, ["model.binary=false", f"T={T}"])
    model = build_model(fp, INFO)
    path = tmp_path / "fp.pt"
    save_checkpoint(path, {"recipe": fp.to_dict(), "model": model.state_dict()})
    return path, model


def test_teacher_from_our_checkpoint(tmp_path):
    path, model = _fp_checkpoint(tmp_path)
    student = load_recipe(DIGITS, [f"teacher.checkpoint={path}", "teacher.T=3"])
    teacher = build_teacher(student, INFO, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher.T == 3 and teacher.binary is False
    x = torch.randn(4, 1, 8, 8)
    model.T = 3
    model.eval()
    assert torch.allclose(teacher(x), model(x))
    wrong = dataclasses.replace(student, teacher=dataclasses.replace(student.teacher, model="resnet18"))
    with pytest.raises(UserError, match="leave teacher.model null"):
        build_teacher(wrong, INFO, torch.device("cpu"))
    with pytest.raises(UserError, match="predicts 10 classes but the student's data has 3"):
        build_teacher(student, DataInfo(3, 1, (8, 8)), torch.device("cpu"))


def test_teacher_follows_the_students_memory_format(tmp_path):
    """train.channels_last puts the teacher's conv weights in channels_last too (on the 2-core CPU a
    contiguous teacher fed channels_last batches made a student epoch about 11% slower), and its
    logits are the contiguous teacher's."""
    path, _ = _fp_checkpoint(tmp_path)
    student = load_recipe(DIGITS, [f"teacher.checkpoint={path}"])
    plain = build_teacher(student, INFO, torch.device("cpu"))
    cl = build_teacher(student, INFO, torch.device("cpu"), torch.channels_last)
    # only where the two layouts differ: more than one input channel and a kernel wider than 1x1
    convs = [m.weight for m in cl.modules() if isinstance(m, torch.nn.Conv2d)
             and m.weight.shape[1] > 1 and m.weight.shape[-2:].numel() > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last)
                         and not w.is_contiguous() for w in convs)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), plain(x), atol=1e-5)


def test_our_teacher_on_frames_takes_the_students_T(tmp_path):
    """Frames set T; a teacher trained at T=2 distilling a T=5 student on [5, N, ...] frames is
    rebuilt with T=5, so the [N, T, ...] shape check does not mistake a batch of N=2 for time."""
    path, model = _fp_checkpoint(tmp_path, T=2)
    student = load_recipe(DIGITS, [f"teacher.checkpoint={path}", "T=5"])
    teacher = build_teacher(student, DataInfo(10, 1, (8, 8), frames=True), torch.device("cpu"))
    assert teacher.T == 5
    frames = torch.randn(5, 2, 1, 8, 8)
    model.T = 5  # the same weights; T is read from the frames either way
    model.eval()
    with torch.no_grad():
        assert torch.allclose(teacher(frames), model(frames))


def test_timm_teacher_from_state_dict(tmp_path):
    net = timm.create_model("test_resnet", num_classes=10, in_chans=2)
    torch.save(net.state_dict(), tmp_path / "t.pth")
    recipe = load_recipe(DIGITS, [f"teacher.checkpoint={tmp_path / 't.pth'}",
                                  "teacher.model=test_resnet"])
    frames = DataInfo(10, 2, (16, 16), frames=True)
    teacher = build_teacher(recipe, frames, torch.device("cpu"))
    assert isinstance(teacher, FrameMean)  # a static teacher sees the time-averaged frames
    x = torch.randn(3, 2, 2, 16, 16)  # [T, N, C, H, W]
    net.eval()
    assert torch.allclose(teacher(x), net(x.mean(0)), atol=1e-5)
    anonymous = load_recipe(DIGITS, [f"teacher.checkpoint={tmp_path / 't.pth'}"])
    with pytest.raises(UserError, match="teacher.model is required"):
        build_teacher(anonymous, frames, torch.device("cpu"))


def test_two_stage_init_and_kd_training(tmp_path):
    path, model = _fp_checkpoint(tmp_path, T=1)
    recipe = load_recipe(DIGITS, [f"model.init_from={path}", f"teacher.checkpoint={path}",
                                  "teacher.tau=2", "teacher.weight=0.5", "T=1", "train.epochs=1",
                                  "data.max_train=128", "data.max_test=64", "train.plot=false",
                                  "train.tensorboard=false"])
    trainer = Trainer(recipe, tmp_path)
    assert trainer.model.binary
    for k, v in model.state_dict().items():  # latent binary weights start from the FP weights
        assert torch.equal(trainer.model.state_dict()[k], v), k
    assert isinstance(trainer.objective, DistillationObjective)
    trainer.fit()
    assert trainer.objective.teacher_calls == 2  # 128 images / batch 64
    with pytest.raises(UserError, match="model.init_from: checkpoint not found: .*nope.pt"):
        Trainer(dataclasses.replace(recipe, model=dataclasses.replace(
            recipe.model, init_from=str(tmp_path / "nope.pt"))), tmp_path)


def test_torchvision_teacher_and_its_class_check(tmp_path):
    import torchvision

    net = torchvision.models.get_model("mobilenet_v3_small", num_classes=5)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "tv.pth")  # a training checkpoint
    sets = [f"teacher.checkpoint={tmp_path / 'tv.pth'}", "teacher.model=torchvision.mobilenet_v3_small"]
    recipe = load_recipe(DIGITS, sets)
    rgb = DataInfo(5, 3, (32, 32))
    teacher = build_teacher(recipe, rgb, torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(teacher(x), net.eval()(x), atol=1e-5)
    with pytest.raises(UserError, match="predicts 5 classes but the student's data has 10"):
        build_teacher(recipe, DataInfo(10, 3, (32, 32)), torch.device("cpu"))
