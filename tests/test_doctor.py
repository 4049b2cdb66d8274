"""sj-bwsnn doctor: the verdict and its exit code."""

from __future__ import annotations

import pytest
import torch

from sj_bwsnn.analysis import doctor
from sj_bwsnn.cli import main


def test_doctor_reports_and_can_train(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for label in ("python", "torch", "spikingjelly", "timm", "torchvision", "cupy", "cuda",
                  "neuron backend", "train step"):
        assert any(line.startswith(label) for line in out.splitlines()), label
    assert "verdict         ok: this setup can train" in out
    if not torch.cuda.is_available():
        assert "auto -> torch" in out and "skipped (no CUDA)" in out


def test_doctor_missing_package_exits_1_with_fix(monkeypatch, capsys):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version",
                        lambda name: (None, "ModuleNotFoundError") if name == "timm" else real(name))
    assert main(["doctor"]) == 1
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.startswith("verdict") and "missing timm: pip install timm" in verdict


def test_doctor_failing_train_step_exits_1(monkeypatch, capsys):
    def broken(device):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setattr(doctor, "_train_step", broken)
    assert main(["doctor"]) == 1
    assert "cannot train: a training step fails" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_doctor_cupy_kernel_on_gpu():
    pytest.importorskip("cupy")
    assert doctor._cupy_kernel().startswith("fused kernels match SpikingJelly's reference")
    rep = doctor.diagnose()
    assert ("neuron backend", "auto -> cupy (on cuda tensors)") in rep.lines


def test_doctor_lists_the_nir_packages(monkeypatch, capsys):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: (
        (None, "ModuleNotFoundError: No module named 'nir'") if name == "nir" else real(name)))
    monkeypatch.setattr(doctor, "_train_step", lambda device: 0.0)
    assert main(["doctor"]) == 0  # optional: NIR export only
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["nir", "not", "installed", "(pip", "install", "'sj-bwsnn[nir]')"]
               for line in lines)
    for label in ("nirtorch", "snntorch"):
        assert any(line.startswith(label) for line in lines), label
