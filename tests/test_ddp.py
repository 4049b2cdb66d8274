"""DDP: torchrun with 2 CPU processes on gloo trains digits; rank 0 alone writes and prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from sj_bwsnn.cli import main
from sj_bwsnn.engine import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_torchrun_two_cpu_ranks(tmp_path, capsys):
    out = tmp_path / "run"
    sets = ["T=1", "data.max_train=128", "data.max_test=101", "data.batch_size=32",
            "train.epochs=1", "train.device=cpu", "train.plot=false"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sj_bwsnn", "train", "digits_bwsnn", "--out", str(out)]
    cmd += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # own session, so a hang kills torchrun's workers too, not just torchrun
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-2000:]
    assert stdout.count("epoch   1/1") == 1  # rank 0 only
    assert "x2 ranks" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 1
    ckpt = load_checkpoint(out / "last.pt")
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped model
    # the test set (101 images, sharded 51 + 50) counted once: a single-process eval agrees
    capsys.readouterr()
    assert main(["eval", "digits_bwsnn", "--checkpoint", str(out / "last.pt"),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    assert f"test_acc={metrics[0]['test_acc']:.4f}" in capsys.readouterr().out
    assert torch.isfinite(torch.tensor(metrics[0]["train_loss"]))
