"""Host time of the fused neuron's Python glue, measured on the CPU with a launcher that does nothing.

    PYTHONPATH=$PWD python bench/host_glue.py [--calls 500] [--out bench/results]

Every microsecond the fused path spends in Python before and after its two kernel launches is paid on
each neuron layer of each training step, and at small sizes it is more than the kernels. This script
times one LIF layer call the way ``bench/lif.py`` does on a GPU (``reset_net``, multi-step forward,
``torch.autograd.grad``) but on tiny CPU tensors with a no-op launcher, so what it measures is the glue
alone: dispatch, config, allocation of the outputs, the autograd node, the backward's argument
handling. Rows:

* ``eager fused path`` — what a user's eager model runs (``torch.autograd.Function``);
* ``custom op path`` — the same call through the ``torch.library`` ops that ``torch.compile`` uses,
  called eagerly (why eager mode does not use them);
* ``forward only, no_grad`` — evaluation;
* ``floor: x*1 + autograd.grad`` — the autograd engine's own cost for a one-op graph here, which no
  implementation can avoid.

The CuPy launch itself (argument packing, about two launches per call) is not included: it needs a GPU;
``bench/lif.py`` reports the full host issue time there. Figures depend on the CPU: compare rows of one
run. Writes ``<out>/host_glue_<machine>_<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
from _common import stamped, write_record  # noqa: E402


class NoopLauncher:
    """Takes the launcher's arguments and launches nothing."""

    def forward(self, *args):
        pass

    def backward(self, *args):
        pass


def per_call_us(fn, calls: int, reps: int = 7) -> list[float]:
    for _ in range(max(calls // 5, 20)):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t0) / calls * 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from spikingjelly.activation_based import functional

    from sj_bwsnn.neuron import LIFNode, fused, nodes

    fused.set_launcher(NoopLauncher())
    nodes.check_backend_available = lambda backend, device: None  # let 'cupy' take CPU tensors here

    node = LIFNode(step_mode="m", backend="cupy")
    x = torch.randn(4, 8, 16, requires_grad=True)
    grad = torch.randn_like(x)

    def eager():
        functional.reset_net(node)
        torch.autograd.grad(node(x), x, grad)

    def custom_op():
        cfg = [1, 1, 0, 0, 0, 0, 1]
        spike = fused._forward_op(x, None, 0.0, cfg, 2.0, 1.0, 0.0, 4.0, False)[0]
        torch.autograd.grad(spike, x, grad)

    def forward_no_grad():
        functional.reset_net(node)
        with torch.no_grad():
            node(x)

    def floor():
        torch.autograd.grad(x * 1.0, x, grad)

    cases = {"eager fused path": eager, "custom op path": custom_op,
             "forward only, no_grad": forward_no_grad, "floor: x*1 + autograd.grad": floor}
    rows = []
    for name, fn in cases.items():
        times = per_call_us(fn, args.calls)
        rows.append(dict(case=name, median_us=statistics.median(times), min_us=min(times), times_us=times))
    floor_us = rows[-1]["median_us"]
    print(f"{'case':30} {'median us':>10} {'min us':>8} {'- floor':>8}")
    for r in rows:
        print(f"{r['case']:30} {r['median_us']:10.1f} {r['min_us']:8.1f} {r['median_us'] - floor_us:8.1f}")
    write_record(stamped(args.out, "host_glue"), "bench/host_glue.py", torch_threads=1, shape=list(x.shape), calls=args.calls, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
