"""Data parallelism on 2 CPU ranks (gloo).

In process (``torch.multiprocessing``, one spawn for all checks): :func:`average_gradients`
leaves every rank with the mean of the ranks' gradients, ``None`` handled as DDP does; one
training step of ``sltt`` (with clipping), online ``ottt``, ``dfa`` and ``bptt`` (DDP's wrapper)
on two ranks with half a batch each equals one single-process step on the whole batch (float64);
``opzo`` ranks, each with its own noise, end with the same feedback matrices and weights; a NaN
loss on one rank stops both ranks with the same error.
CLI: torchrun trains digits with ``bptt`` and ``sltt``; rank 0 alone writes and prints.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from conftest import HANG_GUARD_S
from sj_bwsnn.cli import main
from sj_bwsnn.engine import distributed, load_checkpoint
from sj_bwsnn.engine.methods import BPTT, DFA, OPZO, OTTT, SLTT
from sj_bwsnn.engine.precision import Precision
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.neuron import LIFNode

ROOT = Path(__file__).resolve().parent.parent
WORLD = 2

# name -> (method factory, clip_grad); clip 1e-3 is far below the gradient norm, so clipping
# before the sync (per-rank norms) would give another step than clipping the mean gradient
CASES = {"sltt_clipped": (SLTT, 1e-3), "ottt_online": (lambda: OTTT(0.5, online_update=True), None),
         "bptt_ddp": (BPTT, None), "dfa": (lambda: DFA(0.5, seed=3), None)}


def ce(logits, y, x):
    return F.cross_entropy(logits, y)


def tiny_model(seed: int) -> BWResNet:
    """A float64 BW-ResNet in eval mode (BN on running statistics, so a half batch and the whole
    batch normalise alike); ``seed`` sets weights and running statistics."""
    torch.manual_seed(seed)
    model = BWResNet((1, 1), (8, 16), stem="cifar", in_chans=1, num_classes=4, T=2,
                     neuron=LIFNode, neuron_kwargs=dict(tau=2.0, decay_input=True, v_reset=None))  # ottt: soft
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.double().eval()


def data():
    g = torch.Generator().manual_seed(1)
    return 2.0 * torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64), \
        torch.randint(0, 4, (8,), generator=g)


def one_step(name: str, model, x, y):
    """One training step of case ``name`` on ``model`` (synced over ranks when a group is up);
    returns the state dict after it."""
    factory, clip = CASES[name]
    method = factory()
    net, grad_sync = distributed.data_parallel(model, torch.device("cpu"), method.single_forward)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    method.train_step(net, x, y, ce, opt, Precision("off", "cpu", clip, grad_sync))
    functional.reset_net(model)
    return copy.deepcopy(model.state_dict())


def opzo_step(rank: int, x, y) -> dict:
    """One OPZO step with noise from the rank's own stream; its feedback matrices and weights."""
    model = tiny_model(seed=rank)
    method = OPZO(noise_scale=0.2, momentum=0.9)
    net, grad_sync = distributed.data_parallel(model, torch.device("cpu"), False)
    torch.manual_seed(100 + rank)
    method.train_step(net, x, y, ce, torch.optim.SGD(model.parameters(), lr=0.5),
                      Precision("off", "cpu", None, grad_sync))
    return {"M": [m.clone() for m in method.matrices], "state": copy.deepcopy(model.state_dict())}


def nan_on_one_rank(rank: int) -> str:
    """Train an epoch of digits where only rank 1's loss turns NaN, at the last step (``bptt``, DDP's
    wrapper): rank 0's losses all stay finite. The error each rank raised: every rank must stop
    with it, none may go on into a collective the other never joins."""
    from sj_bwsnn.cli import recipe_dirs
    from sj_bwsnn.engine import Trainer, load_recipe
    from sj_bwsnn.errors import UserError

    recipe = load_recipe(recipe_dirs()[0] / "digits_bwsnn.yaml", [
        "T=1", "data.max_train=256", "data.max_test=64", "data.batch_size=16", "train.epochs=1",
        "train.device=cpu", "train.plot=false", "train.tensorboard=false"])
    trainer = Trainer(recipe, None)
    train_step, calls = trainer.method.train_step, []

    def poisoned(*args, **kwargs):
        loss, logits = train_step(*args, **kwargs)
        calls.append(1)
        last = len(calls) == len(trainer.train_loader)
        return (loss * float("nan") if rank == 1 and last else loss), logits

    trainer.method.train_step = poisoned
    try:
        trainer.train_one_epoch()
    except UserError as e:
        return f"{e} ({len(trainer.train_loader)} steps)"
    return "no error"


def _rank(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))  # mismatch: error
    try:
        # average_gradients: float64 and float32, a gradient on one rank only, on none, frozen;
        # 8-byte buckets, so every tensor travels in its own bucket
        a = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        b = torch.nn.Parameter(torch.zeros(2))
        c = torch.nn.Parameter(torch.zeros(2))
        d = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
        a.grad = torch.arange(3, dtype=torch.float64) * (rank + 1)  # mean: 1.5 * arange
        b.grad = torch.tensor([4.0, -2.0]) if rank == 0 else None  # mean: [2, -1]
        d.grad = torch.full((2,), float(rank))  # frozen: left alone
        bucket, distributed.BUCKET_BYTES = distributed.BUCKET_BYTES, 8
        distributed.average_gradients([a, b, c, d])
        distributed.BUCKET_BYTES = bucket
        result = {"helper": {"a": a.grad, "b": b.grad, "c": c.grad, "d": d.grad}}
        # training steps: each rank starts from its own seed, data_parallel must bring rank 0's
        # weights and running statistics; rank r trains on half r of the batch
        x, y = data()
        half = slice(rank * len(y) // WORLD, (rank + 1) * len(y) // WORLD)
        for name in CASES:
            result[name] = one_step(name, tiny_model(seed=rank), x[half], y[half])
        result["opzo"] = opzo_step(rank, x[half], y[half])
        result["nan_on_rank1"] = nan_on_one_rank(rank)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run :func:`_rank` on 2 spawned processes; their results, rank by rank."""
    tmp = tmp_path_factory.mktemp("ranks")
    ctx = mp.spawn(_rank, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + HANG_GUARD_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2-rank gloo workers hung for {HANG_GUARD_S} s")
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def test_average_gradients_is_the_mean_over_ranks(ranks):
    for r, got in enumerate(ranks):
        h = got["helper"]
        torch.testing.assert_close(h["a"], 1.5 * torch.arange(3, dtype=torch.float64), rtol=0, atol=0)
        torch.testing.assert_close(h["b"], torch.tensor([2.0, -1.0]), rtol=0, atol=0)  # zeros on rank 1
        assert h["c"] is None  # no gradient anywhere: stays None, the optimizer skips it
        assert torch.equal(h["d"], torch.full((2,), float(r)))  # frozen: untouched


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_on_half_batches_step_like_one_process_on_the_batch(ranks, name):
    x, y = data()
    whole = one_step(name, tiny_model(seed=0), x, y)
    alone = one_step(name, tiny_model(seed=0), x[:len(y) // 2], y[:len(y) // 2])
    start = tiny_model(seed=0).state_dict()
    assert any(not torch.equal(start[k], whole[k]) for k in whole), "the step changed nothing"
    assert any(not torch.allclose(alone[k], whole[k]) for k in whole)  # without sync: another step
    for r, got in enumerate(ranks):
        for k in whole:
            torch.testing.assert_close(got[name][k], whole[k], rtol=0, atol=1e-9,
                                       msg=lambda m: f"rank {r}, {k}: {m}")


def torchrun(out: Path, sets: list[str], *extra: str) -> str:
    """``torchrun --nproc_per_node=2 -m sj_bwsnn train digits_bwsnn --out OUT --set ...``; its stdout
    (the run must succeed)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sj_bwsnn", "train", "digits_bwsnn", "--out", str(out), *extra]
    cmd += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # own session, so a hang kills torchrun's workers too, not just torchrun
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-2000:]
    return stdout


@pytest.mark.parametrize("method", ["bptt", "sltt"])  # DDP's wrapper / the trainer's grad sync
def test_torchrun_two_cpu_ranks(tmp_path, capsys, method):
    out = tmp_path / "run"
    # 4 steps per rank at lr 0.05: the model has learned enough that BN statistics matter
    sets = ["T=1", "data.max_train=128", "data.max_test=101", "data.batch_size=16", "optim.lr=0.05",
            "train.epochs=1", "train.device=cpu", "train.plot=false", f"train.method={method}"]
    stdout = torchrun(out, sets)
    assert stdout.count("epoch   1/1") == 1  # rank 0 only
    assert "x2 ranks" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 1
    ckpt = load_checkpoint(out / "last.pt")
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped model
    # the test set (101 images, sharded 51 + 50) counted once, and both ranks evaluated rank 0's
    # model (buffers broadcast first): a single-process eval of rank 0's checkpoint agrees
    capsys.readouterr()
    assert main(["eval", "digits_bwsnn", "--checkpoint", str(out / "last.pt"),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    printed = dict(kv.split("=") for kv in capsys.readouterr().out.split())
    assert printed["test_acc"] == f"{metrics[0]['test_acc']:.4f}"
    assert abs(float(printed["test_loss"]) - metrics[0]["test_loss"]) < 2e-4
    assert torch.isfinite(torch.tensor(metrics[0]["train_loss"]))


def test_opzo_ranks_share_their_feedback(ranks):
    """Each rank injects its own noise; averaging the M increments over ranks leaves every rank
    with the same M, hence the same top-down signals and the same step."""
    r0, r1 = ranks[0]["opzo"], ranks[1]["opzo"]
    for a, b in zip(r0["M"], r1["M"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for k in r0["state"]:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=1e-12)
    x, y = data()
    alone = opzo_step(0, x[:len(y) // 2], y[:len(y) // 2])  # rank 0's half without the average
    assert any(not torch.allclose(a, b) for a, b in zip(alone["M"], r0["M"]))


def test_a_nan_loss_on_one_rank_stops_every_rank_at_that_step(ranks):
    errors = [got["nan_on_rank1"] for got in ranks]
    assert errors[0] == errors[1]  # rank 0, whose own losses stayed finite, stops with rank 1
    assert "non-finite (nan/inf) at step 8 of epoch 1" in errors[0] and errors[0].endswith("(8 steps)")


def test_torchrun_resume_continues_every_rank_exactly(tmp_path):
    """A 2-epoch torchrun job stopped after epoch 1 (``--stop-after 1``) and resumed ends with
    exactly the metrics of an uninterrupted one. sltt_k draws its time step from each rank's own
    torch stream, so rank 1 must get its streams back too (before, only rank 0's were saved)."""
    sets = ["T=2", "data.max_train=128", "data.max_test=64", "data.batch_size=16", "optim.lr=0.05",
            "train.device=cpu", "train.plot=false", "train.tensorboard=false", "train.epochs=2",
            "train.method=sltt_k", "train.k=1"]
    torchrun(tmp_path / "whole", sets)
    stopped = torchrun(tmp_path / "cut", sets, "--stop-after", "1")
    assert "stopped after epoch 1 of 2 (--stop-after)" in stopped and "--resume" in stopped
    assert len(json.loads((tmp_path / "cut" / "metrics.json").read_text())) == 1
    assert len(load_checkpoint(tmp_path / "cut" / "last.pt")["rng_ranks"]) == 2
    torchrun(tmp_path / "cut", sets, "--resume")
    whole, cut = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "cut"))
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert len(whole) == 2
    assert [[row[k] for k in keys] for row in cut] == [[row[k] for k in keys] for row in whole]


def test_init_distributed_gives_each_rank_its_local_gpu(monkeypatch):
    """Under torchrun any CUDA device becomes cuda:LOCAL_RANK, also on the trainer's second call
    (the CLI joins the group first); CPU stays CPU."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # the CLI's call already joined
    assert distributed.init_distributed(torch.device("cuda", 0)) == torch.device("cuda", 1)
    assert distributed.init_distributed(torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.init_distributed(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_distributed(torch.device("cuda", 0)) == torch.device("cuda", 0)
