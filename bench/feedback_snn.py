"""Feedback SNNs on digits: ide, spide and bptt on the same net; memory and step time against T.

    python bench/feedback_snn.py accuracy [--seeds 3] [--methods ide spide bptt]
    python bench/feedback_snn.py memory [--T 5 10 30 100] [--reps 10]
    python bench/feedback_snn.py bars [--seeds 10]     # spread behind tests/test_feedback_snn_learning.py

``accuracy`` trains the bundled recipes per seed (``--set seed=S``) with real and 1-bit weights
(``model.binary``): ``digits_ide`` for ``ide`` and ``bptt`` (``train.method=bptt``, surrogate
gradients through the same T-step simulation), ``digits_spide`` for ``spide`` (the same network
with SPIDE's neuron start), plus ``readout`` (``digits_spide`` with ``spide.grad_scale`` ~ 0: no
spike reaches the backward SNN, so only the classifier learns: the floor the feedback layer must
beat). Final test accuracy and wall time per run.

``memory`` builds the digits net (``fsnn_fc``, 64-256 + F256, IF, batch 32) for each T and
method and reports ``saved_kib`` (peak activation memory autograd keeps for backward,
:class:`sj_bwsnn.analysis.memory.SavedActivationMeter`) and ``step_ms`` (median wall time of
``--reps`` training steps after 2 warm-up steps). Each record carries the load average: times on
a shared machine are marked ``loaded``.

``bars`` reruns the tiny training of ``tests/test_feedback_snn_learning.py`` (``tests/_feedback_util.py``)
per method and seed and prints min / median / max, as ``bench/test_bars.py`` does for the other methods.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import torch  # noqa: E402
from _common import stamped, write_record  # noqa: E402

from sj_bwsnn.analysis.memory import SavedActivationMeter  # noqa: E402
from sj_bwsnn.engine.methods import build_method  # noqa: E402
from sj_bwsnn.engine.objectives import CrossEntropyObjective  # noqa: E402

RECIPE = {"ide": ("digits_ide", []), "bptt": ("digits_ide", ["train.method=bptt"]),
          "spide": ("digits_spide", []), "readout": ("digits_spide", ["spide.grad_scale=1e-9"])}


def machine() -> dict:
    load = os.getloadavg()[0]
    return {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_avg_1min": load,
            "loaded": load > 0.5 * (os.cpu_count() or 1)}


def accuracy(seeds: int, methods: list[str]) -> None:
    from sj_bwsnn.cli import find_recipe
    from sj_bwsnn.engine import Trainer, load_recipe

    rows = []
    for method in methods:
        name, sets = RECIPE[method]
        for binary in (False, True):
            for seed in range(seeds):
                recipe = load_recipe(find_recipe(name), sets + [
                    f"seed={seed}", f"model.binary={str(binary).lower()}",
                    "train.tensorboard=false", "train.plot=false"])
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    last = Trainer(recipe, Path(out)).fit()
                    seconds = time.perf_counter() - t0
                row = {"method": method, "recipe": name, "binary": binary, "seed": seed,
                       "test_acc": last["test_acc"], "seconds": round(seconds, 1), **machine()}
                rows.append(row)
                print(f"{method:8s} binary={binary!s:5s} seed={seed}  test_acc={row['test_acc']:.4f}"
                      f"  {seconds:6.1f} s  (load {row['load_avg_1min']:.1f})", flush=True)
    print("\nmethod   weights  min     median  max")
    for method in methods:
        for binary in (False, True):
            accs = [r["test_acc"] for r in rows if r["method"] == method and r["binary"] == binary]
            print(f"{method:8s} {'1-bit' if binary else 'real ':7s}  {min(accs):.4f}  "
                  f"{statistics.median(accs):.4f}  {max(accs):.4f}")
    write_record(stamped(ROOT / "bench" / "results", "feedback_snn_accuracy"),
                 "bench/feedback_snn.py accuracy", rows=rows)


def memory(Ts: list[int], methods: list[str], reps: int) -> None:
    from sj_bwsnn.models.fsnn import fsnn_fc
    from sj_bwsnn.neuron import IFNode

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    rows = []
    for method in methods:
        for T in Ts:
            torch.manual_seed(0)
            net = fsnn_fc(in_chans=1, img_size=8, hidden=256, num_classes=10, T=T, neuron=IFNode,
                          neuron_kwargs=dict(v_threshold=2.0, v_reset=None),
                          v_init=0.5 if method == "spide" else 0.0)
            step = build_method(method)
            if method == "spide":
                step.steps = 100  # digits_spide's T_b
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            obj = CrossEntropyObjective()
            for _ in range(2):
                step.train_step(net, x, y, obj, opt)
            meter = SavedActivationMeter(exclude=list(net.parameters()) + list(net.buffers()))
            with meter:
                step.train_step(net, x, y, obj, opt)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                step.train_step(net, x, y, obj, opt)
                times.append(1000 * (time.perf_counter() - t0))
            row = {"method": method, "T": T, "saved_kib": meter.peak_bytes / 1024,
                   "step_ms": statistics.median(times), **machine()}
            rows.append(row)
            print(f"{method:6s} T={T:4d}  saved={row['saved_kib']:9.1f} KiB  "
                  f"step={row['step_ms']:8.1f} ms  (load {row['load_avg_1min']:.1f})", flush=True)
    write_record(stamped(ROOT / "bench" / "results", "feedback_snn_memory"),
                 "bench/feedback_snn.py memory", batch=32, hidden=256, rows=rows)


def bars(seeds: int) -> None:
    from _feedback_util import EPOCHS, METHODS, feedback_accuracy
    from _learning_util import digits_batches

    rows = []
    for method in METHODS:
        t0 = time.perf_counter()
        accs = [feedback_accuracy(method, s, EPOCHS, digits_batches(s)) for s in range(seeds)]
        row = {"method": method, "epochs": EPOCHS, "seeds": seeds, "acc": accs, "min": min(accs),
               "median": statistics.median(accs), "max": max(accs),
               "seconds_per_run": (time.perf_counter() - t0) / seeds, **machine()}
        rows.append(row)
        print(f"{method:6s} epochs={EPOCHS}  min={row['min']:.3f}  median={row['median']:.3f}  "
              f"max={row['max']:.3f}  ({row['seconds_per_run']:.1f} s/run)", flush=True)
    write_record(stamped(ROOT / "bench" / "results", "feedback_snn_bars"),
                 "bench/feedback_snn.py bars", rows=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("accuracy", "memory", "bars"))
    ap.add_argument("--seeds", type=int, help="accuracy: 3, bars: 10")
    ap.add_argument("--methods", nargs="+")
    ap.add_argument("--T", nargs="+", type=int, default=[5, 10, 30, 100])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny ops on a "
                                                           "shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "accuracy":
        accuracy(args.seeds or 3, args.methods or ["ide", "spide", "bptt", "readout"])
    elif args.what == "bars":
        bars(args.seeds or 10)
    else:
        memory(args.T, args.methods or ["ide", "spide", "bptt"], args.reps)


if __name__ == "__main__":
    main()
