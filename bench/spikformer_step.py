"""Training-step time of BW-Spikformer-Ti against SpikingJelly 2.0's spikformer_ti (needs a GPU).

    python bench/spikformer_step.py                 # T=4, B=64, 224 px, bf16 autocast, eager + compile
    python bench/spikformer_step.py --modes eager --iters 20
    python bench/spikformer_step.py --smoke         # CPU smoke run of the code path, tiny sizes,
                                                    # no JSON unless --out is given

Models, each fresh in one run on one device (compare only figures from the same run):

* ``sj_spikformer_ti``  — ``spikingjelly.activation_based.model.spikformer.spikformer_ti``, its own
  neurons (SJ picks Triton / Torch reference itself);
* ``bw_spikformer_ti``  — ours, 1-bit FFN, parameter-free FFN shortcut ``ffn_shortcut='free'``
  (the default; same weight count as SJ's model);
* ``bw_spikformer_ti_proj`` — ours, 1-bit FFN with real 1x1 projection shortcuts (``'proj'``).

Our models use :class:`sj_bwsnn.neuron.LIFNode` (``backend='auto'``: the CuPy kernel when CuPy
imports, else SpikingJelly's path) with Spikformer's neuron settings (tau=2, detach_reset).

One step = ``zero_grad`` -> forward under ``torch.autocast('cuda', bfloat16)`` -> cross-entropy on
time-averaged logits -> backward -> SGD(momentum 0.9) step -> ``functional.reset_net``. Inputs
``[B, 3, 224, 224]`` in channels_last (``--no-channels-last`` to turn off), fixed random batch.
Timing: CUDA events around each step after ``--warmup`` steps; median (and p10/p90) of ``--iters``
steps; peak memory = ``max_memory_allocated`` over the timed steps. ``compile`` wraps the model in
``torch.compile`` (default mode); its warm-up includes compilation. Writes JSON (device, versions,
date, every figure) to ``bench/results/spikformer_step_<device>_<UTC time>.json``. Without CUDA it
refuses with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
from _common import event_times_ms, stamped, write_record  # noqa: E402

from spikingjelly.activation_based import functional  # noqa: E402
from spikingjelly.activation_based.model.spikformer import spikformer_ti  # noqa: E402

from sj_bwsnn.models.bw_spikformer import bw_spikformer_ti  # noqa: E402
from sj_bwsnn.neuron import LIFNode  # noqa: E402

MODELS = ("sj_spikformer_ti", "bw_spikformer_ti", "bw_spikformer_ti_proj")
NEURON_KWARGS = dict(tau=2.0, detach_reset=True)  # Spikformer's LIF settings (SJ's defaults there)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--iters", type=int, default=15, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, T=2, B=2, 32 px, 1+1 steps, eager only: checks the code path")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/spikformer_step_<device>_<UTC time>.json; "
                        "none with --smoke)")
    args = p.parse_args(argv)
    if args.smoke:
        args.T, args.batch, args.img, args.iters, args.warmup = 2, 2, 32, 1, 1
        args.modes = [m for m in args.modes if m == "eager"] or ["eager"]
    elif args.out is None:
        args.out = stamped(Path(__file__).parent / "results", "spikformer_step")
    return args


def build(name: str, args) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(T=args.T, num_classes=1000, img_size=args.img)
    if name == "sj_spikformer_ti":
        return spikformer_ti(T=args.T, img_size_h=args.img, img_size_w=args.img, num_classes=1000)
    shortcut = "proj" if name.endswith("_proj") else "free"
    return bw_spikformer_ti(**common, neuron=LIFNode, neuron_kwargs=NEURON_KWARGS,
                            ffn_shortcut=shortcut)


def measure(name: str, mode: str, args, device: torch.device) -> dict:
    model = build(name, args).to(device).train()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(args.batch, 3, args.img, args.img, device=device).to(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    run = torch.compile(model) if mode == "compile" else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            out = run(x)
            logits = out.mean(0) if out.dim() == 3 else out  # SJ's Spikformer returns [T, N, K]
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        functional.reset_net(model)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warm_s = time.perf_counter() - t0
    times = event_times_ms(step, args.iters, warmup=0, cuda=cuda)  # warm-up timed above
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    params = sum(p.numel() for p in model.parameters())
    return dict(model=name, mode=mode, ms_median=statistics.median(times), ms_p10=q[0],
                ms_p90=q[-1], peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                warmup_s=warm_s, params=params, times_ms=times)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("spikformer_step: needs a CUDA GPU (none found); nothing measured "
              "(--smoke checks the code path on the CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    rows = [measure(name, mode, args, device) for mode in args.modes for name in args.models]
    print(f"training step, T={args.T}, B={args.batch}, {args.img} px, bf16 autocast, "
          f"channels_last={args.channels_last}, {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"{'model':<24}{'mode':<9}{'ms/step':>10}{'p10':>10}{'p90':>10}{'peak MiB':>10}"
          f"{'params':>12}")
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        print(f"{r['model']:<24}{r['mode']:<9}{r['ms_median']:>10.2f}{r['ms_p10']:>10.2f}"
              f"{r['ms_p90']:>10.2f}{peak:>10}{r['params']:>12,}")
    if args.out is not None:
        write_record(args.out, "bench/spikformer_step.py",
                     config=dict(T=args.T, batch=args.batch, img=args.img, iters=args.iters,
                                 warmup=args.warmup, amp="bf16", channels_last=args.channels_last,
                                 optimizer="SGD(momentum=0.9)"),
                     results=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
