"""CUDA source of the fused multi-step neurons and its CuPy loader.

``multistep.cu`` holds both kernels (forward, backward; see its header for the equations and what is
stored). One module is compiled per :class:`KernelConfig` with ``-D`` defines and cached per device.
:class:`CupyLauncher` launches them on PyTorch's current stream with raw ``data_ptr()`` integers:
no DLPack exchange, no host synchronisation. :mod:`.host` builds the same source with g++ for the
CPU tests and exposes the same methods.

A launcher has ``forward(cfg, ..., tau, v_th, v_reset)`` / ``backward(cfg, ..., alpha)`` taking every
argument per call, and ``bind(cfg, device, tau, v_th, v_reset, alpha)``, which does the per-configuration
work once (compiles the module, looks up the functions, packs the scalars, makes the device context)
and returns kernels that take only what changes per call (:class:`BoundKernels`' signatures). The
nodes call bound kernels; :func:`bind` wraps a launcher that has no ``bind`` (a test's stand-in).

This module imports no CuPy at import time, so CPU-only installs can import the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import torch
from spikingjelly.activation_based import surrogate as _sj_surrogate

SOURCE_PATH = Path(__file__).with_name("multistep.cu")

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

# SpikingJelly 2.0's fast-path surrogate ids (spikingjelly/_ops/surrogate.py); the kernel uses the same.
SURROGATE_IDS = {
    "Sigmoid": 0, "ATan": 1, "PiecewiseQuadratic": 2, "PiecewiseExp": 3,
    "SoftSign": 4, "SuperSpike": 5, "Erf": 6,
}

_SURROGATE_CLASSES = {getattr(_sj_surrogate, name): i for name, i in SURROGATE_IDS.items()}

BLOCK = 256


def surrogate_spec(fn) -> Optional[tuple[int, float]]:
    """``(kernel surrogate id, alpha)`` for a SpikingJelly surrogate the kernel implements, else None.

    Only SpikingJelly's own classes in spiking mode with a Python-number ``alpha`` qualify (a learnable
    tensor alpha or a user subclass has no in-kernel formula).
    """
    sid = _SURROGATE_CLASSES.get(type(fn))  # exact class: a subclass may change the formula
    if sid is None:
        return None
    alpha = getattr(fn, "alpha", None)
    if not getattr(fn, "spiking", True) or isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        return None
    return sid, float(alpha)


class KernelConfig(NamedTuple):
    """Compile-time configuration of one kernel module (the ``-D`` defines of ``multistep.cu``)."""

    lif: bool
    decay_input: bool
    soft_reset: bool
    dtype: int  # DTYPE_CODES value
    surrogate: int  # SURROGATE_IDS value
    detach_reset: bool
    temporal_grad: bool

    def defines(self) -> tuple[str, ...]:
        return (
            f"-DSJB_LIF={int(self.lif)}", f"-DSJB_DECAY_INPUT={int(self.decay_input)}",
            f"-DSJB_SOFT_RESET={int(self.soft_reset)}", f"-DSJB_DTYPE={int(self.dtype)}",
            f"-DSJB_SURROGATE={int(self.surrogate)}", f"-DSJB_DETACH_RESET={int(self.detach_reset)}",
            f"-DSJB_TEMPORAL_GRAD={int(self.temporal_grad)}",
        )


def source() -> str:
    return SOURCE_PATH.read_text()


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def current_stream_ptr(device: int) -> int:
    """The raw ``cudaStream_t`` of PyTorch's current stream on ``device``, read without building a
    ``torch.cuda.Stream`` object (the call ``torch.compile``'s generated code makes per launch)."""
    return torch._C._cuda_getCurrentRawStream(device)


class BoundKernels:
    """One configuration's kernels with its scalars bound, for any launcher (``launcher.forward`` and
    ``launcher.backward`` called with the bound arguments added); the launchers' own ``bind`` returns
    objects with these two methods that skip the per-call work."""

    __slots__ = ("launcher", "cfg", "tau", "v_th", "v_reset", "alpha")

    def __init__(self, launcher, cfg: KernelConfig, tau: float, v_th: float, v_reset: float, alpha: float):
        self.launcher, self.cfg = launcher, cfg
        self.tau, self.v_th, self.v_reset, self.alpha = tau, v_th, v_reset, alpha

    def forward(self, x, v0, v_init, spike, m, v_last, v_seq):
        self.launcher.forward(self.cfg, x, v0, v_init, spike, m, v_last, v_seq,
                              self.tau, self.v_th, self.v_reset)

    def backward(self, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0):
        self.launcher.backward(self.cfg, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0,
                               self.tau, self.v_th, self.v_reset, self.alpha)


def bind(launcher, cfg: KernelConfig, device: Optional[int], tau: float, v_th: float, v_reset: float,
         alpha: float):
    """``launcher.bind(...)`` when it has one, else :class:`BoundKernels` around it."""
    own = getattr(launcher, "bind", None)
    if own is None:
        return BoundKernels(launcher, cfg, tau, v_th, v_reset, alpha)
    return own(cfg, device, tau, v_th, v_reset, alpha)


class CupyLauncher:
    """Compiles (once per device and configuration) and launches the kernels with CuPy.

    Arguments go in as NumPy 64-bit scalars (pointers as uint64, sizes as int64, scalars as float64),
    which CuPy packs by item size, matching the kernels' pointer / ``long long`` / ``double`` parameters.
    (Plain Python ints would also become int64 in CuPy's packing, but the explicit types do not depend
    on that.) Inputs have ``T >= 1`` steps of ``M >= 1`` neurons (the callers skip empty tensors).
    """

    def __init__(self):
        import cupy
        import numpy

        self._cupy, self._np = cupy, numpy
        self._functions: dict = {}
        self._streams: dict = {}

    def _kernels(self, cfg: KernelConfig, device: int):
        key = (device, cfg)
        fns = self._functions.get(key)
        if fns is None:
            with self._cupy.cuda.Device(device):
                module = self._cupy.RawModule(code=source(), options=("-std=c++17", *cfg.defines()))
                fns = tuple(module.get_function(name).kernel
                            for name in ("sjb_multistep_forward", "sjb_multistep_backward"))
            self._functions[key] = fns
        return fns

    def _stream(self, device: int):
        ptr = current_stream_ptr(device)
        stream = self._streams.get(ptr)
        if stream is None:
            stream = self._streams[ptr] = self._cupy.cuda.ExternalStream(ptr, device)
        return stream

    def _launch(self, which: int, cfg: KernelConfig, device: int, M: int, args: tuple):
        fn = self._kernels(cfg, device)[which]
        grid = (min((M + BLOCK - 1) // BLOCK, 2**31 - 1),)  # the kernels' grid-stride loops cover the rest
        with self._cupy.cuda.Device(device):
            fn(grid, (BLOCK,), args, 0, self._stream(device))

    def bind(self, cfg: KernelConfig, device: int, tau: float, v_th: float, v_reset: float, alpha: float):
        """:class:`_CupyBound` kernels (compiled now, outside any CUDA graph capture)."""
        return _CupyBound(self, cfg, device, tau, v_th, v_reset, alpha)

    def forward(self, cfg, x, v0, v_init, spike, m, v_last, v_seq, tau, v_th, v_reset):
        P, L, D = self._np.uint64, self._np.int64, self._np.float64
        T = x.shape[0]
        M = x.numel() // T
        args = (P(x.data_ptr()), P(_ptr(v0)), P(spike.data_ptr()), P(_ptr(m)), P(v_last.data_ptr()),
                P(_ptr(v_seq)), L(M), L(T), D(tau), D(v_th), D(v_reset), D(v_init))
        self._launch(0, cfg, x.device.index, M, args)

    def backward(self, cfg, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0,
                 tau, v_th, v_reset, alpha):
        P, L, D = self._np.uint64, self._np.int64, self._np.float64
        T = m.shape[0]
        M = m.numel() // T
        args = (P(grad_spike.data_ptr()), P(_ptr(grad_v_seq)), P(_ptr(grad_v_last)), P(m.data_ptr()),
                P(grad_x.data_ptr()), P(_ptr(grad_v0)), L(M), L(T), D(tau), D(v_th), D(v_reset), D(alpha))
        self._launch(1, cfg, m.device.index, M, args)


class _CupyBound:
    """:meth:`CupyLauncher.bind`'s kernels: functions, device context and packed scalars made once;
    per call only the pointers, sizes, ``v_init`` and the current stream are read."""

    def __init__(self, launcher: CupyLauncher, cfg: KernelConfig, device: int, tau: float, v_th: float,
                 v_reset: float, alpha: float):
        np = launcher._np
        self._fwd, self._bwd = launcher._kernels(cfg, device)
        self._context = launcher._cupy.cuda.Device(device)
        self._stream, self._index = launcher._stream, device
        self._P, self._L, self._D = np.uint64, np.int64, np.float64
        D = np.float64
        self._fwd_scalars = (D(tau), D(v_th), D(v_reset))
        self._bwd_scalars = (D(tau), D(v_th), D(v_reset), D(alpha))

    def _launch(self, fn, M: int, args: tuple):
        grid = (min((M + BLOCK - 1) // BLOCK, 2**31 - 1),)
        with self._context:
            fn(grid, (BLOCK,), args, 0, self._stream(self._index))

    def forward(self, x, v0, v_init, spike, m, v_last, v_seq):
        P, L = self._P, self._L
        T = x.shape[0]
        M = x.numel() // T
        self._launch(self._fwd, M, (P(x.data_ptr()), P(_ptr(v0)), P(spike.data_ptr()), P(_ptr(m)),
                                    P(v_last.data_ptr()), P(_ptr(v_seq)), L(M), L(T), *self._fwd_scalars,
                                    self._D(v_init)))

    def backward(self, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0):
        P, L = self._P, self._L
        T = m.shape[0]
        M = m.numel() // T
        self._launch(self._bwd, M, (P(grad_spike.data_ptr()), P(_ptr(grad_v_seq)), P(_ptr(grad_v_last)),
                                    P(m.data_ptr()), P(grad_x.data_ptr()), P(_ptr(grad_v0)), L(M), L(T),
                                    *self._bwd_scalars))
