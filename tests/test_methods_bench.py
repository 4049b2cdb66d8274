"""bench/memory.py: refuses cleanly without CUDA; its code path runs on the CPU (--tiny)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "memory.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_refuses_without_cuda(capsys, tmp_path):
    assert load_bench().main(["--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "CUDA" in err and "\n" not in err
    assert not (tmp_path / "m.json").exists()


def test_tiny_cpu_run_writes_times_and_saved_memory_but_no_cuda_peak(tmp_path):
    out = tmp_path / "m.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert load_bench().main(["--device", "cpu", "--tiny", "--methods", "sltt", "ottt",
                                  "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert [(r["method"], r["T"]) for r in report["rows"]] == [
        ("sltt", 1), ("sltt", 2), ("ottt", 1), ("ottt", 2)]
    assert all(r["step_ms"] > 0 and r["peak_mib"] is None and r["saved_mib"] > 0 for r in report["rows"])
    saved = {(r["method"], r["T"]): r["saved_mib"] for r in report["rows"]}
    assert saved["sltt", 2] == saved["sltt", 1] and saved["ottt", 2] == saved["ottt", 1]  # flat in T
    assert report["target"] == {}  # the target is at T=6, not measured here: nothing claimed


def test_timed_steps_run_outside_the_saved_tensor_hooks(tmp_path, monkeypatch):
    """Only the extra, untimed step runs under the meter (its hooks cost host time)."""
    import sj_bwsnn.analysis.memory as memory

    bench = load_bench()
    inside = []

    class Meter(memory.SavedActivationMeter):
        def __enter__(self):
            inside.append(True)
            return super().__enter__()

        def __exit__(self, *exc):
            inside.append(False)
            return super().__exit__(*exc)

    real = bench.make_method

    def make_method(name):
        method = real(name)
        step = method.train_step
        method.train_step = lambda *a, **k: (inside.append("step"), step(*a, **k))[1]
        return method

    monkeypatch.setattr(memory, "SavedActivationMeter", Meter)
    monkeypatch.setattr(bench, "make_method", make_method)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert bench.main(["--device", "cpu", "--tiny", "--methods", "bptt", "--T", "1", "--warmup", "1",
                           "--steps", "2", "--out", str(tmp_path / "m.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert inside == ["step", "step", "step", True, "step", False]  # warm-up, 2 timed, then the meter's
    (row,) = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert len(row["step_times_ms"]) == 2 and row["saved_mib"] > 0 and row["warmup"] == 1


def test_a_failing_point_is_a_row_and_the_rest_still_runs(tmp_path, monkeypatch):
    bench = load_bench()

    def measure(name, T, args, device):
        if T == 1:
            raise RuntimeError("CUDA out of memory.\nmore")
        return {"method": name, "T": T, "step_ms": 1.0, "saved_mib": 2.0, "peak_mib": None}

    monkeypatch.setattr(bench, "measure", measure)
    out = tmp_path / "m.json"
    assert bench.main(["--device", "cpu", "--methods", "sltt", "--T", "1", "6", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["target"] == {}  # T=1 missing: no ratio claimed
    assert report["rows"][0] == {"method": "sltt", "T": 1, "error": "RuntimeError: CUDA out of memory."}
    assert report["rows"][1]["T"] == 6
    assert "versions" in report["environment"] and "git_commit" in report["environment"]
