"""Peak training memory and step time against T for the training methods (needs a GPU).

    python bench/memory.py                      # bw_resnet18, CIFAR stem, B=128, T in 1 2 4 6 8,
                                                # methods bptt sltt sltt_fused ottt
    python bench/memory.py --methods bptt sltt --T 1 6 --steps 10
    python bench/memory.py --device cpu --tiny  # smoke run of the code path: times only

For each (method, T): a fresh model and SGD optimizer, ``--warmup`` training steps, then
``torch.cuda.reset_peak_memory_stats`` and ``--steps`` timed steps of ``method.train_step`` on a
fixed random batch (+ ``functional.reset_net``). Reported: ``peak_mib`` = ``max_memory_allocated``
over the timed steps (weights, gradients, optimizer state and activations), ``step_ms`` = mean
wall time per step (CUDA synchronised). The target of issue 5: ``sltt`` and ``ottt`` at T=6 within
1.25x of their T=1 peak. Prints a table and writes JSON (default ``bench/results/memory.json``).
On the CPU no memory figure is taken (``peak_mib: null``): only CUDA's allocator measures it here.
Without CUDA (and without ``--device cpu``) it refuses with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
from _common import write_record  # noqa: E402

from spikingjelly.activation_based import functional  # noqa: E402

from sj_bwsnn.engine.methods import OTTT, build_method  # noqa: E402
from sj_bwsnn.engine.objectives import CrossEntropyObjective  # noqa: E402
from sj_bwsnn.models.bw_resnet import bw_resnet18, bw_resnet_tiny  # noqa: E402
from sj_bwsnn.neuron import LIFNode  # noqa: E402

TARGET_T, TARGET_RATIO = 6, 1.25
TAU = 2.0  # LIF tau of the benchmark model; OTTT's trace decay is 1 - 1/tau


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["bptt", "sltt", "sltt_fused", "ottt"])
    p.add_argument("--T", nargs="+", type=int, default=[1, 2, 4, 6, 8])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps per point")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true",
                   help="bw_resnet_tiny on 8x8 input, B=8, T in 1 2, 1 step (a smoke run)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory.json")
    args = p.parse_args(argv)
    if args.tiny:
        args.T, args.batch, args.steps, args.warmup = [1, 2], 8, 1, 1
    return args


def make_method(name: str):
    return OTTT(trace_decay=1.0 - 1.0 / TAU) if name == "ottt" else build_method(name)


def measure(name: str, T: int, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    kw = dict(num_classes=10, T=T, neuron=LIFNode, neuron_kwargs=dict(tau=TAU))
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

    for _ in range(args.warmup):  # allocator, cuDNN autotuning, optimizer state
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    row = {"method": name, "T": T, "step_ms": 1e3 * (time.perf_counter() - t0) / args.steps,
           "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}
    del model, opt, method
    if cuda:
        torch.cuda.empty_cache()
    return row


def check_target(rows: list[dict]) -> dict:
    """``peak(T=6) / peak(T=1)`` for sltt and ottt, where both were measured."""
    out = {}
    for name in ("sltt", "ottt"):
        peaks = {r["T"]: r["peak_mib"] for r in rows if r["method"] == name}
        if peaks.get(1) and peaks.get(TARGET_T):
            ratio = peaks[TARGET_T] / peaks[1]
            out[name] = {"ratio_T6_T1": round(ratio, 3), "within_1.25x": ratio <= TARGET_RATIO}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: bench/memory.py measures GPU memory and needs CUDA, which is not available; "
              "use --device cpu --tiny for a smoke run", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    rows = []
    print(f"{'method':<8} {'T':>3} {'peak MiB':>10} {'step ms':>9}")
    for name in args.methods:
        for T in args.T:
            r = measure(name, T, args, device)
            rows.append(r)
            peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            print(f"{name:<8} {T:>3} {peak:>10} {r['step_ms']:>9.1f}", flush=True)
    target = check_target(rows)
    for name, t in target.items():
        print(f"{name}: peak(T={TARGET_T}) / peak(T=1) = {t['ratio_T6_T1']:.3f} "
              f"({'within' if t['within_1.25x'] else 'NOT within'} {TARGET_RATIO}x)")
    write_record(args.out, "bench/memory.py",
                 model="bw_resnet_tiny" if args.tiny else "bw_resnet18 (stem=cifar)",
                 batch=args.batch, steps=args.steps, warmup=args.warmup, rows=rows, target=target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
