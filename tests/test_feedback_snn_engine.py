"""IDE and SPIDE in the engine: the recipes' runs report the solver in the epoch line and
metrics.json, resume exactly, and work with AMP (the fp16 grad scaler divided out before the
spiking backward), distillation and two data-parallel ranks."""

from __future__ import annotations

import copy
import json
import math
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from sj_bwsnn.cli import main, recipe_dirs
from sj_bwsnn.engine import Trainer, distributed, load_checkpoint, load_recipe
from sj_bwsnn.engine.objectives import CrossEntropyObjective, DistillationObjective
from sj_bwsnn.engine.methods import IDE, SPIDE
from sj_bwsnn.engine.precision import Precision
from sj_bwsnn.models.fsnn import fsnn_fc
from sj_bwsnn.neuron import IFNode

pytestmark = pytest.mark.usefixtures("one_thread")
IF2 = dict(v_threshold=2.0, v_reset=None)
TINY = ["T=5", "data.max_train=64", "data.max_test=32", "data.batch_size=32", "train.epochs=2",
        "model.kwargs.hidden=32", "spide.steps=20", "train.plot=false", "train.tensorboard=false",
        "train.deterministic=true"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


@pytest.mark.parametrize("name,keys", [("digits_ide", ("ide_residual", "ide_unconverged", "ide_iters")),
                                       ("digits_spide", ("spide_rate", "spide_saturated"))])
def test_recipe_reports_the_solver_and_resumes_exactly(tmp_path, capsys, name, keys):
    recipe = str(recipe_dirs()[0] / f"{name}.yaml")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", recipe, "--out", str(a), *_sets(TINY)]) == 0
    out = capsys.readouterr().out
    assert all(f" {k}=" in out for k in keys), out
    b.mkdir()
    Trainer(load_recipe(recipe, TINY), b).fit(until=1)
    assert main(["train", recipe, "--out", str(b), "--resume", *_sets(TINY)]) == 0
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    rows = json.loads((a / "metrics.json").read_text())
    assert rows == [dict(r, time_s=rows[i]["time_s"]) for i, r in
                    enumerate(json.loads((b / "metrics.json").read_text()))]
    assert all(math.isfinite(r[k]) for r in rows for k in keys)
    if name == "digits_ide":
        assert rows[-1]["ide_unconverged"] == 0.0 and rows[-1]["ide_residual"] < 1e-4


def step_grads(method, x, y, precision, loss_mul=1.0):
    torch.manual_seed(0)
    net = fsnn_fc(in_chans=1, img_size=8, hidden=64, num_classes=10, T=20, neuron=IFNode,
                  neuron_kwargs=IF2, v_init=0.5, dropout=0.0)
    p = net.begin(x)
    with torch.no_grad():
        rates = net.simulate(p)
    scale = precision.scaler.get_scale() if precision.scaler else 1.0
    a = method.attach(net, p, rates, lambda: scale) if isinstance(method, SPIDE) \
        else method.attach(net, p, rates[-1])
    (F.cross_entropy(net.readout(a), y) * scale).backward()
    return [q.grad.clone() for q in net.parameters()]


@pytest.mark.parametrize("method", [IDE(tol=1e-6), SPIDE(steps=50)], ids=["ide", "spide"])
def test_fp16_grad_scaler_is_divided_out(method):
    """The backward sees S * dL/da under fp16; the gradients must be S times the unscaled ones
    (SPIDE's spiking dynamics are not scale-invariant, so the scale is divided out first)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    plain = step_grads(method, x, y, Precision())
    scaled = step_grads(method, x, y, Precision("fp16", "cpu"))
    S = Precision("fp16", "cpu").scaler.get_scale()
    for a, b in zip(plain, scaled):
        torch.testing.assert_close(b, a * S, rtol=1e-4, atol=1e-6 * S)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("method", [IDE(), SPIDE(steps=30)], ids=["ide", "spide"])
def test_amp_steps_train(method, amp):
    torch.manual_seed(0)
    net = fsnn_fc(in_chans=1, img_size=8, hidden=32, num_classes=10, T=10, neuron=IFNode,
                  neuron_kwargs=IF2)
    before = copy.deepcopy(net.state_dict())
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss, logits = method.train_step(net, x, y, lambda z, t, _: F.cross_entropy(z.float(), t), opt,
                                     Precision(amp, "cpu"))
    assert math.isfinite(float(loss)) and logits.shape == (8, 10)
    after = net.state_dict()
    assert not torch.equal(before["feedback.weight"], after["feedback.weight"])
    assert not torch.equal(before["encoder.0.weight"], after["encoder.0.weight"])


@pytest.mark.parametrize("method", [IDE(), SPIDE(steps=30)], ids=["ide", "spide"])
def test_distillation_objective_trains_the_feedback_net(method):
    """KD from a teacher: the objective sees the student's logits and the batch's ``x``."""
    torch.manual_seed(0)
    net = fsnn_fc(in_chans=1, img_size=8, hidden=32, num_classes=10, T=10, neuron=IFNode,
                  neuron_kwargs=IF2)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    objective = DistillationObjective(teacher, 2.0, 1.0, CrossEntropyObjective())
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    first, _ = method.train_step(net, x, y, objective, opt)
    for _ in range(5):
        loss, _ = method.train_step(net, x, y, objective, opt)
    assert float(loss) < float(first)


# -- two data-parallel ranks (gloo) --------------------------------------------------------------

WORLD = 2


def dp_step(method, rank_seed: int, x, y):
    """One step of ``method`` on a float64 net (eval mode: BN on running statistics, no dropout,
    so half a batch and the whole batch normalise alike); the state dict after it."""
    torch.manual_seed(rank_seed)
    net = fsnn_fc(in_chans=1, img_size=8, hidden=16, num_classes=10, T=10, neuron=IFNode,
                  neuron_kwargs=IF2).double().eval()
    model, grad_sync = distributed.data_parallel(net, torch.device("cpu"), method.single_forward)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    method.train_step(model, x, y, lambda z, t, _: F.cross_entropy(z, t), opt,
                      Precision("off", "cpu", None, grad_sync))
    return copy.deepcopy(net.state_dict())


def dp_data():
    g = torch.Generator().manual_seed(1)
    return 2 * torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64), \
        torch.randint(0, 10, (8,), generator=g)


METHODS = {"ide": lambda: IDE(iters=60, tol=1e-12), "spide": lambda: SPIDE(steps=40)}


def _rank(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        x, y = dp_data()
        half = slice(rank * 4, rank * 4 + 4)
        torch.save({k: dp_step(f(), rank, x[half], y[half]) for k, f in METHODS.items()},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_on_half_batches_step_like_one_process(tmp_path):
    ctx = mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("2-rank gloo workers hung for 180 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    x, y = dp_data()
    for name, factory in METHODS.items():
        whole = dp_step(factory(), 0, x, y)
        alone = dp_step(factory(), 0, x[:4], y[:4])
        assert any(not torch.allclose(alone[k], whole[k]) for k in whole)
        for r, got in enumerate(ranks):
            for k in whole:
                torch.testing.assert_close(got[name][k], whole[k], rtol=0, atol=1e-9,
                                           msg=lambda m: f"{name}, rank {r}, {k}: {m}")
