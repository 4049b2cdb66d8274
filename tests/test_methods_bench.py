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
