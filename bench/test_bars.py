"""Measure the spread behind the accuracy bars of the test suite, over many seeds.

A test's accuracy bar must sit well below the worst seed: results differ between CPU models
(float rounding changes the trajectory much as a new seed does). This script reruns the tiny
training of ``tests/test_methods_learning.py`` for each method and seed and prints min / median /
max; the JSON goes to ``bench/results/``. Usage::

    python bench/test_bars.py [--seeds 10] [--epochs 1 3]        # tests/test_methods_learning.py
    python bench/test_bars.py --recipe digits_bwsnn --seeds 5     # tests/test_train_digits.py

``--recipe`` trains the whole recipe per seed (``--set seed=S``), 1-bit and its full-precision
twin (``model.binary=false``), and reports the final test accuracy of each and their difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import torch
from _common import stamped, write_record
from _learning_util import METHODS, digits_batches, method_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--recipe", help="measure a whole recipe per seed instead (1-bit and FP twin)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="--recipe: a recipe override for every run (e.g. train.epochs=2)")
    ap.add_argument("--binary-only", action="store_true", help="--recipe: skip the FP twin")
    args = ap.parse_args()
    if args.recipe:
        return recipe_spread(args.recipe, args.seeds, args.set, args.binary_only)
    torch.set_num_threads(1)  # as the test's one_thread fixture
    rows = []
    for epochs in args.epochs:
        for method in args.methods:
            t0 = time.perf_counter()
            accs = [method_accuracy(method, s, epochs, digits_batches(s)) for s in range(args.seeds)]
            row = {"method": method, "epochs": epochs, "seeds": args.seeds, "acc": accs,
                   "min": min(accs), "median": statistics.median(accs), "max": max(accs),
                   "seconds_per_run": (time.perf_counter() - t0) / args.seeds}
            rows.append(row)
            print(f"{method:12s} epochs={epochs}  min={row['min']:.3f}  median={row['median']:.3f}"
                  f"  max={row['max']:.3f}  ({row['seconds_per_run']:.1f} s/run)", flush=True)
    write_record(stamped(ROOT / "bench" / "results", "test_bars"), "bench/test_bars.py", rows=rows)


def recipe_spread(name: str, seeds: int, overrides: list[str] = (), binary_only: bool = False) -> None:
    import tempfile

    from sj_bwsnn.cli import find_recipe
    from sj_bwsnn.engine import Trainer, load_recipe

    rows = []
    for seed in range(seeds):
        row = {"seed": seed}
        kinds = (("binary", "true"),) if binary_only else (("binary", "true"), ("fp", "false"))
        for kind, binary in kinds:
            recipe = load_recipe(find_recipe(name), [*overrides, f"seed={seed}",
                                                     f"model.binary={binary}",
                                                     "train.tensorboard=false", "train.plot=false"])
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                row[kind] = Trainer(recipe, Path(out)).fit()["test_acc"]
                row[f"{kind}_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        if binary_only:
            print(f"seed {seed}: binary={row['binary']:.4f} ({row['binary_s']} s)", flush=True)
            continue
        row["fp_minus_binary"] = row["fp"] - row["binary"]
        print(f"seed {seed}: binary={row['binary']:.4f} ({row['binary_s']} s)  fp={row['fp']:.4f} "
              f"({row['fp_s']} s)  fp-binary={row['fp_minus_binary']:+.4f}", flush=True)
    for key in ("binary",) if binary_only else ("binary", "fp", "fp_minus_binary"):
        vals = [r[key] for r in rows]
        print(f"{key:16s} min={min(vals):+.4f}  median={statistics.median(vals):+.4f}  "
              f"max={max(vals):+.4f}")
    write_record(stamped(ROOT / "bench" / "results", f"test_bars_{name}"), "bench/test_bars.py",
                 recipe=name, overrides=list(overrides), rows=rows)


if __name__ == "__main__":
    main()
