"""The fused neurons' backward in torch ops, for higher-order gradients.

The kernel backward (``kernels/multistep.cu``, ``sjb_multistep_backward``) gives ``dL/dX`` and
``dL/dV[-1]`` from the incoming gradients and the saved ``M = H - V_th`` but builds no graph, so a
double backward (``create_graph=True``, e.g. a gradient penalty) through it would silently miss every
second-order term. :func:`differentiable_backward` computes the same quantities with torch ops that
autograd records, as functions of ``M`` (a differentiable output of the fused forward, so a gradient
w.r.t. ``M`` flows back through the forward's first-order backward, i.e. ``dM/dX``) and of the incoming
gradients. It is the vector-Jacobian product of SpikingJelly 2.0's Torch reference
(``spikingjelly/_ops/lif/reference.py:22-35``: ``H = charge(V, X)``, ``S = surrogate(H - V_th)``;
``spikingjelly/_ops/reset.py:4-9``: ``V = S * V_reset + (1 - S) * H`` or ``V = H - S * V_th``, ``S``
detached first when ``detach_reset``) written out per step::

    dL/dH[t] = dL/dS[t] * sg(M[t]) + dL/dV[t] * dV[t]/dH[t] + dL/dM[t]
    dV/dH    = (1 - S) + (V_reset - H) * sg(M)   hard reset      (1 - S when detach_reset)
             = 1 - V_th * sg(M)                  soft reset      (1 when detach_reset)
    dL/dX[t] = dL/dH[t] / tau (LIF, decay_input) else dL/dH[t]
    dL/dV[t-1] = dL/dH[t] * (1 - 1/tau) (LIF) or dL/dH[t] (IF); 0 when temporal_grad=False
    dL/dV[t-1] += dL/dV_seq[t-1] (the stored v_seq's gradient); dL/dV[T-1] starts at dL/dv_last

with ``S`` and ``sg`` taken from the node's own SpikingJelly surrogate applied to ``M`` (Heaviside
forward, its backward formula as ``sg``), so differentiating this once more gives the same terms as
differentiating SpikingJelly's graph twice: ``d sg / dM`` (the surrogate's second derivative, from
SpikingJelly's backward formula), ``dS/dM = sg`` inside ``1 - S`` unless the reset is detached, and
``dH/dM = 1``. Computed in float32 as the kernel is (``M`` is stored in the input dtype); one Python
iteration per time step, so it is slower than the kernel and used only when a graph is being recorded
or ``dL/dM`` arrives.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _spike_and_surrogate_grad(surrogate, m: Tensor) -> tuple[Tensor, Tensor]:
    """``(S, sg)`` for ``M``: ``S = surrogate(M)`` and ``sg = dS/dM`` from the surrogate's own
    backward, both in the graph when autograd records one (and ``M`` is in it)."""
    record = torch.is_grad_enabled() and m.requires_grad
    with torch.enable_grad():
        leaf = m if record else m.detach().requires_grad_()
        s = surrogate(leaf)
        (sg,) = torch.autograd.grad(s, leaf, torch.ones_like(s), create_graph=record)
    return (s, sg) if record else (s.detach(), sg)


def differentiable_backward(plan, m: Tensor, grad_spike: Optional[Tensor], grad_v_seq: Optional[Tensor],
                            grad_v_last: Optional[Tensor], grad_m: Optional[Tensor],
                            want_grad_v0: bool) -> tuple[Tensor, Optional[Tensor]]:
    """``(dL/dX, dL/dV[-1] or None)`` as the kernel computes them, in recorded torch ops (module
    docstring); ``plan`` is the node's :class:`~.fused.Plan`, ``None`` gradients are zero."""
    cfg = plan.cfg
    compute = torch.float32
    if m.shape[0] == 0:  # no step: dL/dV[-1] = dL/dv_last
        grad_v0 = grad_v_last if grad_v_last is not None else torch.zeros(m.shape[1:], device=m.device)
        return torch.zeros_like(m), (grad_v0 if want_grad_v0 else None)
    mc = m.to(compute)
    s, sg = _spike_and_surrogate_grad(plan.surrogate, mc)
    s_reset = s.detach() if cfg.detach_reset else s
    if cfg.soft_reset:
        dv_dh = torch.ones_like(mc) if cfg.detach_reset else 1.0 - plan.v_threshold * sg
    else:
        dv_dh = 1.0 - s_reset
        if not cfg.detach_reset:
            dv_dh = dv_dh + (plan.v_reset - (mc + plan.v_threshold)) * sg
    grad_v = None if grad_v_last is None else grad_v_last.to(compute)  # dL/dV[t]; None is zero
    steps = []
    for t in range(m.shape[0] - 1, -1, -1):
        if grad_v_seq is not None:
            grad_v = grad_v_seq[t].to(compute) if grad_v is None else grad_v + grad_v_seq[t].to(compute)
        grad_h = torch.zeros_like(mc[t])
        if grad_spike is not None:
            grad_h = grad_h + grad_spike[t].to(compute) * sg[t]
        if grad_v is not None:
            grad_h = grad_h + grad_v * dv_dh[t]
        if grad_m is not None:
            grad_h = grad_h + grad_m[t].to(compute)
        steps.append(grad_h / plan.tau if cfg.lif and cfg.decay_input else grad_h)
        if not cfg.temporal_grad:
            grad_v = None
        else:
            grad_v = grad_h - grad_h / plan.tau if cfg.lif else grad_h
    grad_x = torch.stack(steps[::-1]).to(m.dtype)
    if not want_grad_v0:
        return grad_x, None
    grad_v0 = torch.zeros_like(mc[0]) if grad_v is None else grad_v
    return grad_x, grad_v0
