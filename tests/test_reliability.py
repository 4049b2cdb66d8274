"""Crash safety: SIGINT saves a resumable checkpoint, SIGKILL loses nothing that was saved, and
a resumed run ends with exactly the metrics of an uninterrupted one (CPU, fixed seed)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, wait_for_line

ARGS = ["--set", "train.epochs=3", "--set", "data.batch_size=16", "--set", "data.max_train=480", "--set", "train.deterministic=true",
        "--set", "train.plot=false", "--set", "train.tensorboard=false"]


def _start(out, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "sj_bwsnn", "train", "digits_bwsnn", "--out",
                             str(out), *ARGS, *extra], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _final(out):
    rows = json.loads((out / "metrics.json").read_text())
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _start(out, "--set", "train.checkpoint_every=7")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return _final(out)


def _resume(out, *extra):
    from conftest import run_cli

    proc = run_cli("train", "digits_bwsnn", "--out", str(out), "--resume", *ARGS, *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_sigint_saves_position_and_resume_matches_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--set", "train.checkpoint_every=7")
    wait_for_line(proc, "epoch   1/3")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Resume with: sj-bwsnn train digits_bwsnn --out" in err and "--resume" in err
    assert "Traceback" not in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["batch_in_epoch"] > 0 and ckpt["epoch"] >= 1  # saved mid-epoch, not at its end
    resumed = _resume(out, "--set", "train.checkpoint_every=7")
    assert "resuming" in resumed.stdout
    assert _final(out) == reference


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--set", "train.checkpoint_every=7")
    wait_for_line(proc, "epoch   1/3")
    time.sleep(0.8)  # inside epoch 2, after at least one periodic save with any luck
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    torch.load(out / "last.pt", weights_only=True)  # never truncated: loads whole
    _resume(out, "--set", "train.checkpoint_every=7")
    assert _final(out) == reference
