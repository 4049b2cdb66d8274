"""bench/_common.py: the preflight, the environment record, partial JSON, host issue time; lif.py's floor."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402


def test_byte_floor_counts_the_fp32_v_last_write():
    lif = importlib.import_module("lif")
    M = 64 * 128 * 32 * 32
    assert lif.byte_floor_bytes(2, 4, M) == (6 * 2 * 4 + 4) * M == 52 * M  # fp32, T=2
    assert lif.byte_floor_bytes(2, 2, M) == 28 * M  # bf16: x, s, H, grad_s, H, grad_x at 2 B + v_last at 4 B
    assert lif.byte_floor_bytes(8, 4, 1) == 6 * 8 * 4 + 4
    # the old floor (6*T*M elements) was 8% low in fp32 and 14% low in bf16 at T=2
    assert round(1 - 48 / 52, 2) == 0.08 and round(1 - 24 / 28, 2) == 0.14


def test_recorder_keeps_every_row_when_the_run_fails(tmp_path):
    path = tmp_path / "r.json"
    rec = _common.Recorder(path, "bench/x.py", T=2)
    assert json.loads(path.read_text())["complete"] is False  # written before the first row
    rec.add(dict(model="a", median_ms=1.0))
    try:
        raise RuntimeError("CUDA out of memory.\nTried to allocate ...")
    except RuntimeError as exc:
        rec.fail(exc)
    data = json.loads(path.read_text())
    assert data["rows"] == [dict(model="a", median_ms=1.0)]
    assert data["complete"] is False and data["error"] == "RuntimeError: CUDA out of memory."
    rec.finish()
    assert json.loads(path.read_text())["complete"] is False  # a noted failure stays a failure
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing behind


def test_recorder_finish_marks_complete_and_holds_the_environment(tmp_path):
    rec = _common.Recorder(tmp_path / "r.json", "bench/x.py", rows_key="results")
    rec.add(dict(x=1))
    rec.finish(target={"ok": True})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["complete"] is True and data["results"] == [dict(x=1)] and data["target"] == {"ok": True}
    env = data["environment"]
    for key in ("device", "gpu", "host_cpu", "torch_threads", "versions", "git_commit", "cudnn_benchmark", "tf32"):
        assert key in env, key
    for key in ("python", "torch", "cuda", "cudnn", "triton", "torchvision", "spikingjelly", "timm", "cupy"):
        assert key in env["versions"], key
    assert env["versions"]["torch"] == torch.__version__
    if not torch.cuda.is_available():
        assert env["gpu"] is None


def test_versions_survive_a_package_without_dist_info(monkeypatch):
    fake = types.ModuleType("fake_nodist")  # imports, has no __version__, no dist-info
    monkeypatch.setitem(sys.modules, "fake_nodist", fake)
    assert _common._version("fake_nodist") == "unknown (no dist-info)"
    assert _common._version("surely_not_installed_pkg_xyz") is None

    def broken(name):
        raise _common.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_common.metadata, "version", broken)
    v = _common.versions()  # spikingjelly has no __version__: its dist-info is what is missing here
    assert v["spikingjelly"] == "unknown (no dist-info)" and v["torch"] == torch.__version__


def test_check_imports_names_the_wheel_to_bring(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ModuleNotFoundError
    problems = _common.check_imports(["torch", "h5py"])
    assert len(problems) == 1 and "\n" not in problems[0]
    assert problems[0].startswith("cannot import h5py") and "bring the wheel: h5py" in problems[0]


def test_preflight_refuses_a_session_wide_forced_sj_implementation(monkeypatch, capsys):
    monkeypatch.setenv("SJ_LIF_CUDA_IMPLEMENTATION", "torch")
    with pytest.raises(SystemExit) as exit_:
        _common.preflight("bench/x.py", cuda=False)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench/x.py: unset SJ_LIF_CUDA_IMPLEMENTATION=torch") and "\n" not in err
    monkeypatch.setenv("SJ_LIF_CUDA_IMPLEMENTATION", "auto")
    _common.preflight("bench/x.py", cuda=False)  # auto is what the benchmarks want


def test_preflight_missing_module_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "loguru", None)
    with pytest.raises(SystemExit) as exit_:
        _common.preflight("bench/x.py", cuda=False, modules=["loguru"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot import loguru" in err and "bring the wheel: loguru" in err


def test_host_issue_time_runs_short_bursts_from_an_idle_device():
    events = []
    _common.host_issue_us(lambda: events.append("call"), bursts=4, burst=3, sync=lambda: events.append("sync"))
    # every burst of 3 calls starts right after a synchronisation, and the last one is waited for
    assert events == (["sync"] + ["call"] * 3) * 4 + ["sync"]
    out = _common.host_issue_us(lambda: None, bursts=5, burst=2, sync=lambda: None)
    assert len(out["per_burst_us"]) == 5 and out["min_us"] <= out["median_us"]


def test_summary_keeps_every_rep_and_sane_quantiles():
    s = _common.summary_ms([3.0, 1.0, 2.0])
    assert s["times_ms"] == [3.0, 1.0, 2.0] and s["median_ms"] == 2.0 and s["min_ms"] == 1.0
    assert 1.0 <= s["p10_ms"] <= s["median_ms"] <= s["p90_ms"] <= 3.0
    assert _common.summary_ms([5.0])["p90_ms"] == 5.0
