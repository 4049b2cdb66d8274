"""Compile every configuration of sj_bwsnn/neuron/kernels/multistep.cu with NVRTC — no GPU needed.

A dev check (not a test): proves the CUDA source compiles for the GPU before a GPU run. It drives
libnvrtc through ctypes (the copy in the nvidia-* wheels that CUDA builds of torch install, or one
on the library path), the same compiler CuPy's RawModule uses.

    PYTHONPATH=$PWD python bench/compile_check.py [--arch compute_90] [--quick]

Prints one line per failing configuration with NVRTC's log and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import itertools
import os
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py
import _common  # noqa: E402


# What cupy.RawModule (CuPy 14) adds to our options: see cupy/cuda/compiler.py.
CUPY_OPTIONS = ("-std=c++17", "--device-as-default-execution-space", "-ftz=true")


def load_nvrtc() -> ctypes.CDLL:
    site = sysconfig.get_paths()["purelib"]
    candidates = sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*")))
    candidates += sorted(glob.glob(os.path.join(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    candidates += [found] if found else []
    for path in candidates:
        if "alt" in os.path.basename(path) or "builtins" in os.path.basename(path):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    print("compile_check: no libnvrtc found (install a CUDA build of torch or cuda-nvrtc)")
    sys.exit(2)


def compile_one(nvrtc, src: bytes, options: list[str]) -> tuple[bool, str]:
    prog = ctypes.c_void_p()
    rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, b"multistep.cu", 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram failed: {rc}"
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = nvrtc.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log.value.decode(errors="replace").strip()


def configs(quick: bool):
    from sj_bwsnn.neuron.kernels import SURROGATE_IDS, KernelConfig

    surrogates = (0, 2) if quick else tuple(SURROGATE_IDS.values())
    for lif, decay, soft, dtype, sur, detach, temporal in itertools.product(
            (True, False), (True, False), (True, False), (0, 1, 2), surrogates, (True, False), (True, False)):
        if not lif and not decay:  # IF has no decay_input; one build covers it
            continue
        yield KernelConfig(lif, decay, soft, dtype, sur, detach, temporal)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", help="sm_XX (cubin, what CuPy builds) or compute_XX (PTX)")
    parser.add_argument("--quick", action="store_true", help="two surrogates instead of all seven")
    args = parser.parse_args()
    _common.preflight("bench/compile_check.py", cuda=False, modules=["sj_bwsnn.neuron.kernels"],
                      allow_forced_sj=True)
    from sj_bwsnn.neuron.kernels import source

    nvrtc = load_nvrtc()
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    src = source().encode()
    n = failed = 0
    for cfg in configs(args.quick):
        ok, log = compile_one(nvrtc, src, [f"--gpu-architecture={args.arch}", *CUPY_OPTIONS, *cfg.defines()])
        n += 1
        if not ok or log:
            print(f"{'FAIL' if not ok else 'warn'} {cfg}: {log}")
        failed += not ok
    print(f"NVRTC {major.value}.{minor.value}, {args.arch}: {n - failed}/{n} configurations compiled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
