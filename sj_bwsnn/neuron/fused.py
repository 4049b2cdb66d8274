"""Fused multi-step LIF / IF (the ``'cupy'`` backend of :mod:`sj_bwsnn.neuron.nodes`).

Under ``torch.compile`` the kernels run inside two ``torch.library`` custom ops, so a compiled model
sees one opaque node per neuron layer (no graph break); eager mode calls the same implementations
through a ``torch.autograd.Function``, because the custom-op dispatcher and its autograd wrapper cost
roughly 2.5-3.5x more host time per forward+backward (measured on a CPU with a no-op launcher):

* ``sj_bwsnn::multistep_forward(x, v0?, v_init, cfg, tau, v_threshold, v_reset, alpha, store_v_seq)
  -> (spike, m, v_last, v_seq)`` with ``m = H - V_th`` saved for backward; ``v0`` None means every
  neuron starts at ``v_init`` (the state after ``reset_net``); ``v_seq`` is empty unless stored;
* ``sj_bwsnn::multistep_backward(grad_spike, grad_v_seq?, grad_v_last?, m, want_grad_v0, cfg, tau,
  v_threshold, v_reset, alpha) -> (grad_x, grad_v0)``.

``cfg`` is :class:`~.kernels.KernelConfig` as a list of ints; each distinct one compiles once.

Layouts: ``x`` must be time-major and dense (``x.stride(0) == x[0].numel()``, any dense layout of
one step, e.g. a channels_last conv output viewed as ``[T, N, C, H, W]``); the kernels index flat
memory, so every per-step tensor is allocated with ``empty_like`` and shares ``x``'s strides.
Dtypes: ``x`` / spikes / ``grad_x`` / ``m`` in fp32, fp16 or bf16 (autocast's bf16 conv outputs go
straight in); the membrane state ``v`` (``v0``, ``v_last``, ``v_seq``) is always fp32.
"""

from __future__ import annotations

from typing import Optional

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from torch import Tensor

from ..errors import UserError
from .kernels import DTYPE_CODES, SURROGATE_IDS, KernelConfig, surrogate_spec

_launcher = None


def get_launcher():
    """The object that runs the kernels (:class:`~.kernels.CupyLauncher`, created on first use)."""
    global _launcher
    if _launcher is None:
        from .kernels import CupyLauncher

        _launcher = CupyLauncher()
    return _launcher


def set_launcher(launcher) -> None:
    """Replace the launcher (tests use :class:`~.kernels.host.HostLauncher` to run on the CPU)."""
    global _launcher
    _launcher = launcher


def _same_layout(t: Optional[Tensor], ref: Tensor, dtype: torch.dtype) -> Optional[Tensor]:
    """``t`` as ``dtype`` with ``ref``'s strides (a copy only when needed)."""
    if t is None or (t.dtype == dtype and t.stride() == ref.stride()):
        return t
    return torch.empty_like(ref, dtype=dtype).copy_(t)


def _forward_outputs(x: Tensor, store_v_seq: bool, save_m: bool, placeholders: bool):
    """``(spike, m, v_last, v_seq)`` allocated like ``x``. An output that is not computed is ``None``
    in eager mode and an empty tensor in the custom op (whose schema needs tensors)."""
    absent = x.new_empty((0,), dtype=torch.float32) if placeholders else None
    return (torch.empty_like(x), torch.empty_like(x) if save_m else absent,
            torch.empty_like(x[0], dtype=torch.float32),
            torch.empty_like(x, dtype=torch.float32) if store_v_seq else absent)


def _forward_impl(x, v0, v_init, cfg, tau, v_threshold, v_reset, alpha, store_v_seq, save_m=True,
                  placeholders=True):
    spike, m, v_last, v_seq = _forward_outputs(x, store_v_seq, save_m, placeholders)
    if x.numel():
        get_launcher().forward(KernelConfig(*cfg), x, v0, v_init, spike, m if save_m else None, v_last,
                               v_seq if store_v_seq else None, tau, v_threshold, v_reset)
    elif v0 is not None:
        v_last.copy_(v0)
    else:
        v_last.fill_(v_init)
    return spike, m, v_last, v_seq


@torch.library.custom_op("sj_bwsnn::multistep_forward", mutates_args=())
def _forward_op(x: Tensor, v0: Optional[Tensor], v_init: float, cfg: list[int], tau: float,
                v_threshold: float, v_reset: float, alpha: float,
                store_v_seq: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _forward_impl(x, v0, v_init, cfg, tau, v_threshold, v_reset, alpha, store_v_seq)


@_forward_op.register_fake
def _forward_fake(x, v0, v_init, cfg, tau, v_threshold, v_reset, alpha, store_v_seq):
    return _forward_outputs(x, store_v_seq, save_m=True, placeholders=True)


def _backward_outputs(m: Tensor, want_grad_v0: bool, placeholders: bool):
    """``(grad_x, grad_v0)``; ``grad_v0`` when not computed as in :func:`_forward_outputs`."""
    if want_grad_v0:
        grad_v0 = torch.empty_like(m[0], dtype=torch.float32)
    else:
        grad_v0 = m.new_empty((0,), dtype=torch.float32) if placeholders else None
    return torch.empty_like(m), grad_v0


def _backward_impl(grad_spike, grad_v_seq, grad_v_last, m, want_grad_v0, cfg, tau, v_threshold, v_reset,
                   alpha, placeholders=True):
    grad_x, grad_v0 = _backward_outputs(m, want_grad_v0, placeholders)
    if m.numel():
        get_launcher().backward(KernelConfig(*cfg), grad_spike, grad_v_seq, grad_v_last, m, grad_x,
                                grad_v0 if want_grad_v0 else None, tau, v_threshold, v_reset, alpha)
    elif want_grad_v0:
        grad_v0.copy_(grad_v_last if grad_v_last is not None else torch.zeros_like(grad_v0))
    return grad_x, grad_v0


@torch.library.custom_op("sj_bwsnn::multistep_backward", mutates_args=())
def _backward_op(grad_spike: Tensor, grad_v_seq: Optional[Tensor], grad_v_last: Optional[Tensor],
                 m: Tensor, want_grad_v0: bool, cfg: list[int], tau: float, v_threshold: float,
                 v_reset: float, alpha: float) -> tuple[Tensor, Tensor]:
    return _backward_impl(grad_spike, grad_v_seq, grad_v_last, m, want_grad_v0, cfg, tau, v_threshold,
                          v_reset, alpha)


@_backward_op.register_fake
def _backward_fake(grad_spike, grad_v_seq, grad_v_last, m, want_grad_v0, cfg, tau, v_threshold, v_reset,
                   alpha):
    return _backward_outputs(m, want_grad_v0, placeholders=True)


def _setup_context(ctx, inputs, output):
    _, v0, _, cfg, tau, v_threshold, v_reset, alpha, _ = inputs
    ctx.save_for_backward(output[1])
    # dL/dV[-1] is wanted only for a state tensor in the graph and a kept temporal path (cfg[6]):
    # after detach_net (the step-wise methods) the state is a plain tensor and nothing is computed
    ctx.want_grad_v0 = v0 is not None and v0.requires_grad and bool(cfg[6])
    ctx.args = (cfg, tau, v_threshold, v_reset, alpha)


def _backward(ctx, grad_spike, _grad_m, grad_v_last, grad_v_seq, backward_fn=_backward_op):
    (m,) = ctx.saved_tensors
    cfg, tau, v_threshold, v_reset, alpha = ctx.args
    grad_spike = torch.zeros_like(m) if grad_spike is None else _same_layout(grad_spike, m, m.dtype)
    has_seq = grad_v_seq is not None and grad_v_seq.numel() > 0
    grad_v_seq = _same_layout(grad_v_seq, m, torch.float32) if has_seq else None
    grad_v_last = _same_layout(grad_v_last, m[0], torch.float32)
    grad_x, grad_v0 = backward_fn(grad_spike, grad_v_seq, grad_v_last, m, ctx.want_grad_v0, cfg, tau,
                                  v_threshold, v_reset, alpha)
    return grad_x, (grad_v0 if ctx.want_grad_v0 else None), None, None, None, None, None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def _backward_eager(*args):
    return _backward_impl(*args, placeholders=False)


class _EagerMultiStep(torch.autograd.Function):
    """The eager entry point: same implementations and backward as the custom ops, less host work
    (outputs that are not computed are ``None`` instead of empty tensors)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _forward_impl(*inputs, placeholders=False)
        _setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # unused outputs arrive as None: no zero tensors to build
        return output

    @staticmethod
    def backward(ctx, *grads):
        return _backward(ctx, *grads, backward_fn=_backward_eager)


def _time_major_dense(x: Tensor) -> bool:
    """True when ``x``'s memory is ``T`` blocks of one dense, non-overlapping step layout."""
    if x.is_contiguous():
        return True
    dims = sorted((st, sz) for st, sz in zip(x.stride(), x.shape) if sz != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return x.shape[0] == 1 or x.stride(0) == x[0].numel()


def kernel_spec(node, x: Tensor) -> tuple[Optional[tuple[int, float]], Optional[str]]:
    """``(surrogate_spec, None)`` when the fused kernel can run ``node`` on ``x``, else ``(None, why)``."""
    if x.dtype not in DTYPE_CODES:
        return None, f"input dtype {x.dtype} (the kernel takes float32, float16, bfloat16)"
    spec = surrogate_spec(node.surrogate_function)
    if spec is None:
        return None, (f"surrogate {type(node.surrogate_function).__name__} (the kernel implements "
                      f"SpikingJelly's {', '.join(SURROGATE_IDS)} with a float alpha)")
    if getattr(node, "_neuron_precision", None) is not None:
        return None, "a SpikingJelly precision-API configuration (use plain autocast instead)"
    return spec, None


def unsupported_reason(node, x: Tensor) -> Optional[str]:
    """Why the fused kernel cannot run ``node`` on ``x`` (None when it can)."""
    return kernel_spec(node, x)[1]


def _initial_state(node, x: Tensor) -> tuple[Optional[Tensor], float]:
    """``(v0, v_init)``: ``node.v`` as an fp32 tensor laid out like ``x[0]``, or ``(None, value)`` when
    the state is a constant (after ``reset_net``; the kernel then starts from ``value`` and no fill
    kernel runs). Same rules as SpikingJelly's ``materialize_states``: a shape change re-initialises."""
    v = node.v
    if not isinstance(v, Tensor):
        return None, float(v)
    if v.shape != x.shape[1:]:
        return None, 0.0 if node.v_reset is None else float(node.v_reset)
    return _same_layout(v.to(x.device), x[0], torch.float32), 0.0


def multi_step(node, x_seq: Tensor, spec: Optional[tuple[int, float]] = None) -> Tensor:
    """Fused multi-step forward of a LIF or IF ``node`` (SpikingJelly's classes or subclasses) on
    ``x_seq [T, N, ...]``; updates ``node.v`` (and ``node.v_seq`` when stored). ``spec`` is
    :func:`kernel_spec`'s surrogate spec when the caller has already checked it (the ``'auto'``
    dispatch); else the check runs here and an unsupported configuration is one clear error."""
    if spec is None:
        spec, reason = kernel_spec(node, x_seq)
        if reason is not None:
            raise UserError(f"neuron backend 'cupy' does not support {reason}; use backend: auto or torch")
    lif = isinstance(node, sj_neuron.LIFNode)
    sid, alpha = spec
    x = x_seq if _time_major_dense(x_seq) else x_seq.contiguous()
    soft = node.v_reset is None
    cfg = [int(lif), int(lif and node.decay_input), int(soft), DTYPE_CODES[x.dtype], sid,
           int(node.detach_reset), int(node.temporal_grad)]
    tau = float(node.tau) if lif else 1.0
    v_reset = 0.0 if soft else float(node.v_reset)
    v0, v_init = _initial_state(node, x)
    store_v_seq = bool(node.store_v_seq)
    args = (x, v0, v_init, cfg, tau, float(node.v_threshold), v_reset, alpha, store_v_seq)
    if torch.compiler.is_compiling():
        spike, _, v_last, v_seq = _forward_op(*args)
    elif torch.is_grad_enabled() and (x.requires_grad or (v0 is not None and v0.requires_grad)):
        spike, _, v_last, v_seq = _EagerMultiStep.apply(*args)
    else:  # no graph to build: skip autograd and the write of M = H - V_th
        spike, _, v_last, v_seq = _forward_impl(*args, save_m=False, placeholders=False)
    node._memories["v"] = v_last  # as SpikingJelly's own multi_step_forward does
    if store_v_seq:  # otherwise v_seq stays None (reset_net and the store_v_seq setter clear it)
        node.v_seq = v_seq
    return spike
