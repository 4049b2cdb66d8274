"""Import check before any benchmark: one line, exit 0 when everything the benchmarks import is there.

    PYTHONPATH=/tmp/site:$PWD python bench/check_imports.py          # a GPU machine
    PYTHONPATH=$PWD python bench/check_imports.py --cpu              # no CUDA, no CuPy, no Triton needed

Imports what sj_bwsnn and SpikingJelly 2.0 import at import time (numpy, PyYAML, loguru, h5py — SJ's
model package imports it through spikformer -> distributed/vision/inference.py —, timm, torchvision,
SpikingJelly's neuron, model and precision packages, sj_bwsnn and its trainer) and, on a GPU machine,
Triton and CuPy, and checks that CUDA is visible. Otherwise one line per problem naming the wheel to
bring (bench/README.md says how) and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
import _common  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="skip CUDA, CuPy and Triton")
    args = p.parse_args(argv)
    import torch

    problems = _common.check_imports(_common.BENCH_IMPORTS + (() if args.cpu else _common.GPU_IMPORTS))
    if not args.cpu and not torch.cuda.is_available():
        problems.append(f"CUDA is not visible to torch {torch.__version__} (torch.cuda.is_available() is False)")
    if forced := _common.forced_sj_implementations():
        problems.append(f"unset {', '.join(forced)}: a forced SpikingJelly implementation makes its bf16 "
                        "fallbacks raise")
    if problems:
        for line in problems:
            print(f"check_imports: {line}")
        return 2
    v = _common.versions()
    print("imports ok: " + ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "cuda", "triton", "torchvision",
                                                              "spikingjelly", "timm", "cupy") if v.get(k)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
