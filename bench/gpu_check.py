"""The first thing to run on a GPU: every GPU check and benchmark in one command, within 8 minutes.

    PYTHONPATH=/tmp/site:$PWD python bench/gpu_check.py            # all parts, 470 s in all
    python bench/gpu_check.py --parts lif train_step --budget 240   # a subset, a smaller budget
    python bench/gpu_check.py --dry-run                             # the plan: parts, budgets, commands

Parts, in order, each a subprocess with its own time budget (a part that overruns is killed with its
process group; the JSON its script wrote so far stays, since every script rewrites its JSON after each
row; the next part still runs):

=============  ======  =====================================================================
part           budget  command (quick modes)
=============  ======  =====================================================================
imports        30 s    ``bench/check_imports.py`` (stops here on a missing package: exit 2)
doctor         45 s    ``python -m sj_bwsnn doctor``
pytest_gpu     80 s    ``pytest -m gpu`` on the test files that hold GPU tests
lif            75 s    ``bench/lif.py --reps 10`` (T 2 4 8, every contender, own processes)
memory         40 s    ``bench/memory.py --methods bptt sltt ottt --T 1 6 --steps 3 --warmup 1``
train_step     120 s   ``bench/train_step.py --reps 10`` eager: ours, SJ, SJ precision API, torchvision
                       at T*B; compiled: ours, SJ
spikformer     80 s    ``bench/spikformer_step.py --iters 10 --warmup 3`` eager: ours, SJ, SJ precision
                       API; compiled: ours, SJ
=============  ======  =====================================================================

Time a part leaves unused carries over to the next ones; nothing runs past the total (``--budget``,
default 470 s; the per-part budgets scale with it). Output: each part's JSON in ``bench/results/``
(``<part>_<gpu>_<UTC time>.json``, one time stamp for the whole run), its log in
``bench/results/gpu_check_<UTC time>_logs/``, and ``bench/results/gpu_check_<gpu>_<UTC time>.json``:
every part (status ok / failed / timeout / skipped, exit code, seconds, its JSON, the end of its log)
and every target of the performance notes beside the measured figure (pass / FAIL / n/a), rewritten
after every part. At the end it prints that table in markdown. Exit status: 0 when every part ran to
the end (whatever the verdicts), 1 when one failed, timed out or was skipped (no pytest, total budget
spent), 2 without CUDA or with a package missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench/_common.py
import _common  # noqa: E402

DEFAULT_TOTAL = 470.0
PY = sys.executable


@dataclasses.dataclass
class Part:
    """One step of the check: ``argv`` runs with the checkout on PYTHONPATH; it writes ``json`` (if any)."""

    name: str
    argv: list[str]
    budget_s: float
    json: Path | None = None
    skip_reason: str | None = None


def gpu_test_files(root: Path = ROOT) -> list[str]:
    """The test files that hold ``pytest.mark.gpu`` tests (so a CPU-only test's import cannot stop them)."""
    return sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(errors="replace"))


def plan(args, out_dir: Path, tag: str) -> list[Part]:
    """The parts to run (``args.parts`` of them) with their scaled budgets and JSON paths."""
    scale = args.budget / DEFAULT_TOTAL
    out = lambda name: out_dir / f"{name}_{tag}.json"  # noqa: E731
    tests = gpu_test_files()
    parts = [
        Part("imports", [PY, "bench/check_imports.py"], 30),
        Part("doctor", [PY, "-m", "sj_bwsnn", "doctor"], 45),
        Part("pytest_gpu", [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o",
                            "addopts=", *tests], 80,
             skip_reason=None if importlib.util.find_spec("pytest") else
             f"pytest is not installed: bring the wheels {_common.WHEELS['pytest']} (bench/README.md)"),
        Part("lif", [PY, "bench/lif.py", "--reps", "10", "--out", str(out("lif"))], 75, out("lif")),
        Part("memory", [PY, "bench/memory.py", "--methods", "bptt", "sltt", "ottt", "--T", "1", "6",
                        "--steps", "3", "--warmup", "1", "--out", str(out("memory"))], 40, out("memory")),
        Part("train_step", [PY, "bench/train_step.py", "--reps", "10", "--warmup", "3", "--models", "bw_resnet18",
                            "sj_spiking_resnet18", "sj_spiking_resnet18_precision", "torchvision_resnet18",
                            "--compile-models", "bw_resnet18", "sj_spiking_resnet18",
                            "--out", str(out("train_step"))], 120, out("train_step")),
        Part("spikformer", [PY, "bench/spikformer_step.py", "--iters", "10", "--warmup", "3", "--models",
                            "bw_spikformer_ti", "sj_spikformer_ti", "sj_spikformer_ti_precision",
                            "--compile-models", "bw_spikformer_ti", "sj_spikformer_ti",
                            "--out", str(out("spikformer_step"))], 80, out("spikformer_step")),
    ]
    if not tests:
        parts[2].skip_reason = "no test file holds a pytest.mark.gpu test"
    chosen = [p for p in parts if p.name in args.parts]
    for p in chosen:
        p.budget_s = round(p.budget_s * scale, 1)
    return chosen


def part_env(base=None) -> dict:
    """The parts' environment: the checkout first on PYTHONPATH, unbuffered output, and no forced
    SpikingJelly implementation (lif.py sets one per contender itself)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in _common.forced_sj_implementations(base)}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_part(part: Part, timeout_s: float, log_path: Path, env: dict | None = None, echo: bool = True) -> dict:
    """Run one part (its own process group), tee its output to ``log_path``; kill it after
    ``timeout_s``. Returns its summary entry."""
    entry = dict(name=part.name, command=" ".join(part.argv), budget_s=part.budget_s,
                 timeout_s=round(timeout_s, 1), json=str(part.json) if part.json else None, log=str(log_path))
    if part.skip_reason:
        return dict(entry, status="skipped", reason=part.skip_reason, rc=None, wall_s=0.0)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(part.argv, cwd=ROOT, env=part_env() if env is None else env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", start_new_session=True)

        def pump():
            for line in proc.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                del tail[:-40]
                if echo:
                    print(f"[{part.name}] {line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        reader.join(timeout=10)
    wall = time.monotonic() - t0
    status = "timeout" if timed_out else ("ok" if proc.returncode == 0 else "failed")
    entry.update(status=status, rc=proc.returncode, wall_s=round(wall, 1), tail=tail[-20:])
    if timed_out:
        entry["reason"] = f"killed after {timeout_s:.0f} s (its budget); what it wrote so far is kept"
    elif status == "failed":
        entry["reason"] = next((ln for ln in reversed(tail) if ln.strip()), f"exit status {proc.returncode}")
    if part.json is not None:
        entry["json_written"] = part.json.exists()
        if part.json.exists():
            try:
                entry["json_complete"] = bool(json.loads(part.json.read_text()).get("complete", True))
            except ValueError:
                entry["json_complete"] = False
    return entry


def run_parts(parts: list[Part], total_s: float, summary: dict, summary_path: Path | None, log_dir: Path,
              env: dict | None = None, echo: bool = True, stop_on_imports: bool = True) -> dict:
    """Run ``parts`` in order within ``total_s``; a part's timeout is its budget plus what earlier parts
    left unused, capped by what is left of the total. ``summary['parts']`` is rewritten (and the summary
    saved) after every part."""
    deadline = time.monotonic() + total_s
    bank = 0.0
    summary.setdefault("parts", [])
    for i, part in enumerate(parts):
        left = deadline - time.monotonic()
        if left < 1:
            entry = dict(name=part.name, status="skipped", rc=None, wall_s=0.0, budget_s=part.budget_s,
                         reason="the total budget is spent", json=None)
        else:
            timeout = min(part.budget_s + bank, left)
            if echo:
                print(f"== {part.name} (up to {timeout:.0f} s): {' '.join(part.argv)}", flush=True)
            entry = run_part(part, timeout, log_dir / f"{part.name}.log", env=env, echo=echo)
            bank = max(0.0, part.budget_s + bank - entry["wall_s"])
        summary["parts"].append(entry)
        if summary_path is not None:
            _common.write_json(summary_path, summary)
        if echo:
            print(f"== {part.name}: {entry['status']}" + (f" ({entry['reason']})" if entry.get("reason") else ""),
                  flush=True)
        if part.name == "imports" and entry["status"] != "ok" and stop_on_imports:
            for later in parts[i + 1:]:
                summary["parts"].append(dict(name=later.name, status="skipped", rc=None, wall_s=0.0,
                                             budget_s=later.budget_s, json=None,
                                             reason="the import check failed (see the imports part)"))
            if summary_path is not None:
                _common.write_json(summary_path, summary)
            break
    return summary


# ----------------------------------------------------------------------------- targets and the table

def _load(entry: dict | None) -> dict | None:
    if not entry or not entry.get("json") or not Path(entry["json"]).exists():
        return None
    try:
        return json.loads(Path(entry["json"]).read_text())
    except ValueError:
        return None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "FAIL")


def _lif_rows(lif: dict | None, dtype: str, impl: str) -> list[dict]:
    return [r for r in (lif or {}).get("rows", []) if r.get("dtype") == dtype and r.get("impl") == impl
            and "median_ms" in r]


def evaluate(parts: dict[str, dict]) -> list[dict]:
    """Each target of the performance notes (and the GPU checks) beside what this run measured.

    ``parts`` maps a part name to its summary entry; the part JSONs are read from disk (or from the
    entry's ``data`` when given). Rows: ``{target, measured, verdict}`` with verdict pass / FAIL / n/a /
    info (a peer figure for reference, no target)."""
    def data(name):
        entry = parts.get(name)
        return (entry or {}).get("data") or _load(entry)

    rows = []
    for name, label in (("pytest_gpu", "GPU parity tests pass (`pytest -m gpu`)"),
                        ("doctor", "`sj-bwsnn doctor`: ok, fused kernels match SpikingJelly")):
        entry = parts.get(name)
        if not entry or entry.get("status") == "skipped":
            rows.append(dict(target=label, measured=(entry or {}).get("reason", "not run"), verdict="n/a"))
            continue
        last = next((ln for ln in reversed(entry.get("tail", [])) if ln.strip()), "")
        rows.append(dict(target=label, measured=f"{entry['status']}: {last[:100]}",
                         verdict=_verdict(entry.get("status") == "ok")))

    lif = data("lif")
    for dtype in ("float32", "bfloat16"):
        calls = _lif_rows(lif, dtype, "sj_bwsnn fused CuPy kernel")
        kernels = {r["T"]: r for r in _lif_rows(lif, dtype, "sj_bwsnn kernels only")}
        ok = None
        if calls and all("x_floor" in r for r in calls):
            ok = all(r["x_floor"] <= 1.3 for r in calls)
        measured = ", ".join(f"T={r['T']}: {r['x_floor']:.2f}x" + (f" (kernels {kernels[r['T']]['x_floor']:.2f}x)"
                                                                   if "x_floor" in kernels.get(r["T"], {}) else "")
                             for r in calls if "x_floor" in r)
        rows.append(dict(target=f"LIF fwd+bwd, fused CuPy, {dtype}: <= 1.3x byte floor",
                         measured=measured or "not measured", verdict=_verdict(ok)))
    host = [r for dt_ in ("float32", "bfloat16") for r in _lif_rows(lif, dt_, "sj_bwsnn fused CuPy kernel")
            if "host_issue_us" in r]
    rows.append(dict(target="LIF host issue time per fwd+bwd call <= 60 us",
                     measured=(f"{min(r['host_issue_us'] for r in host):.0f}-{max(r['host_issue_us'] for r in host):.0f}"
                               " us over T and dtypes") if host else "not measured",
                     verdict=_verdict(max(r["host_issue_us"] for r in host) <= 60 if host else None)))
    sj4 = [r for r in _lif_rows(lif, "float32", "SJ 2.0 auto") if r["T"] == 4]
    if sj4:
        rows.append(dict(target="(peer) SJ 2.0 LIF, auto, fp32, T=4 (H100 notes: 1.02 ms, Triton)",
                         measured=f"{sj4[0]['median_ms']:.2f} ms [{sj4[0].get('ran', '')}]", verdict="info"))

    ts = data("train_step")
    rows += _step_targets(ts, "bw_resnet18", "sj_spiking_resnet18", "BW-ResNet-18, T=2, B=64, 224 px, AMP", 16.0,
                          dict(T=2, batch=64, image=224), ann="torchvision_resnet18")
    sf = data("spikformer")
    rows += _step_targets(sf, "bw_spikformer_ti", "sj_spikformer_ti", "BW-Spikformer-Ti, T=4, B=64, 224 px, AMP",
                          33.0, dict(T=4, batch=64, img=224))

    mem = data("memory")
    for method in ("sltt", "ottt"):
        t = ((mem or {}).get("target") or {}).get(method, {}).get("peak_mib")
        rows.append(dict(target=f"{method.upper()} peak memory at T=6 <= 1.25x T=1",
                         measured=f"{t['ratio_T6_T1']:.3f}x" if t else "not measured",
                         verdict=_verdict(t["within_1.25x"] if t else None)))
    return rows


def _ms(row: dict) -> float | None:
    return row.get("median_ms", row.get("ms_median"))


def _step_targets(rec: dict | None, ours: str, peer: str, what: str, limit: float, config: dict,
                  ann: str | None = None) -> list[dict]:
    rows_ = [r for r in (rec or {}).get("rows", (rec or {}).get("results", [])) if _ms(r) is not None]
    cfg = (rec or {}).get("config") or rec or {}
    same = rec is not None and all(cfg.get(k) == v for k, v in config.items())
    pick = lambda model, compiled: next((r for r in rows_ if r["model"] == model and  # noqa: E731
                                         (r.get("compiled") is compiled or r.get("mode") == ("compile" if compiled else "eager"))),
                                        None)
    o_e, o_c, p_e, p_c = pick(ours, False), pick(ours, True), pick(peer, False), pick(peer, True)
    best = min((r for r in (o_e, o_c) if r), key=_ms, default=None)
    seen = ", ".join(f"{k} {_ms(r):.1f} ms" for k, r in (("eager", o_e), ("compiled", o_c)) if r) or "not measured"
    out = [dict(target=f"{what}: <= {limit:g} ms/step, eager or compiled",
                measured=seen + ("" if same or rec is None else " (other config: n/a)"),
                verdict=_verdict(_ms(best) <= limit if best and same else None))]
    out.append(dict(target=f"{what}: <= 0.75x SpikingJelly 2.0 compiled (same run)",
                    measured=(f"{_ms(best) / _ms(p_c):.2f}x ({_ms(best):.1f} vs {_ms(p_c):.1f} ms)"
                              if best and p_c else "not measured"),
                    verdict=_verdict(_ms(best) / _ms(p_c) <= 0.75 if best and p_c else None)))
    if ann is not None:
        a = pick(ann, False)
        out.append(dict(target=f"{what}: <= 1.33x the ANN step at batch T*B (torchvision ResNet-18, same run)",
                        measured=(f"{_ms(best) / _ms(a):.2f}x ({_ms(best):.1f} vs {_ms(a):.1f} ms)"
                                  if best and a else "not measured"),
                        verdict=_verdict(_ms(best) / _ms(a) <= 1.33 if best and a else None)))
    for label, r in (("eager", p_e), ("compiled", p_c)):
        if r:
            out.append(dict(target=f"(peer) SpikingJelly 2.0 {peer}, {label}", verdict="info",
                            measured=f"{_ms(r):.1f} ms [{r.get('ran', '')}]"))
    return out


def render_table(rows: list[dict], header: str = "") -> str:
    """The targets as one markdown table."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ([header, ""] if header else []) + ["| target (performance notes) | measured | verdict |",
                                                "|---|---|---|"]
    lines += [f"| {esc(r['target'])} | {esc(r['measured'])} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)


def parse_args(argv):
    names = ["imports", "doctor", "pytest_gpu", "lif", "memory", "train_step", "spikformer"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", choices=names, default=names)
    p.add_argument("--skip", nargs="+", choices=names, default=[])
    p.add_argument("--budget", type=float, default=DEFAULT_TOTAL,
                   help=f"total seconds (default {DEFAULT_TOTAL:g}); per-part budgets scale with it")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--keep-going", action="store_true", help="run the other parts after a failed import check")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    if args.budget <= 0:
        p.error("--budget must be positive")
    args.parts = [n for n in args.parts if n not in args.skip]
    if not args.parts:
        p.error("no part left to run")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tag = f"{_common.device_name().replace(' ', '_')}_{stamp}"
    parts = plan(args, args.out_dir, tag)
    if args.dry_run:
        for p in parts:
            print(f"{p.name:12} {p.budget_s:6.1f} s  " + (f"skipped: {p.skip_reason}" if p.skip_reason
                                                          else " ".join(p.argv)))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: needs a CUDA GPU (torch.cuda.is_available() is False); "
              "--dry-run shows the plan", file=sys.stderr)
        return 2
    summary_path = args.out_dir / f"gpu_check_{tag}.json"
    summary = dict(script="bench/gpu_check.py", date=stamp, budget_s=args.budget, complete=False,
                   environment=_common.environment(), parts=[])
    t0 = time.monotonic()
    run_parts(parts, args.budget, summary, summary_path, args.out_dir / f"gpu_check_{stamp}_logs",
              stop_on_imports=not args.keep_going)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    targets = evaluate({e["name"]: e for e in summary["parts"]})
    env = summary["environment"]
    header = (f"GPU check, {env['device']} (cc {(env.get('gpu') or {}).get('compute_capability')}), torch "
              f"{env['versions']['torch']}, SpikingJelly {env['versions']['spikingjelly']}, {stamp}, "
              f"{summary['wall_s']:.0f} s; absolute ms targets were set on an H100")
    summary.update(targets=targets, table_markdown=render_table(targets, header), complete=True)
    _common.write_json(summary_path, summary)
    print("\n" + summary["table_markdown"] + "\n")
    print("parts: " + ", ".join(f"{e['name']} {e['status']}" for e in summary["parts"]))
    print(f"wrote {summary_path}")
    if any(e["name"] == "imports" and e["status"] != "ok" for e in summary["parts"]):
        return 2
    return 0 if all(e["status"] == "ok" for e in summary["parts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
