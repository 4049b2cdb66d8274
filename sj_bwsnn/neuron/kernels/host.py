"""``multistep.cu`` built as host C++ (g++) — a CPU stand-in for :class:`CupyLauncher`.

Used by the CPU tests to check the kernel math (and the autograd / custom-op glue around it) against
SpikingJelly's Torch reference without a GPU. Not a production backend: it is single-threaded and
needs g++ (>= 12 for fp16's ``_Float16``). Tensors passed in must live on the CPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import SOURCE_PATH, KernelConfig, _ptr

SHIM_PATH = Path(__file__).with_name("host_shim.h")

_P, _LL, _D = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_double
_FORWARD_ARGS = [_P] * 6 + [_LL, _LL, _D, _D, _D, _D]
_BACKWARD_ARGS = [_P] * 6 + [_LL, _LL, _D, _D, _D, _D]


def compiler() -> str | None:
    """The g++ executable, or None when there is none."""
    return shutil.which("g++")


class HostLauncher:
    """Builds one shared library per :class:`KernelConfig` (cached for the process) and calls it."""

    def __init__(self, build_dir: str | None = None):
        if compiler() is None:
            raise RuntimeError("HostLauncher needs g++")
        self._dir = Path(build_dir or tempfile.mkdtemp(prefix="sjb_host_"))
        self._libs: dict = {}

    def library(self, cfg: KernelConfig) -> ctypes.CDLL:
        lib = self._libs.get(cfg)
        if lib is None:
            tag = hashlib.sha1((SOURCE_PATH.read_text() + repr(cfg)).encode()).hexdigest()[:16]
            out = self._dir / f"sjb_{tag}.so"
            if not out.exists():
                self._dir.mkdir(parents=True, exist_ok=True)
                cmd = [compiler(), "-O2", "-std=c++17", "-shared", "-fPIC", "-DSJB_HOST", *cfg.defines(),
                       "-include", str(SHIM_PATH), "-x", "c++", str(SOURCE_PATH), "-o", str(out)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"g++ failed on {SOURCE_PATH.name} for {cfg}:\n{done.stderr}")
            lib = ctypes.CDLL(str(out))
            lib.sjb_multistep_forward.argtypes = _FORWARD_ARGS
            lib.sjb_multistep_backward.argtypes = _BACKWARD_ARGS
            self._libs[cfg] = lib
        return lib

    def bind(self, cfg: KernelConfig, device, tau: float, v_th: float, v_reset: float, alpha: float):
        """The library's two functions with the scalars bound (``device`` is ignored: CPU only)."""
        return _HostBound(self.library(cfg), tau, v_th, v_reset, alpha)

    def forward(self, cfg, x, v0, v_init, spike, m, v_last, v_seq, tau, v_th, v_reset):
        self.library(cfg).sjb_multistep_forward(
            x.data_ptr(), _ptr(v0), spike.data_ptr(), _ptr(m), v_last.data_ptr(),
            _ptr(v_seq), x[0].numel(), x.shape[0], tau, v_th, v_reset, v_init)

    def backward(self, cfg, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0,
                 tau, v_th, v_reset, alpha):
        self.library(cfg).sjb_multistep_backward(
            grad_spike.data_ptr(), _ptr(grad_v_seq), _ptr(grad_v_last), m.data_ptr(),
            grad_x.data_ptr(), _ptr(grad_v0), m[0].numel(), m.shape[0], tau, v_th, v_reset, alpha)


class _HostBound:
    """:meth:`HostLauncher.bind`'s kernels (the ``BoundKernels`` signatures)."""

    def __init__(self, lib: ctypes.CDLL, tau: float, v_th: float, v_reset: float, alpha: float):
        self._fwd, self._bwd = lib.sjb_multistep_forward, lib.sjb_multistep_backward
        self._fwd_scalars, self._bwd_scalars = (tau, v_th, v_reset), (tau, v_th, v_reset, alpha)

    def forward(self, x, v0, v_init, spike, m, v_last, v_seq):
        T = x.shape[0]
        self._fwd(x.data_ptr(), _ptr(v0), spike.data_ptr(), _ptr(m), v_last.data_ptr(), _ptr(v_seq),
                  x.numel() // T, T, *self._fwd_scalars, v_init)

    def backward(self, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0):
        T = m.shape[0]
        self._bwd(grad_spike.data_ptr(), _ptr(grad_v_seq), _ptr(grad_v_last), m.data_ptr(), grad_x.data_ptr(),
                  _ptr(grad_v0), m.numel() // T, T, *self._bwd_scalars)
