"""OPZO against DFA and spatial BP (OTTT, BPTT) on the same net: accuracy, step time, memory.

    python bench/opzo.py                                   # digits_opzo (FC), 3 seeds
    python bench/opzo.py --recipe digits_opzo_conv --seeds 3
    python bench/opzo.py --methods opzo dfa --set opzo.noise_scale=0.2 --seeds 5

For every method and seed it trains the whole recipe through the real trainer (``--set
train.method=M seed=S``) and keeps the final test accuracy. Then, per method, on a fixed training
batch of the recipe's loader: ``step_ms`` (median wall time of ``method.train_step`` over
``--reps`` calls after 3 warm-up calls, the methods' calls interleaved so that a change of load
hits them alike) and ``saved_mib`` (peak activation memory autograd keeps for backward in one
step, :class:`sj_bwsnn.analysis.memory.SavedActivationMeter`), plus ``feedback_mib`` (OPZO's /
DFA's feedback matrices, held outside autograd). Prints a table and
writes JSON (default ``bench/results/opzo_<device>_<UTC time>.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch  # noqa: E402
from _common import event_times_ms, stamped, write_record  # noqa: E402
from spikingjelly.activation_based import functional  # noqa: E402

from sj_bwsnn.analysis.memory import SavedActivationMeter  # noqa: E402
from sj_bwsnn.cli import find_recipe  # noqa: E402
from sj_bwsnn.engine import Trainer, load_recipe  # noqa: E402

QUIET = ["train.plot=false", "train.tensorboard=false", "train.device=cpu"]


def train_accuracy(path, sets: list[str], method: str, seed: int) -> float:
    recipe = load_recipe(path, sets + QUIET + [f"train.method={method}", f"seed={seed}"])
    with tempfile.TemporaryDirectory() as out:
        return Trainer(recipe, Path(out)).fit()["test_acc"]


def step_fn(path, sets: list[str], method: str):
    """One training step of ``method`` on a fixed batch of the recipe's loader, and its cost."""
    recipe = load_recipe(path, sets + QUIET + [f"train.method={method}"])
    trainer = Trainer(recipe, None)
    x, y = next(iter(trainer.train_loader))
    x, y = trainer._prepare(x), y.to(trainer.device)
    model, m = trainer.net, trainer.method
    model.train()

    def one():
        m.train_step(model, x, y, trainer.objective, trainer.optimizer, trainer.precision)
        functional.reset_net(model)

    return one, trainer, len(y), recipe.T


def costs(path, sets: list[str], methods: list[str], reps: int) -> dict:
    """Per method: median step time (the methods' steps interleaved, so a change of load on a
    shared machine hits them alike), peak saved activations of one step, feedback matrices."""
    fns = {m: step_fn(path, sets, m) for m in methods}
    for one, *_ in fns.values():
        for _ in range(3):  # warm-up
            one()
    cuda = torch.cuda.is_available() and next(iter(fns.values()))[1].device.type == "cuda"
    times = {m: [] for m in methods}
    for _ in range(reps):
        for m, (one, *_) in fns.items():
            times[m].append(event_times_ms(one, 1, warmup=0, cuda=cuda)[0])
    out = {}
    for m, (one, trainer, batch, T) in fns.items():
        model = trainer.net
        meter = SavedActivationMeter(exclude=[*model.parameters(), *model.buffers()])
        with meter:
            one()
        feedback = sum(t.numel() * t.element_size() for t in getattr(trainer.method, "matrices", []))
        out[m] = {"step_ms": statistics.median(times[m]), "saved_mib": meter.peak_bytes / 2**20,
                  "feedback_mib": feedback / 2**20, "batch": batch, "T": T}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="digits_opzo")
    ap.add_argument("--methods", nargs="+", default=["opzo", "dfa", "ottt", "bptt"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20, help="timed steps per method")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override for every run (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a shared machine: 1)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = find_recipe(args.recipe)
    rows = []
    for method in args.methods:
        accs = [train_accuracy(path, args.set, method, s) for s in range(args.seeds)]
        rows.append({"method": method, "acc": accs, "mean": statistics.mean(accs),
                     "min": min(accs), "max": max(accs)})
        print(f"{method:6s} test acc mean {rows[-1]['mean']:.4f} (min {rows[-1]['min']:.4f}, "
              f"max {rows[-1]['max']:.4f}, {args.seeds} seeds)", flush=True)
    measured = costs(path, args.set, args.methods, args.reps)
    for row in rows:
        row.update(measured[row["method"]])
    print("\n| method | test acc, mean (min-max) | step ms | activation MiB | feedback MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['method']}` | {100 * r['mean']:.2f} ({100 * r['min']:.2f}-{100 * r['max']:.2f}) "
              f"| {r['step_ms']:.1f} | {r['saved_mib']:.2f} | {r['feedback_mib']:.2f} |")
    out = args.out or stamped(ROOT / "bench" / "results", "opzo")
    write_record(out, "bench/opzo.py", recipe=args.recipe, overrides=args.set, seeds=args.seeds,
                 threads=torch.get_num_threads(),
                 note="CPU timings on a shared, loaded machine", rows=rows)


if __name__ == "__main__":
    main()
