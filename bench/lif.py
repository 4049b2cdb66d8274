"""Multi-step LIF forward+backward: sj_bwsnn's fused CuPy kernel vs SpikingJelly 2.0 vs the byte floor.

    PYTHONPATH=$PWD python bench/lif.py [--reps 15] [--out bench/results]

Shape T x 64x128x32x32 (M = 8,388,608 neurons), T in {2, 4, 8}, fp32 and bf16 input. For each
implementation: the median over ``--reps`` of CUDA-event time around the Python call (forward +
``torch.autograd.grad``; host work counts), the host issue time per call (perf_counter over a burst of
calls, no synchronisation inside), and for ours the kernel-only device time (events around bare launcher
calls). Byte floor: 6*T*M elements (x, spikes, H in; grad_s, H, grad_x) at the measured
device-to-device copy bandwidth. Writes every figure to ``<out>/lif_<gpu>_<utc date>.json``.
Needs CUDA and CuPy (one line and exit 2 otherwise); the methodology follows
/work/shared/docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
from _common import event_times_ms, refuse_without_gpu, stamped, write_record  # noqa: E402

M_SHAPE = (64, 128, 32, 32)


def host_issue_us(fn, calls: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (read + written)."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    ms = statistics.median(event_times_ms(lambda: dst.copy_(src), reps=10))
    return 2 * src.numel() * 4 / (ms * 1e-3)


@contextlib.contextmanager
def sj_lif_implementation(name: str):
    """Force SpikingJelly's CUDA LIF implementation (what SJ_LIF_CUDA_IMPLEMENTATION sets at import)."""
    from spikingjelly._ops.lif import _selection  # private; the env var is read once at import

    previous = _selection._requested
    _selection._requested = name
    try:
        yield
    finally:
        _selection._requested = previous


def fwd_bwd(node_factory, x: torch.Tensor, grad: torch.Tensor):
    from spikingjelly.activation_based import functional

    node = node_factory()

    def call():
        functional.reset_net(node)
        spikes = node(x)
        torch.autograd.grad(spikes, x, grad)

    return call


def kernel_only_ms(T: int, dtype: torch.dtype, reps: int) -> float:
    """Device time of one forward + backward launch pair, no autograd or allocation in the loop."""
    from sj_bwsnn.neuron import fused
    from sj_bwsnn.neuron.kernels import DTYPE_CODES, KernelConfig

    cfg = KernelConfig(True, True, False, DTYPE_CODES[dtype], 0, False, True)
    x = torch.randn(T, *M_SHAPE, device="cuda").to(dtype)
    spike, m, grad_x = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    v_last = torch.empty(M_SHAPE, device="cuda")
    launcher = fused.get_launcher()

    def pair():  # the state after reset_net (v0 = None, v_init = 0), as in the timed calls
        launcher.forward(cfg, x, None, 0.0, spike, m, v_last, None, 2.0, 1.0, 0.0)
        launcher.backward(cfg, spike, None, None, m, grad_x, None, 2.0, 1.0, 0.0, 4.0)

    burst = 10
    times = event_times_ms(lambda: [pair() for _ in range(burst)], reps=reps)
    return statistics.median(times) / burst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    refuse_without_gpu("bench/lif.py")

    from spikingjelly.activation_based import neuron as sj_neuron

    from sj_bwsnn.neuron import LIFNode

    bandwidth = copy_bandwidth()
    M = 1
    for d in M_SHAPE:
        M *= d
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for T in (2, 4, 8):
            x = torch.randn(T, *M_SHAPE, device="cuda").to(dtype).requires_grad_()
            grad = torch.randn_like(x)
            floor = 6 * T * M * x.element_size() / bandwidth * 1e3
            impls = {
                "sj_bwsnn cupy": (contextlib.nullcontext, lambda: LIFNode(step_mode="m", backend="cupy")),
                "SJ 2.0 auto (Triton for fp32)": (lambda: sj_lif_implementation("auto"),
                                                  lambda: sj_neuron.LIFNode(step_mode="m")),
                "SJ 2.0 Torch reference": (lambda: sj_lif_implementation("torch"),
                                           lambda: sj_neuron.LIFNode(step_mode="m")),
            }
            for name, (ctx, factory) in impls.items():
                with ctx():
                    call = fwd_bwd(factory, x, grad)
                    try:
                        times = event_times_ms(call, args.reps)
                        host = host_issue_us(call)
                    except Exception as exc:  # noqa: BLE001 - record why an SJ path is unavailable
                        rows.append(dict(impl=name, dtype=str(dtype), T=T, error=str(exc).splitlines()[0]))
                        continue
                rows.append(dict(impl=name, dtype=str(dtype), T=T, median_ms=statistics.median(times),
                                 min_ms=min(times), host_issue_us=host, floor_ms=floor,
                                 x_floor=statistics.median(times) / floor, times_ms=times))
            rows.append(dict(impl="sj_bwsnn cupy, kernels only", dtype=str(dtype), T=T,
                             median_ms=kernel_only_ms(T, dtype, args.reps), floor_ms=floor))
            rows[-1]["x_floor"] = rows[-1]["median_ms"] / floor
            rows.append(dict(impl="byte floor", dtype=str(dtype), T=T, median_ms=floor, floor_ms=floor))

    print(f"{'implementation':34} {'dtype':15} {'T':>2} {'ms':>8} {'x floor':>8} {'host us':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:34} {r['dtype']:15} {r['T']:>2}  unavailable: {r['error'][:60]}")
            continue
        host = f"{r['host_issue_us']:8.1f}" if "host_issue_us" in r else f"{'':8}"
        print(f"{r['impl']:34} {r['dtype']:15} {r['T']:>2} {r['median_ms']:8.3f} {r['x_floor']:8.2f} {host}")

    write_record(stamped(args.out, "lif"), "bench/lif.py", shape=[None, *M_SHAPE], reps=args.reps,
                 copy_bandwidth_bytes_per_s=bandwidth, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
