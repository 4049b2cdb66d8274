"""SPIDE: IDE's backward linear system solved by spiking dynamics (Xiao et al., Neural Networks
2023; code pkuxmq/SPIDE-FSNN, checked against modules/snn_modules.py:123-176,265-339 and
modules/snn_spide_module.py:28-77).

Forward as :mod:`.ide`: ``T`` steps of the feedback SNN without a graph give every layer's rates
``a_l`` and masks ``m_l = [0 < a_l < 1]``. Backward: a second SNN of ternary neurons runs ``T_b``
steps on the transposed connections. With ``V = V_th`` (the forward threshold; SPIDE's
``V_th - u_rest``), ``theta = vth_back``, spikes ``s = +-2 theta`` (the modified reset
``u_rest_back = -theta``) and subtractive reset ``u -= s``::

    u_L += k g + W_fb^T (s_0 . m_0) / V       (the feedback term from step t >= 1 on)
    u_l += H_l^T (s_{l+1} . m_{l+1}) / V      (l = L-1 .. 0, in this order within a step)
    s_l  = 2 theta ([u_l >= theta] - [u_l <= -theta]),   u_l -= s_l
    beta_l = (1/T_b) sum_t s_l[t]  (LIF: weighted by lambda^(T_b-1-t), u_l *= lambda)

``g = dL/da_L`` and ``k`` = ``grad_scale`` (|beta| <= 2 theta per step, so the gradient is scaled
into the neurons' range: the group code multiplies the loss by ``k`` and divides the learning rate
by ``k``). ``beta_L / k`` approximates IDE's ``(I - J^T)^{-1} g``. Weight gradients are local,
from the two stages' rates (S:m/snn_modules.py:171-173, 385-391)::

    dL/dH_{l-1} = (beta_l . m_l / V) a_{l-1}^T,    dL/dW_fb = (beta_0 . m_0 / V) a_L^T,
    dL/dx1 = beta_0 . m_0 / V   (then through the encoder)

computed as the vector-Jacobian product of each layer's current (``pre_activations``) at the
forward rates, so binarized weights (STE), the feedback scale, BatchNorm and dropout masks get
their gradients as the forward uses them.

Deliberate differences: the backward input is ``k * dL/da`` and the rates are divided by ``k``
(instead of ``k * loss`` with ``lr / k``): the same update with ``optim.lr`` = the group code's
``lr`` and ``optim.weight_decay`` = its ``weight_decay / k`` (SGD's decay is not scaled there);
under fp16 the grad scaler's factor and under torchrun the number of ranks are divided out
before the spiking backward (its neurons see what one process on the global batch sees); the weight
gradient includes the dropout mask of the layer's output (the group code's ``set_grad`` omits it
while its backward propagation applies it).
"""

from __future__ import annotations

import torch

from ...models.fsnn import FeedbackPass, FeedbackSNN
from .. import distributed
from ..precision import Precision
from .ide import feedback_snn
from .base import LossPlacement


def _transposes(net: FeedbackSNN, p: FeedbackPass, rates: list[torch.Tensor]):
    """``back[l](v)``: the transpose of the linear map into layer ``l`` applied to ``v`` (layer 0:
    the feedback from layer L; else ``H_{l-1}``), with hidden BatchNorms in eval mode."""
    L = len(rates) - 1
    backs = []
    for l in range(L + 1):
        src = rates[L] if l == 0 else rates[l - 1]
        z = torch.zeros_like(src, requires_grad=True)
        with net.hidden_bn_eval():
            out = net.current(p, l, z)

        def back(v, out=out, z=z):
            return torch.autograd.grad(out, z, v, retain_graph=True)[0]

        backs.append(back)
    return backs


def spiking_backward(net: FeedbackSNN, p: FeedbackPass, rates: list[torch.Tensor],
                     g: torch.Tensor, steps: int, vth_back: float):
    """SPIDE's backward SNN (module docstring). Returns ``beta_0..beta_L`` (in the units of ``g``)
    and ``(rate, saturated)``: the mean absolute spike rate of all backward neurons and the
    fraction of last-layer ones that spiked at every step."""
    L = len(rates) - 1
    V, lam, theta = net.v_threshold, net.leak, float(vth_back)
    spike = 2.0 * theta
    masks = [((a > 0) & (a < 1)).to(g.dtype) for a in rates]
    with torch.enable_grad():
        backs = _transposes(net, p, rates)
        u = [torch.zeros_like(a) for a in rates]
        s = [torch.zeros_like(a) for a in rates]
        beta = [torch.zeros_like(a) for a in rates]
        count = [torch.zeros_like(a) for a in rates]
        for t in range(steps):
            for l in range(L, -1, -1):
                if l == L:
                    inp = g if t == 0 else g + backs[0](s[0] * masks[0]) / V
                else:
                    inp = backs[l + 1](s[l + 1] * masks[l + 1]) / V
                u[l] = u[l] + inp
                s[l] = spike * ((u[l] >= theta).to(g.dtype) - (u[l] <= -theta).to(g.dtype))
                u[l] = u[l] - s[l]
                if lam != 1.0:
                    u[l] = u[l] * lam
                beta[l] = beta[l] * lam + s[l]
                count[l] = count[l] + s[l].abs()
    norm = steps if lam == 1.0 else (1 - lam ** steps) / (1 - lam)
    rate = sum(c.sum() for c in count) / (spike * steps * sum(c.numel() for c in count))
    saturated = (count[L] == spike * steps).to(g.dtype).mean()
    return [b / norm for b in beta], (rate.item(), saturated.item())


class _SpikingBackward(torch.autograd.Function):
    """Value: the last layer's rates; backward: ``run(dL/da_L)`` -> gradients of every layer's
    current (``pre_activations``), from which autograd reaches the parameters."""

    @staticmethod
    def forward(ctx, a_last, run, *pre):
        ctx.run, ctx.dtypes = run, [q.dtype for q in pre]
        return a_last.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        grads = ctx.run(grad)
        return (None, None, *[gr.to(dt) for gr, dt in zip(grads, ctx.dtypes)])


class SPIDE(LossPlacement):
    """SPIDE (module docstring).

    :param steps: backward time steps ``T_b``.
    :param vth_back: backward threshold ``theta``; spikes are ``+-2 theta``.
    :param grad_scale: ``k``, the factor on ``dL/da`` fed to the backward SNN.
    Under fp16 the grad scaler's factor, and under torchrun the number of ranks (each rank's
    loss is its own batch mean), are divided out of ``dL/da`` before the spiking backward.
    """

    name = "spide"
    default_loss_on = "mean"  # the loss sits on the equilibrium (time-averaged) rate
    loss_on_choices = ("mean",)
    loss_on_why = ("the gradient is the implicit one at the equilibrium rate, which is the "
                   "time average; single steps have no gradient of their own")
    single_forward = False

    def __init__(self, steps: int = 250, vth_back: float = 0.5, grad_scale: float = 100.0,
                 loss_on: str | None = None):
        self.set_loss_on(loss_on)
        self.steps, self.vth_back, self.grad_scale = int(steps), float(vth_back), float(grad_scale)
        self._reset_stats()

    def _reset_stats(self) -> None:
        self._n, self._rate, self._sat = 0, 0.0, 0.0

    def epoch_stats(self) -> dict[str, tuple[float, float]]:
        """Mean backward spike rate (``spide_rate``) and the fraction of last-layer backward
        neurons that spiked at every step (``spide_saturated``: ``grad_scale`` too large)."""
        out = {"spide_rate": (self._rate, self._n), "spide_saturated": (self._sat, self._n)}
        self._reset_stats()
        return out

    def attach(self, net: FeedbackSNN, p: FeedbackPass, rates: list[torch.Tensor],
               loss_scale=lambda: 1.0, world: int = 1) -> torch.Tensor:
        """The last layer's rates with SPIDE's backward attached. ``loss_scale()``: the factor
        on the loss (fp16 grad scaler); ``world``: data-parallel ranks, each with its own batch
        mean, so ``dL/da`` is ``world`` times what it is for the global batch's mean loss
        (``grad_scale`` is defined for the latter, as in the group code's single process)."""
        pre = net.pre_activations(p, rates)
        frozen = p.detached()

        def run(grad: torch.Tensor) -> list[torch.Tensor]:
            dtype = torch.promote_types(grad.dtype, torch.float32)
            k, scale = self.grad_scale, float(loss_scale()) * world
            with torch.autocast(grad.device.type, enabled=False):
                q = FeedbackPass(frozen.x1.to(dtype), frozen.scale.to(dtype), frozen.masks)
                rs = [a.detach().to(dtype) for a in rates]
                g = grad.to(dtype) * (k / scale)
                betas, (rate, sat) = spiking_backward(net, q, rs, g, self.steps, self.vth_back)
            self._n, self._rate, self._sat = self._n + 1, self._rate + rate, self._sat + sat
            V, m = net.v_threshold, [((a > 0) & (a < 1)).to(dtype) for a in rs]
            return [b * mi * (scale / (k * V)) for b, mi in zip(betas, m)]

        return _SpikingBackward.apply(rates[-1], run, *pre)

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        net = feedback_snn(model, self.name)
        scaler = precision.scaler
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            p = net.begin(x)
            with torch.no_grad(), net.hidden_bn_eval():
                rates = net.simulate(p)
            a = self.attach(net, p, rates, (lambda: scaler.get_scale()) if scaler else (lambda: 1.0),
                            world=distributed.world()[1])
            logits = net.readout(a)
            loss = objective(logits, y, x)
        precision.backward(loss)
        precision.step(optimizer)
        return loss.detach(), logits.detach()
