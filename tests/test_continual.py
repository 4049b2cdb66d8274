"""Continual runs: ACC / BWT on a hand-made matrix, the task data, the 2-task toy (HLOP keeps task
1, the baseline forgets it), whole recipes through the CLI, resume mid-sequence after SIGINT and
SIGKILL, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import HANG_GUARD_S, ROOT, wait_for_line
from sj_bwsnn.continual import plan, summarize
from sj_bwsnn.continual.metrics import format_matrix
from sj_bwsnn.data.continual import task_sequence
from sj_bwsnn.engine.recipe import recipe_from_dict
from sj_bwsnn.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_acc_and_bwt_on_a_hand_made_matrix():
    m = [[0.90],
         [0.80, 0.95],
         [0.70, 0.85, 0.99]]
    s = summarize(m)
    assert s["acc"] == pytest.approx((0.70 + 0.85 + 0.99) / 3)
    # BWT: mean over the first two tasks of (final - just learned)
    assert s["bwt"] == pytest.approx(((0.70 - 0.90) + (0.85 - 0.95)) / 2)
    assert summarize(m[:1]) == {"acc_matrix": [[0.90]], "acc": 0.90, "bwt": None}
    assert summarize([[0.9, 0.8, 0.7]])["bwt"] is None  # joint: one row, no BWT
    assert summarize([])["acc"] is None
    text = format_matrix(s)
    assert "after T3" in text and "99.0" in text and "ACC 84.67  BWT -15.00" in text


def test_plan_of_stages():
    c = recipe_from_dict({"continual": {"protocol": "split", "tasks": 3, "replay": 5}}).continual
    assert [(s.kind, s.task) for s in plan(c, joint=False)] == [
        ("task", 0), ("task", 1), ("replay", 1), ("task", 2), ("replay", 2)]
    assert [(s.kind, s.task) for s in plan(c, joint=True)] == [("joint", 2)]


def test_task_data():
    r = recipe_from_dict({"continual": {"protocol": "split", "tasks": 5}})
    seq = task_sequence(r)
    assert seq.outputs == 10 and seq.task_classes[2] == [4, 5] and seq.head(2) == slice(4, 6)
    labels = {int(seq.test_set(2)[i][1]) for i in range(len(seq.test_set(2)))}
    assert labels == {4, 5}  # positions in the output layer: task 2's head
    mem = seq.memory_set(range(2), 3)
    assert sorted(int(mem[i][1]) for i in range(len(mem))) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    r = recipe_from_dict({"continual": {"protocol": "permuted", "tasks": 3, "image_size": 16}})
    seq = task_sequence(r)
    x0, y0 = seq.train_set(0)[5]
    x1, y1 = seq.train_set(1)[5]
    assert x0.shape == (1, 16, 16) and int(y0) == int(y1)
    # the same pixels, another order: a permutation of one resized image
    assert torch.equal(torch.sort(x0.flatten()).values, torch.sort(x1.flatten()).values)
    assert not torch.equal(x0, x1)
    again = task_sequence(recipe_from_dict({"seed": 7, "continual": {
        "protocol": "permuted", "tasks": 3, "image_size": 16}}))
    assert torch.equal(again.train_set(1)[5][0], x1)  # tasks fixed by task_seed, not seed


def test_two_task_toy_hlop_keeps_task_one_where_the_baseline_forgets():
    """Bars from ``python bench/continual.py --toy --seeds 10``
    (bench/results/continual_toy_cpu_20261202T043839Z.json). Seeds 5 and 8 of this small toy do not
    learn task 1 in its 8 epochs (41 % and 36 %), so the test runs seed 0 (task 1: 94.7 %; HLOP's BWT
    +0.7, task 2 93.6 %; the baseline's BWT -36.7). Over the 8 seeds that learn task 1: task 1
    82.7-94.9 %, HLOP's BWT -2.0 to +0.7 and task 2 88.9-93.6 %, the baseline's BWT -36.7 to -12.0;
    the bars sit outside those ranges."""
    from _continual_util import toy_run

    hlop = toy_run("hlop", seed=0)
    none = toy_run("none", seed=0)
    assert hlop["acc_matrix"][0][0] > 0.7 and none["acc_matrix"][0][0] > 0.7  # task 1 learnt
    assert hlop["bwt"] > -0.05
    assert none["bwt"] < -0.06
    assert hlop["acc_matrix"][1][1] > 0.7  # HLOP still learns task 2


# -- the CLI ---------------------------------------------------------------------------------------

SMALL = ["--set", "continual.tasks=3", "--set", "continual.epochs_per_task=2",
         "--set", "data.batch_size=16", "--set", "train.deterministic=true",
         "--set", "train.checkpoint_every=5", "--set", "model.kwargs.hidden=[32,32]"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore",
            "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _start(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "sj_bwsnn", "train", "digits_hlop_split",
                             "--out", str(out), *SMALL, *extra], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _final(out):
    doc = json.loads((out / "metrics.json").read_text())
    return doc["continual"], [{k: v for k, v in r.items() if k != "time_s"} for r in doc["epochs"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _start(out)
    stdout, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 0, err
    return out, stdout


def test_split_recipe_end_to_end(reference):
    out, stdout = reference
    assert "continual: split x3 tasks, protect hlop" in stdout
    assert stdout.count("accuracy (%) on each task") == 3 and "after T3" in stdout
    assert "final ACC=" in stdout and "BWT=" in stdout
    cont, rows = _final(out)
    assert cont["complete"] and cont["protect"] == "hlop" and len(cont["acc_matrix"]) == 3
    assert [len(r) for r in cont["acc_matrix"]] == [1, 2, 3]
    assert cont["acc"] == pytest.approx(np.mean(cont["acc_matrix"][-1]))
    assert [(r["task"], r["epoch"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1),
                                                       (3, 2)]
    assert (out / "continual.png").stat().st_size > 1000 and not (out / "best.pt").exists()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["continual"]["stage"] == 3 and len(ckpt["continual"]["protect"]["spaces"]) == 2


def _resume(out):
    from conftest import run_cli

    proc = run_cli("train", "digits_hlop_split", "--out", str(out), "--resume", *SMALL,
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_sigint_mid_sequence_then_resume_matches_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    wait_for_line(proc, "task  2/3 task   epoch   1/2")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["continual"]["stage"] == 1 and ckpt["batch_in_epoch"] > 0  # inside task 2
    resumed = _resume(out)
    assert "resuming" in resumed.stdout and "task 2/3" in resumed.stdout
    assert _final(out) == _final(reference[0])


def test_sigkill_then_resume_matches_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    wait_for_line(proc, "task  2/3")
    proc.kill()
    proc.communicate(timeout=60)
    torch.load(out / "last.pt", weights_only=True)  # never truncated
    _resume(out)
    assert _final(out) == _final(reference[0])


def test_permuted_mnist_recipe_on_a_tiny_idx_tree(tmp_path, cli):
    """pmnist_hlop end to end on random 28x28 images in MNIST's file format (MNIST itself is not
    on the test machines)."""
    from _mnist_util import write_idx_tree

    write_idx_tree(tmp_path / "mnist", n_train=40, n_test=20)
    proc = cli("train", "pmnist_hlop", "--out", str(tmp_path / "run"),
               "--set", f"data.root={tmp_path / 'mnist'}", "--set", "continual.tasks=2",
               "--set", "model.kwargs.hidden=[32,32]", "--set", "T=2",
               "--set", "continual.hlop.neurons=[[8,8,8],4]", "--set", "train.plot=false",
               env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    cont, _ = _final(tmp_path / "run")
    assert [len(r) for r in cont["acc_matrix"]] == [1, 2] and cont["bwt"] is not None


def test_bad_continual_input_is_one_line_from_the_cli(cli, tmp_path):
    proc = cli("train", "digits_hlop_split", "--out", str(tmp_path / "run"),
               "--set", "continual.protect=ewk")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "continual.protect: unknown method 'ewk'" in \
        proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("sets,message", [
    (["continual.hlop.neurons=[[1,2,3]]"], "continual.hlop.neurons entry 1: 3 values for 2 "
                                           "protected layers"),
    (["continual.tasks=6", "continual.classes_per_task=2"], "6 tasks of 2 classes need 12"),
    (["continual.protocol=rotated"], "continual.protocol' must be permuted, split or null"),
    (["train.ema_decay=0.99"], "train.ema_decay must be null in continual runs"),
])
def test_bad_continual_input_is_a_user_error(tmp_path, sets, message):
    """The same errors in process (the CLI turns a UserError into one line, as above)."""
    from sj_bwsnn.cli import find_recipe
    from sj_bwsnn.continual import ContinualTrainer
    from sj_bwsnn.engine import load_recipe

    with pytest.raises(UserError) as err:
        ContinualTrainer(load_recipe(find_recipe("digits_hlop_split"), sets), tmp_path / "run")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stop_after_is_refused_for_continual_runs(cli, tmp_path):
    proc = cli("train", "digits_hlop_split", "--out", str(tmp_path / "run"), "--stop-after", "1")
    assert proc.returncode == 2 and "--stop-after applies to ordinary runs" in proc.stderr


def test_the_trainer_hooks_are_generic():
    """The runner changes training only through ``Precision.grad_transforms`` and
    ``Trainer.build_data``: an ordinary run has neither a continual key nor a transform."""
    from sj_bwsnn.engine import Trainer

    t = Trainer(recipe_from_dict({"train": {"epochs": 1}, "data": {"max_train": 8}}))
    assert t.precision.grad_transforms == [] and "continual" not in t.state()
    with pytest.raises(UserError, match="ordinary run, not of a continual one"):
        from sj_bwsnn.continual import ContinualTrainer

        ContinualTrainer(recipe_from_dict({"continual": {"protocol": "split", "tasks": 5,
                                                         "protect": "none"}})).load_state(
            t.state(), "x.pt")
