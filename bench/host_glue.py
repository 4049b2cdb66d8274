"""Host time of the fused neuron's Python glue, measured on the CPU with a launcher that does nothing.

    PYTHONPATH=$PWD python bench/host_glue.py [--calls 500] [--reps 15] [--label L] [--out bench/results]

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
  implementation can avoid;
* ``module + minimal Function`` — an ``nn.Module`` calling a ``torch.autograd.Function`` that only
  allocates what ours must (spikes, ``M``, the last state, the input gradient) and returns as many
  outputs, launching nothing: what any module built on a Python autograd Function pays, whatever
  its glue (no state reset, no dispatch, no checks).

The CuPy launch itself (argument packing, about two launches per call) is not included: it needs a GPU;
``bench/lif.py`` reports the full host issue time there. Figures depend on the CPU: compare rows of one
run. The cases are timed in turns (``--reps`` rounds of ``--calls`` calls each, the order rotating), with
the wall clock and with this thread's CPU time: on a shared machine the wall clock also counts the time
the process waits for a core, the CPU time does not, and the ratio to the floor is taken per round (both
measured in the same round) before the median. Writes ``<out>/host_glue[_<label>]_<machine>_<UTC>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
from _common import stamped, write_record  # noqa: E402


class NoopLauncher:
    """Takes the launcher's arguments and launches nothing (both interfaces: per-call and bound)."""

    def forward(self, *args):
        pass

    def backward(self, *args):
        pass

    def bind(self, *args):
        return self


def rounds(cases: dict, calls: int, reps: int) -> dict:
    """Per case, per round: microseconds per call, wall clock and thread CPU time (module docstring)."""
    for fn in cases.values():
        for _ in range(max(calls // 5, 20)):
            fn()
    names = list(cases)
    out = {name: {"wall_us": [], "cpu_us": []} for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            fn = cases[name]
            w0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                fn()
            c1, w1 = time.thread_time(), time.perf_counter()
            out[name]["wall_us"].append((w1 - w0) / calls * 1e6)
            out[name]["cpu_us"].append((c1 - c0) / calls * 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--label", default="", help="added to the file name (e.g. before / after)")
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

    class Minimal(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inp, v, state):
            spike, m = torch.empty_like(inp), torch.empty_like(inp)
            ctx.save_for_backward(m)
            ctx.set_materialize_grads(False)
            return spike, torch.empty_like(inp[0]), m

        @staticmethod
        def backward(ctx, grad_spike, grad_v, grad_m):
            (m,) = ctx.saved_tensors
            return torch.empty_like(m), None, None

    class MinimalModule(torch.nn.Module):
        def forward(self, inp):
            return Minimal.apply(inp, 0.0, None)[0]

    minimal = MinimalModule()

    def module_minimal():
        torch.autograd.grad(minimal(x), x, grad)

    cases = {"eager fused path": eager, "custom op path": custom_op,
             "forward only, no_grad": forward_no_grad, "module + minimal Function": module_minimal,
             "floor: x*1 + autograd.grad": floor}
    load_before = os.getloadavg()
    measured = rounds(cases, args.calls, args.reps)
    floor_rounds = measured["floor: x*1 + autograd.grad"]
    rows = []
    for name, m in measured.items():
        ratio = [c / f for c, f in zip(m["cpu_us"], floor_rounds["cpu_us"])]
        rows.append(dict(case=name, median_cpu_us=statistics.median(m["cpu_us"]),
                         median_wall_us=statistics.median(m["wall_us"]),
                         median_cpu_ratio_to_floor=statistics.median(ratio), cpu_us=m["cpu_us"],
                         wall_us=m["wall_us"]))
    print(f"{'case':30} {'cpu us':>8} {'x floor':>8} {'wall us':>8}   (medians of {args.reps} rounds)")
    for r in rows:
        print(f"{r['case']:30} {r['median_cpu_us']:8.1f} {r['median_cpu_ratio_to_floor']:8.2f} "
              f"{r['median_wall_us']:8.1f}")
    code = Path(sys.modules["sj_bwsnn"].__file__).resolve().parent.parent
    name = "host_glue" + (f"_{args.label}" if args.label else "")
    write_record(stamped(args.out, name), "bench/host_glue.py",
                 label=args.label, code=str(code), torch_threads=1, shape=list(x.shape), calls=args.calls,
                 reps=args.reps, load_average_before=load_before, load_average_after=os.getloadavg(),
                 rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
