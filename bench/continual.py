"""Continual learning on the bundled digits recipes: ACC, BWT and time of HLOP, the baseline
(``protect: none``) and joint training (the upper bound), over several seeds.

Usage::

    python bench/continual.py [--recipes digits_hlop_permuted digits_hlop_split]
                              [--protect hlop none joint] [--seeds 3] [--set key=value ...]
    python bench/continual.py --toy --seeds 10      # the 2-task toy of tests/test_continual.py

Each run is the whole recipe through :class:`sj_bwsnn.continual.ContinualTrainer` (as
``sj-bwsnn train`` runs it) with ``--set seed=S continual.protect=P``. The JSON record (every run's
matrix, ACC, BWT, seconds; the min / median / max per recipe and method) goes to ``bench/results/``;
the table printed at the end is the one in docs/continual.md. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import torch  # noqa: E402
from _common import stamped, write_record  # noqa: E402


def run_recipe(name: str, protect: str, seed: int, sets: list[str]) -> dict:
    """One whole continual run; returns its summary and wall time."""
    from sj_bwsnn.cli import find_recipe
    from sj_bwsnn.continual import ContinualTrainer
    from sj_bwsnn.engine import load_recipe

    recipe = load_recipe(find_recipe(name), [*sets, f"seed={seed}",
                                             f"continual.protect={protect}", "train.plot=false"])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = ContinualTrainer(recipe, Path(out)).run()
        seconds = time.perf_counter() - t0
    return {"recipe": name, "protect": protect, "seed": seed, "seconds": round(seconds, 1),
            **summary}


def _stats(values: list[float | None]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"min": None, "median": None, "max": None}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["digits_hlop_permuted", "digits_hlop_split"])
    ap.add_argument("--protect", nargs="+", default=["hlop", "none", "joint"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--toy", action="store_true", help="measure the 2-task toy of the tests")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.toy:
        return toy(args.seeds)
    runs, table = [], []
    for name in args.recipes:
        for protect in args.protect:
            rows = []
            for seed in range(args.seeds):
                r = run_recipe(name, protect, seed, args.set)
                rows.append(r)
                bwt = "-" if r["bwt"] is None else f"{100 * r['bwt']:+.2f}"
                print(f"{name:22s} {protect:5s} seed {seed}: ACC {100 * r['acc']:.2f}  BWT {bwt}"
                      f"  {r['seconds']:.0f} s", flush=True)
            runs += rows
            acc = _stats([r["acc"] for r in rows])
            bwt = _stats([r["bwt"] for r in rows])
            secs = statistics.median(r["seconds"] for r in rows)
            table.append({"recipe": name, "protect": protect, "seeds": args.seeds, "acc": acc,
                          "bwt": bwt, "median_seconds": secs})
    print("\n| recipe | protect | ACC % (median [min, max]) | BWT points (median [min, max]) "
          "| time / run |\n|---|---|---|---|---|")
    for t in table:
        a, b = t["acc"], t["bwt"]
        bwt = ("-" if b["median"] is None else
               f"{100 * b['median']:+.2f} [{100 * b['min']:+.2f}, {100 * b['max']:+.2f}]")
        print(f"| {t['recipe']} | {t['protect']} | {100 * a['median']:.2f} [{100 * a['min']:.2f}, "
              f"{100 * a['max']:.2f}] | {bwt} | {t['median_seconds']:.0f} s |")
    write_record(stamped(ROOT / "bench" / "results", "continual"), "bench/continual.py",
                 threads=args.threads, sets=args.set, table=table, runs=runs)


def toy(seeds: int) -> None:
    """The spread of the 2-task toy behind tests/test_continual.py's bars."""
    from _continual_util import toy_run

    rows = []
    for protect in ("hlop", "none"):
        kept = []
        for seed in range(seeds):
            s = toy_run(protect, seed)
            kept.append({"seed": seed, "first": s["acc_matrix"][0][0],
                         "first_after_second": s["acc_matrix"][1][0],
                         "second": s["acc_matrix"][1][1], "bwt": s["bwt"]})
            print(f"toy {protect:5s} seed {seed}: task 1 {100 * kept[-1]['first']:.1f} -> "
                  f"{100 * kept[-1]['first_after_second']:.1f} (BWT {100 * s['bwt']:+.1f}), "
                  f"task 2 {100 * kept[-1]['second']:.1f}", flush=True)
        rows.append({"protect": protect, "runs": kept, "bwt": _stats([k["bwt"] for k in kept])})
    write_record(stamped(ROOT / "bench" / "results", "continual_toy"), "bench/continual.py --toy",
                 seeds=seeds, rows=rows)


if __name__ == "__main__":
    main()
