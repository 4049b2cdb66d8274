"""Fused multi-step LIF / IF (the ``'cupy'`` backend of :mod:`sj_bwsnn.neuron.nodes`).

Eager mode runs the kernels through a ``torch.autograd.Function`` (:class:`_EagerMultiStep`) and a
per-node :class:`Plan`: everything that does not change between calls (the kernel configuration, the
scalars packed for the launch, the compiled functions and device context) is made on the first call
and reused while the node's attributes, the input's dtype and device and the launcher stay the same
(:func:`plan_for` compares them on every call; a change rebuilds the plan). Under ``torch.compile``
the kernels run inside two ``torch.library`` custom ops, so a compiled model sees one opaque node per
neuron layer (no graph break); the eager path does not use them because the custom-op dispatcher and
its autograd wrapper cost roughly 2.5-3.5x more host time per forward+backward (``bench/host_glue.py``):

* ``sj_bwsnn::multistep_forward(x, v0?, v_init, cfg, tau, v_threshold, v_reset, alpha, store_v_seq)
  -> (spike, m, v_last, v_seq)`` with ``m = H - V_th`` saved for backward; ``v0`` None means every
  neuron starts at ``v_init`` (the state after ``reset_net``); ``v_seq`` is empty unless stored;
* ``sj_bwsnn::multistep_backward(grad_spike, grad_v_seq?, grad_v_last?, m, want_grad_v0, cfg, tau,
  v_threshold, v_reset, alpha) -> (grad_x, grad_v0)``.

``cfg`` is :class:`~.kernels.KernelConfig` as a list of ints; each distinct one compiles once.

Higher-order gradients (``create_graph=True``, e.g. a gradient penalty): the eager backward is then
computed by :func:`.fused_backward.differentiable_backward` in torch ops that autograd records, as a
function of the saved ``M`` (a differentiable output of the forward) and of the incoming gradients; a
gradient reaching ``M`` in the next backward is handled there too. The result equals differentiating
SpikingJelly's Torch reference twice (tested in float64). ``torch.compile`` does not support double
backward (PyTorch raises its own error).

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
from .fused_backward import differentiable_backward
from .kernels import DTYPE_CODES, SURROGATE_IDS, KernelConfig, bind, surrogate_spec

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


_BOUND: dict = {}
_BOUND_LAUNCHER = None


def bound_kernels(cfg: KernelConfig, device: torch.device, tau: float, v_threshold: float, v_reset: float,
                  alpha: float):
    """The current launcher's kernels for ``cfg`` on ``device`` with the scalars bound (cached; a new
    launcher starts a new cache)."""
    global _BOUND_LAUNCHER
    launcher = get_launcher()
    if launcher is not _BOUND_LAUNCHER or len(_BOUND) > 4096:
        _BOUND.clear()
        _BOUND_LAUNCHER = launcher
    key = (cfg, device, tau, v_threshold, v_reset, alpha)
    kernels = _BOUND.get(key)
    if kernels is None:
        kernels = _BOUND[key] = bind(launcher, cfg, device.index, tau, v_threshold, v_reset, alpha)
    return kernels


def _same_layout(t: Optional[Tensor], ref: Tensor, dtype: torch.dtype) -> Optional[Tensor]:
    """``t`` as ``dtype`` with ``ref``'s strides (a copy only when needed)."""
    if t is None or (t.dtype == dtype and t.stride() == ref.stride()):
        return t
    return torch.empty_like(ref, dtype=dtype).copy_(t)


# --- eager path: a plan per node ------------------------------------------------------------------

def _fingerprint(node, x: Tensor) -> tuple:
    """Everything a :class:`Plan` depends on, read straight from the instance dictionaries (cheap)."""
    d = node.__dict__
    sur = d["_modules"].get("surrogate_function")
    if sur is None:  # a plain function, not a module
        sur = d.get("surrogate_function")
    return (x.dtype, x.device, _launcher, type(node), d.get("backend"), sur, getattr(sur, "alpha", None),
            getattr(sur, "spiking", True), d.get("tau"), d.get("decay_input"), d.get("v_threshold"),
            d.get("v_reset"), d.get("detach_reset"), d.get("temporal_grad"), d.get("_store_v_seq"),
            d.get("_neuron_precision"))


class Plan:
    """What a fused call of one node on inputs of one dtype and device needs and does not recompute:
    the kernel configuration, the scalars, the bound kernels; ``reason`` says why the kernel cannot
    run the node (then nothing else is set)."""

    def __init__(self, node, x: Tensor):
        self.use_fused = None  # nodes.py: whether the node's backend runs the kernel (decided once)
        spec, self.reason = kernel_spec(node, x)
        if spec is not None:
            lif = isinstance(node, sj_neuron.LIFNode)
            soft = node.v_reset is None
            sid, self.alpha = spec
            self.cfg = KernelConfig(lif, lif and bool(node.decay_input), soft, DTYPE_CODES[x.dtype], sid,
                                    bool(node.detach_reset), bool(node.temporal_grad))
            self.tau = float(node.tau) if lif else 1.0
            self.v_threshold = float(node.v_threshold)
            self.v_reset = 0.0 if soft else float(node.v_reset)
            self.store_v_seq = bool(node.store_v_seq)
            self.surrogate = node.surrogate_function
            self.device = x.device
        self.kernels = None  # bound on the first fused call (a plan may serve SpikingJelly's path)
        self.key = _fingerprint(node, x)

    def bind(self):
        """The launcher's kernels for this plan (:func:`bound_kernels`, once)."""
        self.kernels = bound_kernels(self.cfg, self.device, self.tau, self.v_threshold, self.v_reset,
                                     self.alpha)
        return self.kernels

    def forward(self, x: Tensor, v, m: Optional[Tensor]):
        """``(spike, v_last, v_seq)`` of a non-empty ``x`` from the state ``v`` (a tensor or a float),
        writing ``M`` into ``m`` unless it is None."""
        spike = torch.empty_like(x)
        v_last = torch.empty_like(x[0], dtype=torch.float32)
        v_seq = torch.empty_like(x, dtype=torch.float32) if self.store_v_seq else None
        if isinstance(v, Tensor):
            self.kernels.forward(x, v, 0.0, spike, m, v_last, v_seq)
        else:
            self.kernels.forward(x, None, v, spike, m, v_last, v_seq)
        return spike, v_last, v_seq


def plan_for(node, x: Tensor) -> Plan:
    """``node``'s plan for ``x``: the cached one while its fingerprint matches, else a new one."""
    plan = node.__dict__.get("_sjb_plan")
    if plan is None or plan.key != _fingerprint(node, x):
        plan = node.__dict__["_sjb_plan"] = Plan(node, x)
    return plan


class _EagerMultiStep(torch.autograd.Function):
    """The eager entry point: ``(x, v, plan) -> (spike, v_last, m[, v_seq])`` (``v_seq`` when the plan
    stores it); ``v`` is the initial state (a tensor or a float); ``m`` is returned (unused by the
    caller) so that a double backward can differentiate through it."""

    @staticmethod
    def forward(ctx, x, v, plan):
        m = torch.empty_like(x)
        spike, v_last, v_seq = plan.forward(x, v, m)
        ctx.save_for_backward(m)
        ctx.plan = plan
        ctx.set_materialize_grads(False)  # unused outputs arrive as None: no zero tensors to build
        return (spike, v_last, m) if v_seq is None else (spike, v_last, m, v_seq)

    @staticmethod
    def backward(ctx, grad_spike, grad_v_last, grad_m, grad_v_seq=None):
        """``(grad_x, grad_v0, None)``: the kernel, or torch ops when autograd records the backward
        (``create_graph=True``) or a gradient w.r.t. ``M`` arrives (module docstring)."""
        (m,) = ctx.saved_tensors
        plan = ctx.plan
        # dL/dV[-1] is wanted only for a state tensor in the graph and a kept temporal path: after
        # detach_net (the step-wise methods) the state is a plain tensor and nothing is computed
        want_grad_v0 = ctx.needs_input_grad[1] and plan.cfg.temporal_grad
        if grad_m is not None or torch.is_grad_enabled():
            return (*differentiable_backward(plan, m, grad_spike, grad_v_seq, grad_v_last, grad_m,
                                             want_grad_v0), None)
        if grad_spike is None:
            grad_spike = torch.zeros_like(m)
        elif not (grad_spike.dtype == m.dtype and grad_spike.is_contiguous() and m.is_contiguous()):
            grad_spike = _same_layout(grad_spike, m, m.dtype)
        if grad_v_seq is not None:
            grad_v_seq = _same_layout(grad_v_seq, m, torch.float32)
        if grad_v_last is not None and not (grad_v_last.dtype == torch.float32 and m.is_contiguous()
                                            and grad_v_last.is_contiguous()):
            grad_v_last = _same_layout(grad_v_last, m[0], torch.float32)
        grad_x = torch.empty_like(m)
        grad_v0 = torch.empty_like(m[0], dtype=torch.float32) if want_grad_v0 else None
        plan.kernels.backward(grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0)
        return grad_x, grad_v0, None


# --- torch.compile path: custom ops -------------------------------------------------------------

def _forward_outputs(x: Tensor, store_v_seq: bool):
    """``(spike, m, v_last, v_seq)`` allocated like ``x``; ``v_seq`` empty when not stored (the
    schema needs tensors)."""
    absent = x.new_empty((0,), dtype=torch.float32)
    return (torch.empty_like(x), torch.empty_like(x), torch.empty_like(x[0], dtype=torch.float32),
            torch.empty_like(x, dtype=torch.float32) if store_v_seq else absent)


@torch.library.custom_op("sj_bwsnn::multistep_forward", mutates_args=())
def _forward_op(x: Tensor, v0: Optional[Tensor], v_init: float, cfg: list[int], tau: float,
                v_threshold: float, v_reset: float, alpha: float,
                store_v_seq: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    spike, m, v_last, v_seq = _forward_outputs(x, store_v_seq)
    if x.numel():
        bound_kernels(KernelConfig(*cfg), x.device, tau, v_threshold, v_reset, alpha).forward(
            x, v0, v_init, spike, m, v_last, v_seq if store_v_seq else None)
    elif v0 is not None:
        v_last.copy_(v0)
    else:
        v_last.fill_(v_init)
    return spike, m, v_last, v_seq


@_forward_op.register_fake
def _forward_fake(x, v0, v_init, cfg, tau, v_threshold, v_reset, alpha, store_v_seq):
    return _forward_outputs(x, store_v_seq)


def _backward_outputs(m: Tensor, want_grad_v0: bool):
    """``(grad_x, grad_v0)``; ``grad_v0`` empty when not computed."""
    if want_grad_v0:
        grad_v0 = torch.empty_like(m[0], dtype=torch.float32)
    else:
        grad_v0 = m.new_empty((0,), dtype=torch.float32)
    return torch.empty_like(m), grad_v0


@torch.library.custom_op("sj_bwsnn::multistep_backward", mutates_args=())
def _backward_op(grad_spike: Tensor, grad_v_seq: Optional[Tensor], grad_v_last: Optional[Tensor],
                 m: Tensor, want_grad_v0: bool, cfg: list[int], tau: float, v_threshold: float,
                 v_reset: float, alpha: float) -> tuple[Tensor, Tensor]:
    grad_x, grad_v0 = _backward_outputs(m, want_grad_v0)
    if m.numel():
        bound_kernels(KernelConfig(*cfg), m.device, tau, v_threshold, v_reset, alpha).backward(
            grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0 if want_grad_v0 else None)
    elif want_grad_v0:
        grad_v0.copy_(grad_v_last if grad_v_last is not None else torch.zeros_like(grad_v0))
    return grad_x, grad_v0


@_backward_op.register_fake
def _backward_fake(grad_spike, grad_v_seq, grad_v_last, m, want_grad_v0, cfg, tau, v_threshold, v_reset,
                   alpha):
    return _backward_outputs(m, want_grad_v0)


def _setup_context(ctx, inputs, output):
    _, v0, _, cfg, tau, v_threshold, v_reset, alpha, _ = inputs
    ctx.save_for_backward(output[1])
    ctx.want_grad_v0 = v0 is not None and v0.requires_grad and bool(cfg[6])
    ctx.args = (cfg, tau, v_threshold, v_reset, alpha)


def _backward(ctx, grad_spike, _grad_m, grad_v_last, grad_v_seq):
    (m,) = ctx.saved_tensors
    cfg, tau, v_threshold, v_reset, alpha = ctx.args
    grad_spike = torch.zeros_like(m) if grad_spike is None else _same_layout(grad_spike, m, m.dtype)
    has_seq = grad_v_seq is not None and grad_v_seq.numel() > 0
    grad_v_seq = _same_layout(grad_v_seq, m, torch.float32) if has_seq else None
    grad_v_last = _same_layout(grad_v_last, m[0], torch.float32)
    grad_x, grad_v0 = _backward_op(grad_spike, grad_v_seq, grad_v_last, m, ctx.want_grad_v0, cfg, tau,
                                   v_threshold, v_reset, alpha)
    return grad_x, (grad_v0 if ctx.want_grad_v0 else None), None, None, None, None, None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


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


def _initial_state(v, x: Tensor, v_reset_state: float):
    """The state ``v`` (``node.v``) as an fp32 tensor laid out like ``x[0]``, or a float when it is a
    constant (after ``reset_net``; the kernel then starts from it and no fill kernel runs). Same rules
    as SpikingJelly's ``materialize_states``: a shape change re-initialises (to ``v_reset_state``)."""
    if not isinstance(v, Tensor):
        return float(v)
    if v.shape != x.shape[1:]:
        return v_reset_state
    if v.dtype == torch.float32 and v.is_contiguous() and x.is_contiguous() and v.device == x.device:
        return v
    return _same_layout(v.to(x.device), x[0], torch.float32)


def _refuse(reason: str):
    raise UserError(f"neuron backend 'cupy' does not support {reason}; use backend: auto or torch")


def _multi_step_traced(node, x: Tensor) -> Tensor:
    """The ``torch.compile`` path: attributes read while tracing, the kernels in the custom op."""
    spec, reason = kernel_spec(node, x)
    if reason is not None:
        _refuse(reason)
    lif = isinstance(node, sj_neuron.LIFNode)
    sid, alpha = spec
    soft = node.v_reset is None
    cfg = [int(lif), int(lif and node.decay_input), int(soft), DTYPE_CODES[x.dtype], sid,
           int(node.detach_reset), int(node.temporal_grad)]
    v_reset = 0.0 if soft else float(node.v_reset)
    v = _initial_state(node._memories["v"], x, v_reset)
    v0, v_init = (v, 0.0) if isinstance(v, Tensor) else (None, v)
    store_v_seq = bool(node.store_v_seq)
    spike, _, v_last, v_seq = _forward_op(x, v0, v_init, cfg, float(node.tau) if lif else 1.0,
                                          float(node.v_threshold), v_reset, alpha, store_v_seq)
    node._memories["v"] = v_last
    if store_v_seq:
        node.v_seq = v_seq
    return spike


def run(node, x_seq: Tensor, plan: Plan) -> Tensor:
    """:func:`multi_step` in eager mode with the node's current :func:`plan_for` plan."""
    if plan.kernels is None:
        if plan.reason is not None:
            _refuse(plan.reason)
        plan.bind()
    x = x_seq if x_seq.is_contiguous() or _time_major_dense(x_seq) else x_seq.contiguous()
    v = _initial_state(node._memories["v"], x, plan.v_reset)
    if not x.numel():  # nothing to launch: the state passes through
        spike, v_seq = torch.empty_like(x), torch.empty_like(x, dtype=torch.float32)
        v_last = v if isinstance(v, Tensor) else torch.full_like(x[0], v, dtype=torch.float32)
    elif torch.is_grad_enabled() and (x.requires_grad or (isinstance(v, Tensor) and v.requires_grad)):
        out = _EagerMultiStep.apply(x, v, plan)
        spike, v_last, v_seq = out[0], out[1], (out[3] if plan.store_v_seq else None)
    else:  # no graph to build: skip autograd and the write of M = H - V_th
        spike, v_last, v_seq = plan.forward(x, v, None)
    node._memories["v"] = v_last  # as SpikingJelly's own multi_step_forward does
    if plan.store_v_seq:  # otherwise v_seq stays None (reset_net and the store_v_seq setter clear it)
        node.v_seq = v_seq
    return spike


def multi_step(node, x_seq: Tensor) -> Tensor:
    """Fused multi-step forward of a LIF or IF ``node`` (SpikingJelly's classes or subclasses) on
    ``x_seq [T, N, ...]``; updates ``node.v`` (and ``node.v_seq`` when stored). An unsupported
    configuration is one clear error. Eager calls use the node's cached :class:`Plan`; traced calls
    (``torch.compile``) the custom ops."""
    if torch.compiler.is_compiling():
        return _multi_step_traced(node, x_seq if _time_major_dense(x_seq) else x_seq.contiguous())
    return run(node, x_seq, plan_for(node, x_seq))
