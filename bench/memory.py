"""Training memory and step time against T for the training methods.

    python bench/memory.py                      # GPU: bw_resnet18, CIFAR stem, B=128, T in 1 2 4 6 8,
                                                # methods bptt sltt sltt_fused ottt
    python bench/memory.py --methods bptt sltt --T 1 6 --steps 10
    python bench/memory.py --device cpu --steps 1 --warmup 0   # the same table on the CPU, without peak_mib
    python bench/memory.py --device cpu --tiny  # smoke run of the code path

For each (method, T): a fresh model and SGD optimizer, ``--warmup`` training steps, then
``torch.cuda.reset_peak_memory_stats`` and ``--steps`` timed steps of ``method.train_step`` on a
fixed random batch (+ ``functional.reset_net``), then one more step under the saved-tensor meter (its
hooks cost host time, so no timed step runs under them). Reported:

* ``saved_mib`` — peak activation memory: what autograd keeps for backward, measured on any device by
  :class:`sj_bwsnn.analysis.memory.SavedActivationMeter` (parameters and buffers excluded; OTTT's
  traces, which do not grow with T, are held outside autograd and not included);
* ``peak_mib`` — CUDA only: ``max_memory_allocated`` over the timed steps (weights, gradients,
  optimizer state, activations, workspace); ``null`` on the CPU;
* ``step_ms`` — mean wall time per timed step (CUDA synchronised), ``step_times_ms`` each of them.

The target of issue 5: ``sltt`` and ``ottt`` at T=6 within 1.25x of their T=1 memory; checked on
``peak_mib`` where measured and on ``saved_mib`` always. Prints a table and writes JSON (default
``bench/results/memory_<device>_<UTC time>.json``), rewritten after every point, so a failure or a kill
keeps what finished; a point that fails is a row with its ``error``. Without CUDA (and without
``--device cpu``) it refuses with one line and exit code 2; a missing package is one line and exit 2 too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
import _common  # noqa: E402
from _common import Recorder, error_line, free_memory, stamped  # noqa: E402

# imported by main() after the preflight (a missing package is one line, not a traceback)
NEEDS = ("spikingjelly.activation_based.functional", "sj_bwsnn.analysis.memory", "sj_bwsnn.engine.methods",
         "sj_bwsnn.engine.objectives", "sj_bwsnn.models.bw_resnet", "sj_bwsnn.neuron")

TARGET_T, TARGET_RATIO = 6, 1.25
TAU = 2.0  # LIF tau of the benchmark model; OTTT's trace decay is 1 - 1/tau


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["bptt", "sltt", "sltt_fused", "ottt"])
    p.add_argument("--T", nargs="+", type=int, help="default 1 2 4 6 8 (--tiny: 1 2)")
    p.add_argument("--batch", type=int, help="default 128 (--tiny: 8)")
    p.add_argument("--steps", type=int, help="timed steps per point; default 5 (--tiny: 1)")
    p.add_argument("--warmup", type=int, help="default 2 (--tiny: 1)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true",
                   help="bw_resnet_tiny on 8x8 input, B=8, T in 1 2, 1 step (a smoke run)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/memory_<device>_<UTC time>.json)")
    args = p.parse_args(argv)
    defaults = dict(T=[1, 2], batch=8, steps=1, warmup=1) if args.tiny else dict(T=[1, 2, 4, 6, 8], batch=128,
                                                                                  steps=5, warmup=2)
    for key, value in defaults.items():  # what is given on the command line wins, --tiny or not
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def make_method(name: str):
    from sj_bwsnn.engine.methods import OTTT, build_method, trace_decay_for

    if name == "ottt":  # the trainer's rule for the benchmark model's LIF neurons
        return OTTT(trace_decay=trace_decay_for(SimpleNamespace(type="lif", tau=TAU)))
    return build_method(name)


def measure(name: str, T: int, args, device: torch.device) -> dict:
    """One point; model and optimizer are built here and die with this frame (the caller frees)."""
    from spikingjelly.activation_based import functional

    from sj_bwsnn.analysis.memory import SavedActivationMeter
    from sj_bwsnn.engine.objectives import CrossEntropyObjective
    from sj_bwsnn.models.bw_resnet import bw_resnet18, bw_resnet_tiny
    from sj_bwsnn.neuron import LIFNode

    torch.manual_seed(0)
    soft = {"v_reset": None} if name == "ottt" else {}  # ottt refuses hard resets (OTTT's code)
    kw = dict(num_classes=10, T=T, neuron=LIFNode, neuron_kwargs=dict(tau=TAU, **soft))
    if args.tiny:
        model, shape = bw_resnet_tiny(**kw), (args.batch, 1, 8, 8)
    else:
        model, shape = bw_resnet18(stem="cifar", **kw), (args.batch, 3, 32, 32)
    model = model.to(device).train()
    x = torch.randn(shape, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    method, objective = make_method(name), CrossEntropyObjective()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    cuda = device.type == "cuda"

    def step():
        method.train_step(model, x, y, objective, opt)
        functional.reset_net(model)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):  # allocator, cuDNN autotuning, optimizer state
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):  # timed without the meter's hooks
        t0 = time.perf_counter()
        step()
        sync()
        times.append(1e3 * (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    meter = SavedActivationMeter(exclude=[*model.parameters(), *model.buffers()])
    with meter:  # one more step, untimed, for what autograd saves
        step()
    return {"method": name, "T": T, "step_ms": sum(times) / len(times), "step_times_ms": times,
            "saved_mib": meter.peak_mib, "peak_mib": peak, "warmup": args.warmup, "steps": args.steps}


def check_target(rows: list[dict]) -> dict:
    """``memory(T=6) / memory(T=1)`` for sltt and ottt, per measure (``peak_mib``, ``saved_mib``)
    where both points were measured."""
    out = {}
    for name in ("sltt", "ottt"):
        for measure_name in ("peak_mib", "saved_mib"):
            values = {r["T"]: r[measure_name] for r in rows if r["method"] == name}
            if values.get(1) and values.get(TARGET_T):
                ratio = values[TARGET_T] / values[1]
                out.setdefault(name, {})[measure_name] = {
                    "ratio_T6_T1": round(ratio, 3), "within_1.25x": ratio <= TARGET_RATIO}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: bench/memory.py measures GPU memory and needs CUDA, which is not available; "
              "use --device cpu --tiny for a smoke run", file=sys.stderr)
        return 2
    _common.preflight("bench/memory.py", cuda=False, modules=NEEDS)
    device = torch.device(args.device)
    out = args.out or stamped(Path(__file__).parent / "results", "memory")
    rec = Recorder(out, "bench/memory.py", model="bw_resnet_tiny" if args.tiny else "bw_resnet18 (stem=cifar)",
                   batch=args.batch, steps=args.steps, warmup=args.warmup, methods=args.methods, T=args.T,
                   neuron=f"sj_bwsnn LIFNode(tau={TAU}, backend='auto')", torch_threads=torch.get_num_threads())
    print(f"{'method':<10} {'T':>3} {'saved MiB':>10} {'peak MiB':>10} {'step ms':>9}")
    try:
        for name in args.methods:
            for T in args.T:
                try:
                    r = measure(name, T, args, device)
                except Exception as exc:  # noqa: BLE001 - record why this point could not run
                    r = {"method": name, "T": T, "error": error_line(exc)}
                finally:
                    free_memory()  # the next point starts from an empty allocator
                rec.add(r)
                if "error" in r:
                    print(f"{name:<10} {T:>3}  failed: {r['error']}", flush=True)
                    continue
                peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
                print(f"{name:<10} {T:>3} {r['saved_mib']:>10.1f} {peak:>10} {r['step_ms']:>9.1f}", flush=True)
    except BaseException as exc:
        rec.fail(exc)
        raise
    target = check_target([r for r in rec.rows if "error" not in r])
    for name, by_measure in target.items():
        for measure_name, t in by_measure.items():
            print(f"{name}: {measure_name}(T={TARGET_T}) / {measure_name}(T=1) = {t['ratio_T6_T1']:.3f} "
                  f"({'within' if t['within_1.25x'] else 'NOT within'} {TARGET_RATIO}x)")
    rec.finish(target=target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
