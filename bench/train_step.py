"""One full training step (forward, backward, SGD) of BW-ResNet-18 vs SpikingJelly 2.0 vs an ANN.

    PYTHONPATH=$PWD python bench/train_step.py                 # GPU: 224 px, B=64, T=2, bf16 autocast
    PYTHONPATH=$PWD python bench/train_step.py --device cpu    # CPU: CIFAR stem, 32 px, B=16, T=4, fp32
    PYTHONPATH=$PWD python bench/train_step.py --models bw_resnet18 --no-compile --reps 10   # quick

Contenders (``--models``; each eager, and compiled with ``torch.compile`` when in ``--compile-models``,
default: all of ``--models``; ``--no-compile`` for none):

* ``bw_resnet18`` — sj_bwsnn, multi-shortcut, 1-bit weights, ``LIFNode(backend='auto')`` (the fused CuPy
  kernel on CUDA when CuPy imports, else SpikingJelly's path);
* ``sj_spiking_resnet18`` — SpikingJelly 2.0 ``spiking_resnet18`` (``LIFNode``, multi-step) under plain
  autocast: its LIF state takes bf16, so its Torch reference runs (the row says so);
* ``sj_spiking_resnet18_precision`` — the same model prepared with SpikingJelly's precision API
  (``PrecisionConfig(mode='bf16', neuron_storage='bf16', neuron_fwd='bf16', neuron_bwd='bf16')``,
  its ``autocast_context``): its Triton mixed-precision LIF (CUDA only);
* ``torchvision_resnet18`` — the ANN at batch T*B (the same number of image passes).

Like with like: both SNNs use the same LIF (tau=2, decay_input, v_threshold=1, v_reset=0,
ATan(alpha=2), detach_reset=True; recorded per row), the same input (the batch repeated over T with a
cat that keeps channels_last) and the same stem type (``--stem``; ``cifar`` swaps SpikingJelly's 7x7/2
conv + max-pool for a 3x3/1 conv, as ours). One difference stays and is printed: our stem runs once on
B images and its output is repeated over T; SpikingJelly's runs on T*B images (plus a LIF after it).

Times: median over ``--reps`` of CUDA-event time (CPU: ``perf_counter``, and the process's CPU time
``cpu_median_ms``, which leaves out waiting for a core on a shared machine) around the Python step after
``--warmup`` steps (compilation happens in warm-up and is timed separately); peak memory is
``max_memory_allocated`` after a reset that follows the warm-up. Every row records the LIF path that ran
(counted during an untimed eager forward; see ``bench/_sj.py``). Writes
``bench/results/train_step_<device>_<UTC time>.json``, rewritten after every row, so a late failure keeps
what finished. Needs CUDA (or ``--device cpu``): one line and exit 2 otherwise.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, bench/_sj.py
import _common  # noqa: E402
import _sj  # noqa: E402
from _common import Recorder, error_line, event_times_ms, free_memory, stamped  # noqa: E402

MODELS = ("bw_resnet18", "sj_spiking_resnet18", "sj_spiking_resnet18_precision", "torchvision_resnet18")
PRECISION = dict(mode="bf16", neuron_storage="bf16", neuron_fwd="bf16", neuron_bwd="bf16")
# the LIF both SNNs use (SpikingJelly's spiking_resnet recipe: ATan, detach_reset)
NEURON = dict(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=True)
SURROGATE = ("ATan", dict(alpha=2.0))
GPU_DEFAULTS = dict(batch=64, T=2, img=224, stem="imagenet", amp="bf16", reps=15, warmup=3)
CPU_DEFAULTS = dict(batch=16, T=4, img=32, stem="cifar", amp="off", reps=5, warmup=2)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--models", nargs="+", choices=MODELS, default=None,
                   help="default: all on CUDA; bw_resnet18 sj_spiking_resnet18 on the CPU")
    p.add_argument("--compile-models", nargs="*", choices=MODELS, default=None,
                   help="which of --models also run compiled (default: all of them)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--batch", type=int)
    p.add_argument("--T", type=int)
    p.add_argument("--img", type=int)
    p.add_argument("--stem", choices=("imagenet", "cifar"))
    p.add_argument("--amp", choices=("bf16", "off"))
    p.add_argument("--reps", type=int)
    p.add_argument("--warmup", type=int, help="steps before timing (compiled: at least 2)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/train_step_<device>_<UTC time>.json)")
    args = p.parse_args(argv)
    defaults = GPU_DEFAULTS if args.device == "cuda" else CPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.models is None:
        args.models = list(MODELS) if args.device == "cuda" else ["bw_resnet18", "sj_spiking_resnet18"]
    if args.no_compile:
        args.compile_models = []
    elif args.compile_models is None:
        args.compile_models = [m for m in args.models if m != "sj_spiking_resnet18_precision"]
    args.compile_models = [m for m in args.compile_models if m in args.models]
    return args


def runs(args) -> list[tuple[str, bool]]:
    """(model, compiled) in the order measured: every eager run first, then the compiled ones."""
    return [(m, False) for m in args.models] + [(m, True) for m in args.compile_models]


def repeat_T(x: torch.Tensor, T: int) -> torch.Tensor:
    """``[N, ...] -> [T, N, ...]`` by a cat over the batch dim and a view: keeps x's memory format."""
    return torch.cat([x] * T).view(T, *x.shape)


class _RepeatT(torch.nn.Module):
    """SpikingJelly's multi-step convention: [N,C,H,W] -> [T,N,C,H,W] in, [T,N,K] -> [N,K] out."""

    def __init__(self, net: torch.nn.Module, T: int):
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x):
        return self.net(repeat_T(x, self.T)).mean(0)


def surrogate():
    from spikingjelly.activation_based import surrogate as sj_surrogate

    return getattr(sj_surrogate, SURROGATE[0])(**SURROGATE[1])


def build(name: str, args) -> torch.nn.Module:
    if name == "bw_resnet18":
        from sj_bwsnn.models.bw_resnet import bw_resnet18
        from sj_bwsnn.neuron import LIFNode

        return bw_resnet18(T=args.T, num_classes=1000, stem=args.stem, neuron=LIFNode,
                           neuron_kwargs=dict(NEURON, surrogate_function=surrogate(), backend="auto"))
    if name.startswith("sj_spiking_resnet18"):
        from spikingjelly.activation_based import functional, layer, neuron
        from spikingjelly.activation_based.model import spiking_resnet

        net = spiking_resnet.spiking_resnet18(spiking_neuron=neuron.LIFNode, surrogate_function=surrogate(),
                                              **NEURON)
        if args.stem == "cifar":  # the CIFAR stem of ours: 3x3/1 conv, no max-pool
            net.conv1 = layer.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = torch.nn.Identity()
        functional.set_step_mode(net, "m")
        return _RepeatT(net, args.T)
    if name == "torchvision_resnet18":
        import torchvision

        net = torchvision.models.resnet18(num_classes=1000)
        if args.stem == "cifar":
            net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = torch.nn.Identity()
        return net
    raise ValueError(name)


def batch_of(name: str, args) -> int:
    return args.T * args.batch if name == "torchvision_resnet18" else args.batch


def stem_note(args) -> dict:
    """The stem work each SNN does per step, in multiply-accumulates (convolution only)."""
    if args.stem == "imagenet":
        k, stride, out = 7, 2, args.img // 2
    else:
        k, stride, out = 3, 1, args.img
    per_image = out * out * 64 * 3 * k * k
    ours, sj = args.batch * per_image, args.T * args.batch * per_image
    return dict(kind=f"{k}x{k}/{stride} conv", ours_images=args.batch, sj_images=args.T * args.batch,
                ours_gmac=ours / 1e9, sj_gmac=sj / 1e9,
                text=(f"stem ({k}x{k}/{stride} conv + BN{' + max-pool' if args.stem == 'imagenet' else ''}): "
                      f"ours runs it once on B={args.batch} images ({ours / 1e9:.2f} GMAC forward) and repeats "
                      f"its output over T={args.T}; SpikingJelly's runs on T*B={args.T * args.batch} images "
                      f"({sj / 1e9:.2f} GMAC) and adds a LIF after it"))


def measure(name: str, compiled: bool, args, device: torch.device) -> dict:
    """One row; the model is built here, inside the caller's guard, and freed by the caller."""
    from spikingjelly.activation_based import functional

    cuda = device.type == "cuda"
    batch = batch_of(name, args)
    torch.manual_seed(0)
    model = build(name, args).to(device).to(memory_format=torch.channels_last)
    amp = None if args.amp == "off" else torch.bfloat16
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else None
    if name == "sj_spiking_resnet18_precision":
        from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

        artifacts = prepare_model_for_precision(model, device, PrecisionConfig(**PRECISION))
        model, ctx = artifacts.model, artifacts.autocast_context
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    run = torch.compile(model, mode=args.compile_mode) if compiled else model
    x = torch.randn(batch, 3, args.img, args.img, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def forward(net):
        if ctx is None:
            return net(x)
        with ctx():
            return net(x)

    def step():
        loss = F.cross_entropy(forward(run).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        functional.reset_net(model)

    row = dict(model=name, compiled=compiled, compile_mode=args.compile_mode if compiled else None,
               batch=batch, T=None if name.startswith("torchvision") else args.T,
               dtype="bfloat16 autocast" if name.endswith("_precision") or amp else "float32",
               precision_api=PRECISION if name.endswith("_precision") else None,
               neurons=_sj.neuron_settings(model), warmup=args.warmup, reps=args.reps,
               params=sum(p.numel() for p in model.parameters()))
    with torch.no_grad(), _sj.lif_paths() as counts:  # untimed eager forward: which LIF path runs
        forward(model)
    functional.reset_net(model)
    row.update(lif_paths=dict(counts), sj_selection=_sj.lif_selection())
    row["ran"] = _sj.describe(counts, row["sj_selection"], device.type, compiled)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    row["warmup_s"] = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if cuda:
        times = event_times_ms(step, args.reps, warmup=0, cuda=True)
    else:  # wall time, and this process's CPU time (robust to a shared machine with --threads 1)
        times, cpu = _common.wall_and_cpu_times_ms(step, args.reps)
        row.update(cpu_median_ms=statistics.median(cpu), cpu_times_ms=cpu)
    row.update(_common.summary_ms(times))
    row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    if compiled:
        row["sj_selection_after"] = _sj.lif_selection()
    return row


def print_rows(rows):
    print(f"\n{'model':30} {'compiled':>8} {'batch':>5} {'ms/step':>9} {'CPU ms':>9} {'peak GiB':>8}  LIF that ran")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:30} {str(r['compiled']):>8} {r['batch']:>5}  failed: {r['error'][:90]}")
        else:
            peak = f"{r['peak_mem_gib']:8.2f}" if r.get("peak_mem_gib") is not None else f"{'-':>8}"
            cpu = f"{r['cpu_median_ms']:9.2f}" if "cpu_median_ms" in r else f"{'-':>9}"
            print(f"{r['model']:30} {str(r['compiled']):>8} {r['batch']:>5} {r['median_ms']:9.2f} {cpu} {peak}  "
                  f"{r.get('ran', '')}")


def main(argv=None) -> int:
    args = parse_args(argv)
    needs = ["spikingjelly.activation_based.neuron", "spikingjelly.activation_based.model.spiking_resnet"]
    if "bw_resnet18" in args.models:
        needs += ["sj_bwsnn.models.bw_resnet"]
    if "torchvision_resnet18" in args.models:
        needs += ["torchvision"]
    if "sj_spiking_resnet18_precision" in args.models:
        needs += ["spikingjelly.activation_based.precision"]
    _common.preflight("bench/train_step.py", cuda=args.device == "cuda", modules=needs)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    stem = stem_note(args)
    print(stem["text"], flush=True)
    out = args.out or stamped(Path(__file__).parent / "results", "train_step")
    rec = Recorder(out, "bench/train_step.py", T=args.T, batch=args.batch, image=args.img, stem=args.stem,
                   stem_difference=stem, autocast=None if args.amp == "off" else "bfloat16",
                   memory_format="channels_last", optimizer="SGD(lr=0.01, momentum=0.9)",
                   neuron=dict(NEURON, surrogate=f"{SURROGATE[0]}({SURROGATE[1]})"),
                   models=args.models, compile_models=args.compile_models, compile_mode=args.compile_mode,
                   reps=args.reps, warmup=args.warmup, cudnn_benchmark=torch.backends.cudnn.benchmark)
    try:
        for name, compiled in runs(args):
            print(f"{name} {'compiled' if compiled else 'eager'} ...", flush=True)
            try:
                row = measure(name, compiled, args, device)
            except Exception as exc:  # noqa: BLE001 - record why a configuration could not run
                row = dict(model=name, compiled=compiled, batch=batch_of(name, args), error=error_line(exc))
            finally:
                free_memory(dynamo=compiled)
            rec.add(row)
            print("  " + (f"{row['median_ms']:.2f} ms/step  [{row['ran']}]" if "error" not in row
                          else f"failed: {row['error']}"), flush=True)
    except BaseException as exc:
        rec.fail(exc)
        print_rows(rec.rows)
        raise
    print_rows(rec.rows)
    print(stem["text"])
    settings = {r["model"]: r["neurons"] for r in rec.rows if r.get("neurons")}
    if "bw_resnet18" in settings and "sj_spiking_resnet18" in settings:
        same = _sj.same_dynamics(settings["bw_resnet18"], settings["sj_spiking_resnet18"])
        rec.data["neurons_identical"] = same
        print("neuron settings: " + ("identical in both SNNs" if same else "DIFFER between the SNNs (see JSON)"))
    rec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
