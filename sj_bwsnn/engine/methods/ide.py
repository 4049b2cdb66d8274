"""IDE: implicit differentiation on the equilibrium state of a feedback SNN (Xiao et al., NeurIPS
2021; code pkuxmq/IDE-FSNN, checked against modules/snnide_module.py, modules/broyden.py).

Forward: the network (:class:`~sj_bwsnn.models.fsnn.FeedbackSNN`) runs ``T`` steps without a graph
and gives the rates ``a*`` of its last layer, ``a* ~= f(a*)``. One differentiable application
``z = f(a*; theta)`` carries the parameters; the read-out sees ``a*`` itself (``Replace``,
I:m/snnide_module.py:72-100). Backward, by the implicit function theorem::

    dL/dtheta = (df/dtheta)^T beta,    beta = (I - J^T)^{-1} dL/da*,    J = df/da at a*

``beta`` is the root of ``J^T beta - beta + g`` (``g = dL/da*``), found by Broyden's method
(:func:`broyden`; I:m/broyden.py:121-189): ``beta_0 = 0``, at most ``iters`` iterations (the group
code's ``threshold = 30``, I:fashionmnist_fc.py:127), each one vector-Jacobian product ``J^T v`` of
``f`` with hidden BatchNorms in eval mode (the group code's frozen copy, I:m/snnide_module.py:74-75,
132-145); the lowest-residual iterate is returned. Nothing of the simulation is kept for backward,
so activation memory does not grow with ``T``.

Non-convergence is never silent: each solve's relative residual ``||J^T b - b + g|| / ||g||`` is
recorded and :meth:`IDE.epoch_stats` hands the trainer the epoch's mean residual
(``ide_residual``), the fraction of solves that stopped above ``tol`` (``ide_unconverged``) and
the mean iterations (``ide_iters``), printed on the epoch line and stored in ``metrics.json``.

Deliberate differences: ``tol`` is relative to ``||g||`` (the group code's absolute
``eps = 2e-10 sqrt(numel)`` is in practice never met, so its 30 iterations always run); the solve
runs in float32 (float64 for float64 models) whatever the autocast dtype; the fixed-point
iteration solver (``solver_type='iter'``, which solves ``(2I - J^T) beta = g``) is not offered.
"""

from __future__ import annotations

import math

import torch

from ...errors import UserError
from ...models.fsnn import FeedbackPass, FeedbackSNN
from ..precision import Precision
from .base import LossPlacement


def feedback_snn(model, method: str) -> FeedbackSNN:
    """The :class:`FeedbackSNN` behind ``model`` (a DDP wrapper is looked through), else one line."""
    net = getattr(model, "module", model)
    if not isinstance(net, FeedbackSNN):
        import timm

        raise UserError(f"train.method {method} trains feedback SNNs only (model.name: "
                        f"{', '.join(timm.list_models('fsnn_*'))}); "
                        f"{type(net).__name__} is not one")
    return net


def _matvec(us: torch.Tensor, vts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(-I + U V^T) x`` per sample; ``us [B, D, k]``, ``vts [B, k, D]``, ``x [B, D]``."""
    if us.shape[-1] == 0:
        return -x
    return -x + torch.einsum("bdk,bk->bd", us, torch.einsum("bkd,bd->bk", vts, x))


def _rmatvec(us: torch.Tensor, vts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x^T (-I + U V^T)`` per sample."""
    if us.shape[-1] == 0:
        return -x
    return -x + torch.einsum("bk,bkd->bd", torch.einsum("bd,bdk->bk", x, us), vts)


@torch.no_grad()
def broyden(g, x0: torch.Tensor, iters: int, tol: float, memory: int = 27):
    """Root of ``g(x) = 0`` for ``x [B, D]`` by Broyden's "good" method with a low-rank inverse
    Jacobian ``-I + U V^T`` per sample (at most ``memory`` pairs, I:m/broyden.py:121-177).

    Stops when ``||g(x)|| <= tol * ||g(x0)||`` (norms over the whole batch), after ``iters``
    iterations, or when the residual blows up past 1e6 x the initial one: the group code's
    protective break at ``1e6 * n_elem * init_objective`` (I:m/broyden.py:141,165), where
    ``n_elem = 1`` because IDE hands the solver ``[B, D, 1]`` vectors (I:m/snnide_module.py:82,136;
    snnide_multilayer_module.py:80,137), so the same bound. Returns ``(x, rel, steps)``:
    the iterate with the lowest residual, that residual over ``||g(x0)||`` and the iterations run.
    """
    x, gx = x0, g(x0)
    ref = gx.norm().item()
    if ref == 0.0 or not math.isfinite(ref):
        return x, (0.0 if ref == 0.0 else math.inf), 0
    m = min(iters, memory)
    us = x.new_zeros(x.shape[0], x.shape[1], m)
    vts = x.new_zeros(x.shape[0], m, x.shape[1])
    best, best_res, steps = x, ref, 0
    update = -gx
    for k in range(iters):
        x_new = x + update
        g_new = g(x_new)
        dx, dg = update, g_new - gx
        x, gx, steps = x_new, g_new, k + 1
        res = gx.norm().item()
        if res < best_res:
            best, best_res = x, res
        if res <= tol * ref or not math.isfinite(res) or res > 1e6 * ref:
            break
        n = min(k, m)
        vt = _rmatvec(us[..., :n], vts[:, :n], dx)
        u = (dx - _matvec(us[..., :n], vts[:, :n], dg)) / (vt * dg).sum(1, keepdim=True)
        us[..., k % m] = torch.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
        vts[:, k % m] = torch.nan_to_num(vt, nan=0.0, posinf=0.0, neginf=0.0)
        n = min(k + 1, m)
        update = -_matvec(us[..., :n], vts[:, :n], gx)
    return best, best_res / ref, steps


class _Implicit(torch.autograd.Function):
    """Value: the simulated rates ``a``; backward: ``solve(dL/da)`` goes to ``z = f(a)``."""

    @staticmethod
    def forward(ctx, z, a, solve):
        ctx.solve, ctx.z_dtype = solve, z.dtype
        return a.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        return ctx.solve(grad).to(ctx.z_dtype), None, None


class IDE(LossPlacement):
    """Implicit differentiation on the equilibrium state (module docstring).

    :param iters: Broyden iterations per batch at most.
    :param tol: stop when the residual is below ``tol * ||dL/da*||``; a solve that ends above it
        counts as unconverged in :meth:`epoch_stats`.
    """

    name = "ide"
    default_loss_on = "mean"  # the loss sits on the equilibrium (time-averaged) rate
    loss_on_choices = ("mean",)
    loss_on_why = ("the gradient is the implicit one at the equilibrium rate, which is the "
                   "time average; single steps have no gradient of their own")
    single_forward = False  # calls begin/simulate/readout, not model(x): no DDP wrapper

    def __init__(self, iters: int = 30, tol: float = 1e-4,
                 loss_on: str | None = None):
        self.set_loss_on(loss_on)
        self.iters, self.tol = int(iters), float(tol)
        self._reset_stats()

    def _reset_stats(self) -> None:
        self._solves = self._unconverged = self._finite = 0
        self._residual = self._iters = 0.0

    def _record(self, rel: float, steps: int) -> None:
        self._solves += 1
        self._iters += steps
        self._unconverged += not rel <= self.tol
        if math.isfinite(rel):
            self._finite += 1
            self._residual += rel

    def epoch_stats(self) -> dict[str, tuple[float, float]]:
        """``{key: (sum, count)}`` since the last call (the trainer sums over ranks and divides)."""
        out = {"ide_residual": (self._residual, self._finite),
               "ide_unconverged": (float(self._unconverged), self._solves),
               "ide_iters": (self._iters, self._solves)}
        self._reset_stats()
        return out

    def attach(self, net: FeedbackSNN, p: FeedbackPass, a: torch.Tensor) -> torch.Tensor:
        """``a`` (the equilibrium rates) with IDE's backward: gradients reach the parameters
        through one application ``f(a)`` and the implicit solve."""
        z = net.fixed_point(p, a)
        frozen = p.detached()

        def solve(grad: torch.Tensor) -> torch.Tensor:
            dtype = torch.promote_types(a.dtype, torch.float32)  # fp16/bf16 -> fp32; fp64 stays
            with torch.enable_grad(), torch.autocast(grad.device.type, enabled=False):
                a_ = a.detach().to(dtype).requires_grad_()
                q = FeedbackPass(frozen.x1.to(dtype), frozen.scale.to(dtype), frozen.masks)
                with net.hidden_bn_eval():
                    fa = net.fixed_point(q, a_)
                g = grad.to(dtype).flatten(1)

                def residual(b: torch.Tensor) -> torch.Tensor:
                    jtb = torch.autograd.grad(fa, a_, b.view_as(a_), retain_graph=True)[0]
                    return jtb.flatten(1) - b + g

                beta, rel, steps = broyden(residual, torch.zeros_like(g), self.iters, self.tol)
            self._record(rel, steps)
            return beta.view_as(grad)

        return _Implicit.apply(z, a, solve)

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        net = feedback_snn(model, self.name)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            p = net.begin(x)
            with torch.no_grad(), net.hidden_bn_eval():
                a = net.simulate(p)[-1]
            logits = net.readout(self.attach(net, p, a))
            loss = objective(logits, y, x)
        precision.backward(loss)
        precision.step(optimizer)
        return loss.detach(), logits.detach()
