"""Multi-step LIF forward+backward: sj_bwsnn's fused CuPy kernel vs SpikingJelly 2.0 vs the byte floor.

    PYTHONPATH=$PWD python bench/lif.py [--T 2 4 8] [--reps 15] [--contenders ...] [--out FILE]

Shape T x 64x128x32x32 (M = 8,388,608 neurons). Contenders (``--contenders``, default all):

* ``sj_bwsnn_cupy`` — our ``LIFNode(backend='cupy')``, fp32 and bf16 input, plus its kernels alone
  (``kernels only``: events around bare launcher calls, no autograd or allocation);
* ``sj_auto_fp32`` — SpikingJelly's ``LIFNode`` with ``SJ_LIF_CUDA_IMPLEMENTATION=auto`` (Triton
  in the PyPI wheel);
* ``sj_torch_fp32`` — the same with ``SJ_LIF_CUDA_IMPLEMENTATION=torch`` (its Torch reference as an op);
* ``sj_auto_bf16`` — bf16 input with ``auto``: the state takes the input's dtype, so SpikingJelly falls
  back to its Torch reference (forcing ``triton`` or ``torch`` raises there);
* ``sj_precision_bf16`` — SpikingJelly's precision API, ``prepare_model_for_precision`` with
  ``PrecisionConfig(mode='bf16', neuron_storage='bf16', neuron_fwd='bf16', neuron_bwd='bf16')``:
  its Triton mixed-precision kernels.

SpikingJelly reads the environment variable once per process and caches its choice per device, so each
contender runs in its own subprocess with the variable set for that process only (never export it for a
session: non-auto values make the bf16 fallbacks raise), and every row records the implementation that
actually ran (calls counted into each of SpikingJelly's paths during an untimed call, plus its
selection cache; see ``bench/_sj.py``).

Per row: the median over ``--reps`` of CUDA-event time around the Python call (forward +
``torch.autograd.grad``; host work counts) after ``--warmup`` calls, every rep, and the host issue time
per call (short bursts started on an idle GPU, see ``_common.host_issue_us``). Byte floor:
``(6*T*element_size + 4) * M`` bytes — x read, spikes and H written forward; grad_s and H read, grad_x
written backward; and the fp32 ``v_last`` write — at the measured device-to-device copy bandwidth.
Writes ``bench/results/lif_<gpu>_<UTC time>.json`` (rewritten after every contender). Needs CUDA
(and CuPy for ``sj_bwsnn_cupy``): one line and exit 2 otherwise. ``--device cpu --shape 2 8 4 4``
runs the orchestration on the CPU (a smoke run; no floor, no host time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, bench/_sj.py
import _common  # noqa: E402
from _common import Recorder, error_line, event_times_ms, free_memory, host_issue_us, stamped  # noqa: E402

M_SHAPE = (64, 128, 32, 32)
PRECISION = dict(mode="bf16", neuron_storage="bf16", neuron_fwd="bf16", neuron_bwd="bf16")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# name: (label, SJ_LIF_CUDA_IMPLEMENTATION for its process, dtypes)
CONTENDERS = {
    "sj_bwsnn_cupy": ("sj_bwsnn fused CuPy kernel", "auto", ("float32", "bfloat16")),
    "sj_auto_fp32": ("SJ 2.0 auto", "auto", ("float32",)),
    "sj_torch_fp32": ("SJ 2.0 forced Torch reference", "torch", ("float32",)),
    "sj_auto_bf16": ("SJ 2.0 auto, bf16 input (bf16 state: Torch reference fallback)", "auto", ("bfloat16",)),
    "sj_precision_bf16": ("SJ 2.0 precision API, bf16 storage/fwd/bwd (Triton)", "auto", ("bfloat16",)),
}
WARMUP = 3


def byte_floor_bytes(T: int, element_size: int, M: int) -> int:
    """Bytes a fused multi-step LIF forward+backward must move: ``(6*T*element_size + 4) * M``."""
    return (6 * T * element_size + 4) * M


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def copy_bandwidth(device: torch.device, elements: int = 1 << 28) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + written); 1 GiB fp32 by default."""
    src = torch.empty(elements, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = statistics.median(event_times_ms(lambda: dst.copy_(src), reps=10, cuda=device.type == "cuda"))
    return 2 * elements * 4 / (ms * 1e-3)  # the buffers go with this frame; the caller frees the cache


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", nargs="+", type=int, default=[2, 4, 8])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=WARMUP)
    p.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    p.add_argument("--shape", nargs="+", type=int, default=list(M_SHAPE), help="one step's shape")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--child-timeout", type=float, default=300, help="seconds per contender process")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/lif_<device>_<UTC time>.json)")
    p.add_argument("--child", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- one contender (child)

def make_call(name: str, x: torch.Tensor, grad: torch.Tensor):
    """The timed call: reset, forward, ``autograd.grad`` through one fresh node."""
    from spikingjelly.activation_based import functional

    if name == "sj_bwsnn_cupy":
        from sj_bwsnn.neuron import LIFNode

        node, ctx = LIFNode(step_mode="m", backend="cupy"), None
    else:
        from spikingjelly.activation_based import neuron as sj_neuron

        node, ctx = sj_neuron.LIFNode(step_mode="m"), None
        if name == "sj_precision_bf16":
            from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

            artifacts = prepare_model_for_precision(node, x.device, PrecisionConfig(**PRECISION))
            node, ctx = artifacts.model, artifacts.autocast_context

    def call():
        functional.reset_net(node)
        if ctx is None:
            spikes = node(x)
        else:
            with ctx():
                spikes = node(x)
        torch.autograd.grad(spikes, x, grad)

    return call


def kernel_only(T: int, shape, dtype: torch.dtype, reps: int, warmup: int) -> dict:
    """Device time of one forward + backward launch pair of our kernels, no autograd or allocation."""
    from sj_bwsnn.neuron import fused
    from sj_bwsnn.neuron.kernels import DTYPE_CODES, KernelConfig

    cfg = KernelConfig(True, True, False, DTYPE_CODES[dtype], 0, False, True)  # LIFNode's defaults
    x = torch.randn(T, *shape, device="cuda").to(dtype)
    spike, m, grad_x = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    v_last = torch.empty(shape, device="cuda")
    launcher = fused.get_launcher()

    def pair():  # the state after reset_net (v0 = None, v_init = 0), as in the timed calls
        launcher.forward(cfg, x, None, 0.0, spike, m, v_last, None, 2.0, 1.0, 0.0)
        launcher.backward(cfg, spike, None, None, m, grad_x, None, 2.0, 1.0, 0.0, 4.0)

    burst = 10
    times = [t / burst for t in event_times_ms(lambda: [pair() for _ in range(burst)], reps=reps, warmup=warmup)]
    return dict(_common.summary_ms(times), launch_pairs_per_rep=burst)


def run_child(args) -> int:
    """Measure one contender in this process and write its rows to ``--child-out`` after each."""
    import _sj

    name = args.child
    label, _, dtypes = CONTENDERS[name]
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    out = dict(contender=name, requested=os.environ.get(_sj.LIF_ENV, "auto"), rows=[])
    _common.write_json(args.child_out, out)
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        for T in args.T:
            row = dict(contender=name, impl=label, requested=out["requested"], dtype=dtype_name, T=T,
                       warmup=args.warmup, reps=args.reps)
            x = grad = call = None
            try:
                torch.manual_seed(0)
                x = torch.randn(T, *args.shape, device=device).to(dtype).requires_grad_()
                grad = torch.randn_like(x)
                call = make_call(name, x, grad)
                with _sj.lif_paths() as counts:  # untimed: which path runs
                    call()
                selection = _sj.lif_selection()
                row.update(ran=_sj.describe(counts, selection, device.type), paths=dict(counts),
                           sj_selection=selection)
                times = event_times_ms(call, args.reps, warmup=args.warmup, cuda=cuda)
                row.update(_common.summary_ms(times))
                if cuda:
                    row["host_issue"] = host_issue_us(call)
                    row["host_issue_us"] = row["host_issue"]["median_us"]
            except Exception as exc:  # noqa: BLE001 - record why this configuration is unavailable
                row["error"] = error_line(exc)
            finally:
                del x, grad, call
                free_memory()
            out["rows"].append(row)
            _common.write_json(args.child_out, out)
            print(f"  {name:18} {dtype_name:9} T={T}: "
                  + (f"{row['median_ms']:.3f} ms  [{row['ran']}]" if "error" not in row else row["error"]),
                  flush=True)
            if name == "sj_bwsnn_cupy" and cuda:
                krow = dict(contender=name, impl="sj_bwsnn kernels only", dtype=dtype_name, T=T,
                            warmup=args.warmup, reps=args.reps, ran="sj_bwsnn CuPy kernels, bare launcher")
                try:
                    krow.update(kernel_only(T, args.shape, dtype, args.reps, args.warmup))
                except Exception as exc:  # noqa: BLE001
                    krow["error"] = error_line(exc)
                free_memory()
                out["rows"].append(krow)
                _common.write_json(args.child_out, out)
    return 0


# ----------------------------------------------------------------------------- orchestration (parent)

def child_env(requested: str, base=None) -> dict:
    """The environment of one contender's process: ``base`` with SJ_LIF_CUDA_IMPLEMENTATION set."""
    import _sj

    env = dict(os.environ if base is None else base)
    env[_sj.LIF_ENV] = requested
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def child_command(name: str, args, child_out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-out", str(child_out),
            "--T", *map(str, args.T), "--reps", str(args.reps), "--warmup", str(args.warmup),
            "--shape", *map(str, args.shape), "--device", args.device]


def run_contender(name: str, args, tmp: Path) -> tuple[list[dict], str | None]:
    """Run one contender in its own process; its rows (what it finished) and an error line or None."""
    child_out = tmp / f"{name}.json"
    requested = CONTENDERS[name][1]
    error = None
    try:
        proc = subprocess.run(child_command(name, args, child_out), env=child_env(requested),
                              timeout=args.child_timeout)
        if proc.returncode != 0:
            error = f"contender process exited with status {proc.returncode}"
    except subprocess.TimeoutExpired:
        error = f"contender process killed after {args.child_timeout:.0f} s"
    try:
        rows = json.loads(child_out.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        rows = []
    return rows, error


def add_floor(row: dict, bandwidth: float | None, M: int) -> dict:
    if bandwidth and "median_ms" in row:
        size = torch.empty((), dtype=DTYPES[row["dtype"]]).element_size()
        row["floor_ms"] = byte_floor_bytes(row["T"], size, M) / bandwidth * 1e3
        row["x_floor"] = row["median_ms"] / row["floor_ms"]
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\n{'implementation':58} {'dtype':9} {'T':>2} {'ms':>8} {'x floor':>8} {'host us':>8}  ran")
    for r in rows:
        if "error" in r:
            print(f"{r['impl'][:58]:58} {r['dtype']:9} {r['T']:>2}  unavailable: {r['error'][:70]}")
            continue
        floor = f"{r['x_floor']:8.2f}" if "x_floor" in r else f"{'-':>8}"
        host = f"{r['host_issue_us']:8.1f}" if "host_issue_us" in r else f"{'-':>8}"
        print(f"{r['impl'][:58]:58} {r['dtype']:9} {r['T']:>2} {r['median_ms']:8.3f} {floor} {host}  {r.get('ran', '')}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    needs = ["spikingjelly.activation_based.neuron", "spikingjelly.activation_based.precision"]
    cupy = "sj_bwsnn_cupy" in args.contenders and args.device == "cuda"
    if "sj_bwsnn_cupy" in args.contenders:
        needs.append("sj_bwsnn.neuron")
    _common.preflight("bench/lif.py", cuda=args.device == "cuda", cupy=cupy, modules=needs)
    device = torch.device(args.device)
    M = numel(args.shape)
    out = args.out or stamped(Path(__file__).parent / "results", "lif")
    rec = Recorder(out, "bench/lif.py", shape=[None, *args.shape], M=M, T=args.T, reps=args.reps,
                   warmup=args.warmup, contenders={n: CONTENDERS[n][:2] for n in args.contenders},
                   precision_config=PRECISION, node="LIFNode(step_mode='m') defaults: tau=2, decay_input, "
                   "v_threshold=1, v_reset=0, Sigmoid(alpha=4), detach_reset=False",
                   floor="(6*T*element_size + 4)*M bytes at the measured copy bandwidth")
    try:
        bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
        free_memory()
        rec.data["copy_bandwidth_bytes_per_s"] = bandwidth
        rec.save()
        with tempfile.TemporaryDirectory(prefix="bench_lif_") as tmp:
            for name in args.contenders:
                print(f"{name}: own process, SJ_LIF_CUDA_IMPLEMENTATION={CONTENDERS[name][1]}", flush=True)
                rows, error = run_contender(name, args, Path(tmp))
                for row in rows:
                    rec.add(add_floor(row, bandwidth, M))
                if error:
                    rec.add(dict(contender=name, impl=CONTENDERS[name][0], dtype="-", T="-", error=error))
        if bandwidth:
            for dtype_name, dtype in DTYPES.items():
                for T in args.T:
                    floor = byte_floor_bytes(T, torch.empty((), dtype=dtype).element_size(), M) / bandwidth * 1e3
                    rec.add(dict(contender="floor", impl="byte floor", dtype=dtype_name, T=T, median_ms=floor,
                                 floor_ms=floor, x_floor=1.0))
    except BaseException as exc:
        rec.fail(exc)
        print_table(rec.rows)
        raise
    print_table(rec.rows)
    rec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
