"""bench/gpu_check.py's CPU parts: arguments, the plan, budgets (a part that overruns), the table."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

gc = importlib.import_module("gpu_check")


def test_arguments_and_plan(tmp_path):
    args = gc.parse_args([])
    parts = gc.plan(args, tmp_path, "GPU_20260101T000000Z")
    assert [p.name for p in parts] == ["imports", "doctor", "pytest_gpu", "lif", "memory", "train_step", "spikformer"]
    assert sum(p.budget_s for p in parts) == gc.DEFAULT_TOTAL <= 8 * 60
    lif = next(p for p in parts if p.name == "lif")
    assert lif.json == tmp_path / "lif_GPU_20260101T000000Z.json" and str(lif.json) in lif.argv
    pytest_part = next(p for p in parts if p.name == "pytest_gpu")
    assert "tests/test_neuron_cupy_gpu.py" in pytest_part.argv and "tests/test_cli.py" not in pytest_part.argv
    train = next(p for p in parts if p.name == "train_step")
    compiled = train.argv[train.argv.index("--compile-models") + 1:train.argv.index("--out")]
    assert compiled == ["bw_resnet18", "sj_spiking_resnet18"]  # quick mode: two compiles, not four

    half = gc.plan(gc.parse_args(["--budget", "235", "--parts", "lif", "memory", "train_step",
                                  "--skip", "memory"]), tmp_path, "t")
    assert [(p.name, p.budget_s) for p in half] == [("lif", 37.5), ("train_step", 60.0)]
    for bad in (["--budget", "0"], ["--parts", "lif", "--skip", "lif"], ["--parts", "nope"]):
        with pytest.raises(SystemExit):
            gc.parse_args(bad)


def test_dry_run_prints_the_plan(capsys):
    assert gc.main(["--dry-run", "--parts", "lif", "memory"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("lif") and "bench/lif.py --reps 10" in out[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_refuses_without_cuda(capsys, tmp_path):
    assert gc.main(["--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a CUDA GPU" in err and "\n" not in err and not list(tmp_path.iterdir())


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def test_a_part_that_overruns_is_killed_and_keeps_its_json(tmp_path):
    """The slow part writes a partial JSON, then hangs past its budget: it is killed (with its child),
    its JSON stays, the next part still runs, and the summary on disk lists both."""
    partial = tmp_path / "slow.json"
    slow_code = ("import json, subprocess, sys, time\n"
                 f"json.dump({{'complete': False, 'rows': [{{'x': 1}}]}}, open({str(partial)!r}, 'w'))\n"
                 "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
                 f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(child.pid))\n"
                 "print('wrote partial', flush=True)\n"
                 "time.sleep(120)\n")
    parts = [gc.Part("slow", [sys.executable, "-c", slow_code], budget_s=6, json=partial),
             gc.Part("fast", [sys.executable, "-c", "print('fine')"], budget_s=30),
             gc.Part("missing", [sys.executable, "-c", "pass"], budget_s=5, skip_reason="pytest is not installed")]
    summary_path = tmp_path / "summary.json"
    t0 = time.monotonic()
    summary = gc.run_parts(parts, 60, {}, summary_path, tmp_path / "logs", echo=False)
    assert time.monotonic() - t0 < 50
    slow, fast, missing = summary["parts"]
    assert slow["status"] == "timeout" and slow["json_written"] and slow["json_complete"] is False
    assert "wrote partial" in slow["tail"] and "killed after" in slow["reason"]
    assert json.loads(partial.read_text())["rows"] == [{"x": 1}]
    assert fast["status"] == "ok" and fast["rc"] == 0 and fast["tail"] == ["fine"]
    assert fast["timeout_s"] == 30  # slow used all of its own budget: nothing to carry over
    assert missing["status"] == "skipped" and missing["reason"] == "pytest is not installed"
    assert json.loads(summary_path.read_text())["parts"] == json.loads(json.dumps(summary["parts"]))
    assert (tmp_path / "logs" / "slow.log").read_text().startswith("wrote partial")
    child = int((tmp_path / "child.pid").read_text())
    for _ in range(50):  # the part's own child went with it (its process group was killed)
        if not _alive(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the overrunning part's child process survived")


def test_unused_time_carries_over_and_the_total_is_never_exceeded(tmp_path):
    quick = [sys.executable, "-c", "pass"]
    parts = [gc.Part("a", quick, budget_s=20), gc.Part("b", quick, budget_s=5)]
    summary = gc.run_parts(parts, 100, {}, None, tmp_path, echo=False)
    a, b = summary["parts"]
    assert a["status"] == b["status"] == "ok" and b["timeout_s"] > 5  # a's slack went to b
    tight = gc.run_parts([gc.Part("c", quick, budget_s=50)], 3, {}, None, tmp_path, echo=False)
    assert tight["parts"][0]["timeout_s"] <= 3
    spent = gc.run_parts([gc.Part("d", quick, budget_s=5)], 0.5, {}, None, tmp_path, echo=False)
    assert spent["parts"][0]["status"] == "skipped" and "total budget" in spent["parts"][0]["reason"]


def test_a_failed_import_check_stops_the_run(tmp_path):
    parts = [gc.Part("imports", [sys.executable, "-c", "print('check_imports: cannot import h5py'); raise SystemExit(2)"],
                     budget_s=20),
             gc.Part("lif", [sys.executable, "-c", "pass"], budget_s=20)]
    summary = gc.run_parts(parts, 60, {}, None, tmp_path, echo=False)
    imports, lif = summary["parts"]
    assert imports["status"] == "failed" and imports["rc"] == 2 and "cannot import h5py" in imports["reason"]
    assert lif["status"] == "skipped" and "import check failed" in lif["reason"]


def _lif_rows(x_floor_fp32, host_us):
    rows = []
    for dtype, xf in (("float32", x_floor_fp32), ("bfloat16", 1.2)):
        for T in (2, 4, 8):
            rows.append(dict(impl="sj_bwsnn fused CuPy kernel", dtype=dtype, T=T, median_ms=1.0, x_floor=xf,
                             host_issue_us=host_us))
            rows.append(dict(impl="sj_bwsnn kernels only", dtype=dtype, T=T, median_ms=0.5, x_floor=1.05))
    rows.append(dict(impl="SJ 2.0 auto", dtype="float32", T=4, median_ms=1.02, ran="SJ op: triton"))
    return rows


def _step(model, compiled, ms, key="compiled"):
    row = dict(model=model, median_ms=ms) if key == "compiled" else dict(model=model, ms_median=ms)
    row.update({"compiled": compiled} if key == "compiled" else {"mode": "compile" if compiled else "eager"})
    return row


def test_targets_table_from_the_part_records():
    parts = {
        "pytest_gpu": dict(status="ok", tail=["....", "52 passed in 31.0s"]),
        "doctor": dict(status="failed", tail=["verdict         cannot train: ..."]),
        "lif": dict(status="ok", data=dict(rows=_lif_rows(1.25, 45.0))),
        "train_step": dict(status="ok", data=dict(T=2, batch=64, image=224, rows=[
            _step("bw_resnet18", False, 18.0), _step("bw_resnet18", True, 15.0),
            _step("sj_spiking_resnet18", False, 35.8), _step("sj_spiking_resnet18", True, 22.2),
            _step("torchvision_resnet18", False, 12.0)])),
        "spikformer": dict(status="timeout", data=dict(config=dict(T=4, batch=64, img=224), results=[
            _step("bw_spikformer_ti", False, 40.0, key="mode")])),
        "memory": dict(status="ok", data=dict(target=dict(
            sltt=dict(peak_mib=dict(ratio_T6_T1=1.1, **{"within_1.25x": True})),
            ottt=dict(peak_mib=dict(ratio_T6_T1=1.4, **{"within_1.25x": False}))))),
    }
    rows = gc.evaluate(parts)
    verdict = {r["target"]: r["verdict"] for r in rows}
    assert verdict["GPU parity tests pass (`pytest -m gpu`)"] == "pass"
    assert verdict["`sj-bwsnn doctor`: ok, fused kernels match SpikingJelly"] == "FAIL"
    assert verdict["LIF fwd+bwd, fused CuPy, float32: <= 1.3x byte floor"] == "pass"
    assert verdict["LIF host issue time per fwd+bwd call <= 60 us"] == "pass"
    rn = "BW-ResNet-18, T=2, B=64, 224 px, AMP"
    assert verdict[f"{rn}: <= 16 ms/step, eager or compiled"] == "pass"  # the compiled 15 ms
    assert verdict[f"{rn}: <= 0.75x SpikingJelly 2.0 compiled (same run)"] == "pass"  # 15 / 22.2 = 0.68
    sf = "BW-Spikformer-Ti, T=4, B=64, 224 px, AMP"
    assert verdict[f"{sf}: <= 33 ms/step, eager or compiled"] == "FAIL"
    assert verdict[f"{sf}: <= 0.75x SpikingJelly 2.0 compiled (same run)"] == "n/a"  # timed out before it
    assert verdict["SLTT peak memory at T=6 <= 1.25x T=1"] == "pass"
    assert verdict["OTTT peak memory at T=6 <= 1.25x T=1"] == "FAIL"
    measured = {r["target"]: r["measured"] for r in rows}
    assert measured[f"{rn}: <= 1.33x the ANN step at batch T*B (torchvision ResNet-18, same run)"] == \
        "1.25x (15.0 vs 12.0 ms)"
    assert "T=2: 1.25x (kernels 1.05x)" in measured["LIF fwd+bwd, fused CuPy, float32: <= 1.3x byte floor"]

    table = gc.render_table(rows, "GPU check, H200")
    lines = table.splitlines()
    assert lines[0] == "GPU check, H200" and lines[2] == "| target (performance notes) | measured | verdict |"
    assert len(lines) == 4 + len(rows) and all(ln.startswith("| ") and ln.endswith(" |") for ln in lines[4:])


def test_targets_are_na_when_nothing_was_measured():
    rows = gc.evaluate({"lif": dict(status="failed", data=None)})
    assert rows and all(r["verdict"] in ("n/a",) for r in rows)
