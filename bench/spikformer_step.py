"""Training-step time of BW-Spikformer-Ti against SpikingJelly 2.0's spikformer_ti (needs a GPU).

    python bench/spikformer_step.py                 # T=4, B=64, 224 px, bf16 autocast, eager + compile
    python bench/spikformer_step.py --no-compile --iters 10     # eager only (= --modes eager)
    python bench/spikformer_step.py --models bw_spikformer_ti sj_spikformer_ti --compile-models bw_spikformer_ti
    python bench/spikformer_step.py --smoke         # CPU smoke run of the code path, tiny sizes,
                                                    # no JSON unless --out is given

Models, each fresh in one run on one device (compare only figures from the same run):

* ``sj_spikformer_ti``  — ``spikingjelly.activation_based.model.spikformer.spikformer_ti``, its own
  neurons under plain autocast: their state takes bf16, so SpikingJelly runs its Torch reference
  (the row's ``ran`` says what ran);
* ``sj_spikformer_ti_precision`` — the same model prepared with SpikingJelly's precision API
  (``PrecisionConfig(mode='bf16', neuron_storage='bf16', neuron_fwd='bf16', neuron_bwd='bf16')``,
  its ``autocast_context``): its Triton mixed-precision LIF (CUDA only; eager unless in
  ``--compile-models``);
* ``bw_spikformer_ti``  — ours, 1-bit FFN, parameter-free FFN shortcut ``ffn_shortcut='free'``
  (the default; same weight count as SJ's model);
* ``bw_spikformer_ti_proj`` — ours, 1-bit FFN with real 1x1 projection shortcuts (``'proj'``).

Our models use :class:`sj_bwsnn.neuron.LIFNode` (``backend='auto'``: the CuPy kernel when CuPy
imports, else SpikingJelly's path) with Spikformer's neuron settings (tau=2, detach_reset; the same
settings as SJ's model, recorded per row).

One step = ``zero_grad`` -> forward under ``torch.autocast('cuda', bfloat16)`` -> cross-entropy on
time-averaged logits -> backward -> SGD(momentum 0.9) step -> ``functional.reset_net``. Inputs
``[B, 3, 224, 224]`` in channels_last (``--no-channels-last`` to turn off), fixed random batch.
Timing: CUDA events around each step after ``--warmup`` steps; median (and p10/p90) of ``--iters``
steps; peak memory = ``max_memory_allocated`` over the timed steps (reset after the warm-up).
``compile`` wraps the model in ``torch.compile`` (``--compile-mode``); its warm-up includes
compilation. Writes JSON (environment, every figure, the LIF path that ran) to
``bench/results/spikformer_step_<device>_<UTC time>.json``, rewritten after every row. Without CUDA it
refuses with one line and exit code 2; so does a missing package.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, bench/_sj.py
import _common  # noqa: E402
import _sj  # noqa: E402
from _common import Recorder, error_line, event_times_ms, free_memory, stamped  # noqa: E402

MODELS = ("sj_spikformer_ti", "sj_spikformer_ti_precision", "bw_spikformer_ti", "bw_spikformer_ti_proj")
NEURON_KWARGS = dict(tau=2.0, detach_reset=True)  # Spikformer's LIF settings (SJ's defaults there)
PRECISION = dict(mode="bf16", neuron_storage="bf16", neuron_fwd="bf16", neuron_bwd="bf16")
NEEDS = ("spikingjelly.activation_based.functional", "spikingjelly.activation_based.model.spikformer",
         "spikingjelly.activation_based.precision", "sj_bwsnn.models.bw_spikformer", "sj_bwsnn.neuron")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=None,
                   help="default: all but the precision-API model on --smoke")
    p.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"])
    p.add_argument("--compile-models", nargs="*", choices=MODELS, default=None,
                   help="which models run in mode compile (default: all of --models but the "
                        "precision-API one)")
    p.add_argument("--no-compile", action="store_true", help="eager only (same as --modes eager)")
    p.add_argument("--compile-mode", default="default")
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
    if args.no_compile:
        args.modes = ["eager"]
    if args.models is None:
        args.models = [m for m in MODELS if not (args.smoke and m.endswith("_precision"))]
    if args.compile_models is None:
        args.compile_models = [m for m in args.models if not m.endswith("_precision")]
    if args.smoke:
        args.T, args.batch, args.img, args.iters, args.warmup = 2, 2, 32, 1, 1
        args.modes = ["eager"]
    elif args.out is None:
        args.out = stamped(Path(__file__).parent / "results", "spikformer_step")
    return args


def runs(args) -> list[tuple[str, str]]:
    """(model, mode) in the order measured: every eager run, then the compiled ones."""
    out = []
    for mode in args.modes:
        out += [(name, mode) for name in args.models if mode == "eager" or name in args.compile_models]
    return out


def build(name: str, args) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(T=args.T, num_classes=1000, img_size=args.img)
    if name.startswith("sj_spikformer_ti"):
        from spikingjelly.activation_based.model.spikformer import spikformer_ti

        return spikformer_ti(T=args.T, img_size_h=args.img, img_size_w=args.img, num_classes=1000)
    from sj_bwsnn.models.bw_spikformer import bw_spikformer_ti
    from sj_bwsnn.neuron import LIFNode

    shortcut = "proj" if name.endswith("_proj") else "free"
    return bw_spikformer_ti(**common, neuron=LIFNode, neuron_kwargs=NEURON_KWARGS, ffn_shortcut=shortcut)


def measure(name: str, mode: str, args, device: torch.device) -> dict:
    from spikingjelly.activation_based import functional

    model = build(name, args).to(device).train()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    if name.endswith("_precision"):
        from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

        artifacts = prepare_model_for_precision(model, device, PrecisionConfig(**PRECISION))
        model, ctx = artifacts.model, artifacts.autocast_context
    x = torch.randn(args.batch, 3, args.img, args.img, device=device).to(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    run = torch.compile(model, mode=args.compile_mode) if mode == "compile" else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    cuda = device.type == "cuda"

    def logits_of(net):
        with ctx():
            out = net(x)
        return out.mean(0) if out.dim() == 3 else out  # SJ's Spikformer returns [T, N, K]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits_of(run).float(), y)
        loss.backward()
        opt.step()
        functional.reset_net(model)

    row = dict(model=name, mode=mode, compile_mode=args.compile_mode if mode == "compile" else None,
               dtype="bfloat16 autocast", precision_api=PRECISION if name.endswith("_precision") else None,
               neurons=_sj.neuron_settings(model), warmup=args.warmup, iters=args.iters,
               params=sum(p.numel() for p in model.parameters()))
    with torch.no_grad(), _sj.lif_paths() as counts:  # untimed eager forward: which LIF path runs
        logits_of(model)
    functional.reset_net(model)
    row.update(lif_paths=dict(counts), sj_selection=_sj.lif_selection())
    row["ran"] = _sj.describe(counts, row["sj_selection"], device.type, mode == "compile")
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    row["warmup_s"] = time.perf_counter() - t0
    times = event_times_ms(step, args.iters, warmup=0, cuda=cuda)  # warm-up timed above
    s = _common.summary_ms(times)
    row.update(ms_median=s["median_ms"], ms_p10=s["p10_ms"], ms_p90=s["p90_ms"], ms_min=s["min_ms"],
               times_ms=s["times_ms"], peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None)
    return row


def print_rows(rows, args, device):
    print(f"\ntraining step, T={args.T}, B={args.batch}, {args.img} px, bf16 autocast, "
          f"channels_last={args.channels_last}, {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"{'model':<28}{'mode':<9}{'ms/step':>10}{'p10':>10}{'p90':>10}{'peak MiB':>10}{'params':>12}  LIF that ran")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<28}{r['mode']:<9}  failed: {r['error'][:90]}")
            continue
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        print(f"{r['model']:<28}{r['mode']:<9}{r['ms_median']:>10.2f}{r['ms_p10']:>10.2f}"
              f"{r['ms_p90']:>10.2f}{peak:>10}{r['params']:>12,}  {r['ran']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("spikformer_step: needs a CUDA GPU (none found); nothing measured "
              "(--smoke checks the code path on the CPU)", file=sys.stderr)
        return 2
    _common.preflight("bench/spikformer_step.py", cuda=False, modules=NEEDS)
    device = torch.device("cpu" if args.smoke else "cuda")
    rec = Recorder(args.out, "bench/spikformer_step.py", rows_key="results",
                   config=dict(T=args.T, batch=args.batch, img=args.img, iters=args.iters,
                               warmup=args.warmup, amp="bf16", channels_last=args.channels_last,
                               optimizer="SGD(momentum=0.9)", models=args.models, modes=args.modes,
                               compile_models=args.compile_models, compile_mode=args.compile_mode,
                               neuron_kwargs_ours=NEURON_KWARGS))
    rows = rec.rows
    try:
        for name, mode in runs(args):
            print(f"{name} {mode} ...", flush=True)
            try:
                row = measure(name, mode, args, device)
            except Exception as exc:  # noqa: BLE001 - record why a configuration could not run
                row = dict(model=name, mode=mode, error=error_line(exc))
            finally:
                free_memory(dynamo=mode == "compile")
            rec.add(row)
    except BaseException as exc:
        rec.fail(exc)
        print_rows(rows, args, device)
        raise
    print_rows(rows, args, device)
    rec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
