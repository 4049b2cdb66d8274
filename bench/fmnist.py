"""Fashion-MNIST on CPU cores: 1-bit vs its full-precision twin, with and without distillation,
T = 1, 2, 4, and the training methods, in one table.

    python bench/fmnist.py --list                               # the rows and what each one sets
    python bench/fmnist.py --rows fp_t2 bw_kd_t2                # the two recipes, whole (fmnist_fp, fmnist_bwsnn)
    python bench/fmnist.py --budget 2x20000                     # every row: 2 epochs on 20,000 training images
    python bench/fmnist.py --budget 2x20000 --rows 'bw_kd_t2_*' # some rows (shell-style patterns)

Each row is one configuration: a bundled recipe (``fmnist_fp`` or ``fmnist_bwsnn``; the
feedback-SNN rows ``fsnn_ide`` / ``fsnn_spide`` their own nets' ``fashion_mnist_ide`` /
``mnist_spide``) plus ``--set`` overrides (``--list`` prints them). A row is trained by
``python -m sj_bwsnn train`` in a child process (its output is the row's ``train.log``), so it is
exactly what a user's command does; then this process measures, from the row's ``last.pt``:

* ``test_acc`` -- the last epoch's test accuracy (never the best epoch: no choice made on the test set);
* ``wall_s`` / ``cpu_s`` -- the child's wall-clock time and CPU time (user + system, all threads);
  on a shared machine the wall time includes waiting for a core, the CPU time does not;
* ``energy_pj`` -- energy per test image as ``sj-bwsnn energy RECIPE --checkpoint last.pt`` computes
  it (SpikingJelly's op counters, Horowitz 45 nm fp32 costs, :mod:`sj_bwsnn.analysis.energy`) on the
  first ``--energy-batches`` test batches; ``energy_1bit_pj`` the same with ``--binary-weights``;
* ``act_mib`` -- activation memory of one training step on a training batch: the peak of what autograd
  saves for backward (:class:`sj_bwsnn.analysis.memory.SavedActivationMeter`, weights excluded).

The student rows (``bw_*``) take their teacher and ``model.init_from`` from the ``fp_t2`` row of the
same budget (``RUNS/BUDGET/fp_t2/last.pt``) unless ``--teacher`` names a checkpoint, so a budget
table is self-consistent. Rows whose method is not in ``sj_bwsnn.engine.methods.METHODS`` (or, for
HLOP, whose package ``sj_bwsnn.continual`` is absent) are skipped with a note; a row that fails is
a row with its one-line ``error``. A row whose run already finished is measured again without
retraining, an unfinished one resumes (``--resume``), so a killed benchmark continues where it stopped,
and several benchmark processes may train different rows of one budget side by side.

Prints a Markdown table and writes JSON (default ``bench/results/fmnist_<budget>_cpu_<UTC time>.json``),
rewritten after every row.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
from _common import ROOT, Recorder, error_line, free_memory, stamped  # noqa: E402

TEACHER_ROW = "fp_t2"


class RowError(Exception):
    """A row that could not be trained or measured; its message is the row's ``error``."""


@dataclass
class Row:
    """One configuration: ``recipe`` + ``sets``; ``student`` rows get the teacher / init_from paths."""

    name: str
    recipe: str
    what: str
    sets: list = field(default_factory=list)
    method: str = "bptt"
    student: bool = False
    needs: str | None = None  # a module that must exist (HLOP: sj_bwsnn.continual)


# Methods of the other issues run on the same recipe when their name is in METHODS; a row that
# fails records that method's one-line error. IDE and SPIDE train feedback SNNs (fsnn_*) only, so
# their rows use their own Fashion-MNIST nets and recipes instead (no 1-bit init, no KD).
_LATER = ("opzo", "dfa")
ROWS = [
    Row("fp_t2", "fmnist_fp", "FP twin (recipe fmnist_fp)"),
    Row("fp_t1", "fmnist_fp", "FP twin", ["T=1"]),
    Row("fp_t4", "fmnist_fp", "FP twin", ["T=4"]),
    Row("bw_kd_t2", "fmnist_bwsnn", "1-bit, init FP, KD (recipe fmnist_bwsnn)", student=True),
    Row("bw_kd_t1", "fmnist_bwsnn", "1-bit, init FP, KD", ["T=1"], student=True),
    Row("bw_kd_t4", "fmnist_bwsnn", "1-bit, init FP, KD", ["T=4"], student=True),
    Row("bw_t2", "fmnist_bwsnn", "1-bit, init FP, no KD", ["teacher.checkpoint=null"], student=True),
    Row("bw_scratch_t2", "fmnist_bwsnn", "1-bit, from scratch, no KD",
        ["teacher.checkpoint=null", "model.init_from=null"], student=True),
    Row("bw_kd_t2_sltt", "fmnist_bwsnn", "1-bit, init FP, KD", ["train.method=sltt"], "sltt", True),
    Row("bw_kd_t2_ottt", "fmnist_bwsnn", "1-bit, init FP, KD", ["train.method=ottt"], "ottt", True),
    # DSR neurons carry a trainable threshold the LIF twin lacks, so no init_from (strict loading)
    Row("bw_kd_t2_dsr", "fmnist_bwsnn", "1-bit, from scratch, KD, DSR-LIF neurons",
        ["train.method=dsr", "neuron.preset=dsr_lif", "model.init_from=null"], "dsr", True),
    *[Row(f"bw_kd_t2_{m}", "fmnist_bwsnn", "1-bit, init FP, KD", [f"train.method={m}"], m, True)
      for m in _LATER],
    Row("fsnn_ide", "fashion_mnist_ide", "feedback SNN fsnn_fc 784-400 (recipe fashion_mnist_ide)",
        method="ide"),
    Row("fsnn_spide", "mnist_spide", "feedback SNN ConvNet-F (recipe mnist_spide)",
        ["data.name=fashion_mnist", "data.root=null"], "spide"),
    # HLOP's accuracy on one task is its base learner's (projection starts with the second task);
    # the continual runner refuses distillation. One split task of all ten classes: the images as
    # they are (the permuted protocol permutes the first task's pixels too, as HLOP's PMNIST code)
    Row("bw_t2_hlop", "fmnist_bwsnn", "1-bit, init FP, no KD, HLOP single task",
        ["teacher.checkpoint=null", "continual.protocol=split", "continual.tasks=1",
         "continual.protect=hlop"], "hlop", True, needs="sj_bwsnn.continual"),
]
ROW_NAMES = [r.name for r in ROWS]


def parse_budget(text: str) -> tuple[str, list[str]]:
    """``full`` (the recipes as they are), ``E`` (E epochs) or ``ExN`` (E epochs on a fixed random
    subset of N training images) -> ``(label, --set overrides)``."""
    if text == "full":
        return "full", []
    epochs, _, n = text.partition("x")
    try:
        e, m = int(epochs), (int(n) if n else None)
    except ValueError:
        raise SystemExit(f"fmnist.py: --budget must be full, E or ExN (e.g. 2x20000), got {text!r}")
    if e < 1 or (m is not None and m < 1):
        raise SystemExit(f"fmnist.py: --budget {text}: epochs and images must be >= 1")
    return text, [f"train.epochs={e}"] + ([f"data.max_train={m}"] if m else [])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default="full", help="full (default), E or ExN: E epochs on N images")
    p.add_argument("--rows", nargs="+", default=["*"], help="row names or shell patterns (default all)")
    p.add_argument("--list", action="store_true", help="print the rows and exit")
    p.add_argument("--teacher", help="teacher / init_from checkpoint of the student rows "
                                     "(default RUNS/BUDGET/fp_t2/last.pt)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_fmnist",
                   help="where the rows' runs go: RUNS/BUDGET/ROW (default runs/bench_fmnist)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each run (default 2)")
    p.add_argument("--energy-batches", type=int, default=8, help="test batches counted (default 8)")
    p.add_argument("--max-test", type=int, help="test on a fixed subset of N images (smoke runs)")
    p.add_argument("--data-root", help="data.root of every row (default the recipes': Debian's folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more override for every row (repeatable)")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/fmnist_<budget>_...)")
    return p.parse_args(argv)


def select(patterns) -> list[Row]:
    chosen = [r for r in ROWS if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in ROW_NAMES)]
    if unknown:
        raise SystemExit(f"fmnist.py: no row matches {', '.join(unknown)}; rows: {', '.join(ROW_NAMES)}")
    return chosen


def missing_reason(row: Row) -> str | None:
    """Why a row cannot run on this checkout (its method or package is absent), else None."""
    if row.needs and importlib.util.find_spec(row.needs) is None:
        return f"skipped: {row.needs} is not on this checkout"
    if row.method != "hlop":
        from sj_bwsnn.engine.methods import METHODS

        if row.method not in METHODS:
            return f"skipped: train.method {row.method} is not in sj_bwsnn.engine.methods.METHODS here"
    return None


def row_sets(row: Row, budget_sets, teacher: str, args) -> list[str]:
    """Every ``--set`` of a row, in order (later ones win): teacher paths, the row's own, budget,
    data root / test subset, the command line's."""
    sets = [f"model.init_from={teacher}", f"teacher.checkpoint={teacher}"] if row.student else []
    sets += row.sets + budget_sets + ["train.plot=false", "train.tensorboard=false"]
    if args.data_root:
        sets.append(f"data.root={args.data_root}")
    if args.max_test:
        sets.append(f"data.max_test={args.max_test}")
    sets += args.set
    if row.method == "hlop":  # one task of train.epochs epochs
        from sj_bwsnn.cli import find_recipe
        from sj_bwsnn.engine import load_recipe

        sets.append(f"continual.epochs_per_task={load_recipe(find_recipe(row.recipe), sets).train.epochs}")
    return sets


def _epoch_rows(metrics) -> list[dict]:
    """The per-epoch rows of a run's metrics.json (a continual run nests them under ``epochs``)."""
    return metrics["epochs"] if isinstance(metrics, dict) else metrics


def _finished(out: Path) -> bool:
    """True when ``out`` holds a run that trained all its epochs."""
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        if isinstance(metrics, dict):  # a continual run says so itself
            return (out / "last.pt").is_file() and bool(metrics["continual"]["complete"])
        import yaml

        epochs = yaml.safe_load((out / "recipe.yaml").read_text())["train"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (out / "last.pt").is_file() and len(metrics) >= epochs


def train(row: Row, sets: list[str], out: Path, threads: int) -> dict:
    """Train (or resume, or reuse) the row's run in a child process; its times and command."""
    times_file = out / "bench_times.json"
    # a run trained elsewhere (not by this script) has no recorded times: None
    times = json.loads(times_file.read_text()) if times_file.is_file() else {"wall_s": None, "cpu_s": None}
    cmd = ["sj-bwsnn", "train", row.recipe, "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    times["command"] = " ".join(cmd)
    if _finished(out):
        times["reused"] = True
        return times
    resume = (out / "last.pt").is_file()
    argv = [sys.executable, "-m", "sj_bwsnn", *cmd[1:], *(["--resume"] if resume else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.train.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}{' --resume' if resume else ''}\n")
        f.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:  # echo and keep the child's output (epoch lines, errors)
            print(f"  {line}", end="", flush=True)
            f.write(line)
            lines.append(line)
        rc = proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    times["wall_s"] = (times["wall_s"] or 0.0) + time.perf_counter() - t0
    times["cpu_s"] = (times["cpu_s"] or 0.0) + (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime)
    if out.is_dir():
        times_file.write_text(json.dumps(times, indent=2) + "\n")
    if rc != 0:
        errors = [line.strip() for line in lines if line.startswith("error:")]
        raise RowError(errors[-1] if errors else f"training exited with code {rc} (see {log})")
    return times


def measure(out: Path, energy_batches: int) -> dict:
    """Accuracy and epochs from the run, energy per image and activation memory from last.pt."""
    from spikingjelly.activation_based import functional

    from sj_bwsnn.analysis.energy import check_options, energy_report
    from sj_bwsnn.analysis.energy_models import compute_energy
    from sj_bwsnn.analysis.memory import SavedActivationMeter
    from sj_bwsnn.analysis.source import sample_batches, source_from_checkpoint
    from sj_bwsnn.engine import load_checkpoint
    from sj_bwsnn.engine.recipe import recipe_from_dict
    from sj_bwsnn.engine.trainer import Trainer

    rows = _epoch_rows(json.loads((out / "metrics.json").read_text()))
    last = rows[-1]
    src = source_from_checkpoint(out / "last.pt")
    res = {"T": src.recipe.T, "method": src.recipe.train.method, "epochs": len(rows),
           "test_acc": last["test_acc"], "train_acc": last["train_acc"],
           "test_images": len(src.test_loader.dataset),
           "epoch_wall_s": [r["time_s"] for r in rows]}
    # `sj-bwsnn energy`'s defaults (sj counts, horowitz, fp32); the same counts priced as 1-bit
    # hardware are what `--binary-weights` adds, so one counting pass gives both
    rep = energy_report(src.model, lambda: sample_batches(src, energy_batches), src.recipe.T)
    one_bit = compute_energy(rep["layers"], check_options(binary_weights=True))["total_pj"]
    res.update(energy_pj=rep["energy"]["total_pj"], energy_1bit_pj=one_bit,
               energy_images=rep["samples"], sops=rep["sops"], macs=rep["macs"], acs=rep["acs"],
               firing_rate=rep["mean_firing_rate"])
    # one training step under the meter, on a Trainer rebuilt from the run's recipe and weights,
    # weights and buffers excluded from the count; without init_from (last.pt replaces it) and
    # without the teacher, whose forward runs under no_grad and saves nothing for backward
    ckpt = load_checkpoint(out / "last.pt")
    recipe = recipe_from_dict(ckpt["recipe"])
    recipe = replace(recipe, model=replace(recipe.model, init_from=None),
                     teacher=replace(recipe.teacher, checkpoint=None))
    trainer = Trainer(recipe, out=None)
    trainer.model.load_state_dict(ckpt["model"])
    x, y = next(iter(trainer.train_loader))
    x, y = trainer._prepare(x), y.to(trainer.device)
    meter = SavedActivationMeter(exclude=[*trainer.model.parameters(), *trainer.model.buffers()])
    with meter:
        trainer.method.train_step(trainer.net, x, y, trainer.objective, trainer.optimizer,
                                  trainer.precision)
    functional.reset_net(trainer.net)
    res["act_mib"], res["act_batch"] = meter.peak_mib, int(x.shape[0])
    res["train_images"] = len(trainer.train_loader.dataset)
    del trainer, src
    free_memory()
    return res


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = ("| row | configuration | T | method | test acc | epochs x images | wall s | CPU s | "
            "energy per image (1-bit hw) | act. MiB |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if "test_acc" not in r:
            lines.append(f"| {r['name']} | {r['what']} | {r['T']} | {r['method']} | "
                         f"{r.get('skipped') or r.get('error')} | | | | | |")
            continue
        energy = f"{r['energy_pj'] / 1e6:.2f} µJ ({r['energy_1bit_pj'] / 1e6:.2f})"
        lines.append(f"| {r['name']} | {r['what']} | {r['T']} | {r['method']} | "
                     f"{100 * r['test_acc']:.2f}% | {r['epochs']} x {r['train_images']} | "
                     f"{_fmt(r.get('wall_s'), '.0f')} | {_fmt(r.get('cpu_s'), '.0f')} | {energy} | "
                     f"{r['act_mib']:.1f} |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> str | None:
    """Issue 19's targets, read off the fp_t2 and bw_kd_t2 rows when both were measured."""
    by = {r["name"]: r for r in rows if "test_acc" in r}
    if not {"fp_t2", "bw_kd_t2"} <= by.keys():
        return None
    s, t = by["bw_kd_t2"], by["fp_t2"]
    gap = 100 * (t["test_acc"] - s["test_acc"])
    if s.get("wall_s") is None:
        time_note = "student time not recorded (trained outside this script)"
    else:
        time_note = (f"student wall {s['wall_s'] / 60:.1f} min, CPU {s['cpu_s'] / 60:.1f} min "
                     f"(<= 40 min of wall on 2 idle cores)")
    return (f"targets (issue 19): bw_kd_t2 {100 * s['test_acc']:.2f}% (>= 92.00%: "
            f"{'yes' if s['test_acc'] >= 0.92 else 'no'}), {gap:.2f} points below fp_t2 (<= 1: "
            f"{'yes' if gap <= 1.0 else 'no'}), {time_note}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        width = max(len(r.recipe) for r in ROWS)  # the feedback rows' recipe names are longer
        for r in ROWS:
            print(f"{r.name:<16} {r.recipe:<{width}} {r.what}; --set {' '.join(r.sets) or '(none)'}")
        return 0
    label, budget_sets = parse_budget(args.budget)
    rows = select(args.rows)
    runs = args.runs / label
    teacher = args.teacher or str(runs / TEACHER_ROW / "last.pt")
    import torch

    torch.set_num_threads(args.threads)
    rec = Recorder(args.out or stamped(ROOT / "bench" / "results", f"fmnist_{label}"), "bench/fmnist.py",
                   budget=label, budget_sets=budget_sets, threads=args.threads, teacher=teacher,
                   energy_batches=args.energy_batches, argv=sys.argv[1:] if argv is None else argv,
                   loadavg=os.getloadavg())
    for row in rows:
        base = {"name": row.name, "recipe": row.recipe, "what": row.what, "method": row.method,
                "T": next((int(s[2:]) for s in row.sets if s.startswith("T=")), 2)}  # as listed
        reason = missing_reason(row)
        if reason:
            print(f"{row.name}: {reason}")
            rec.add({**base, "skipped": reason})
            continue
        sets = row_sets(row, budget_sets, teacher, args)
        out = runs / row.name
        print(f"{row.name}: {row.what} -> {out}", flush=True)
        try:
            if row.student and not Path(teacher).is_file():
                raise RowError(f"needs the teacher {teacher}: run the {TEACHER_ROW} row of this "
                               f"budget first, or give --teacher")
            times = train(row, sets, out, args.threads)
            rec.add({**base, **times, **measure(out, args.energy_batches),
                     "loadavg_after": os.getloadavg()})
        except Exception as exc:  # noqa: BLE001 - one row failing must not lose the others
            why = str(exc) if isinstance(exc, RowError) else error_line(exc)
            print(f"{row.name}: failed: {why}", flush=True)
            rec.add({**base, "error": why})
    text = table(rec.rows)
    print(text)
    note = targets(rec.rows)
    if note:
        print(note)
    rec.finish(table=text, targets=note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
