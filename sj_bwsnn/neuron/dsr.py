"""DSR neurons (Meng et al., "Training High-Performance Low-Latency Spiking Neural Networks by
Differentiation on Spike Representation", CVPR 2022) for ``train.method: dsr``.

SpikingJelly 2.0's ``DSRIFNode`` / ``DSRLIFNode`` (their autograd functions are used as they are)
with the defaults and the threshold floor of the official code, qymeng94/DSR@876c8d1
``cifar/modules/neuron.py``. Forward, multi-step, state starting at zero on every call::

    IF  (neuron.py:29-48):  V[t] = V[t-1] + X[t];  S[t] = V_th * 1{V[t] >= a * V_th};  V[t] -= S[t]
    LIF (neuron.py:157-180): V[t] = b V[t-1] + (1 - b) X[t],  b = exp(-dt / tau);  spikes as IF,
                             V[t] -= S[t], output S[t] / dt

Backward (neuron.py:50-70, 141-154, 182-194): through the firing rate ``r = mean_t X[t]`` (IF) or
the weighted rate ``r = sum_t w_t X[t] / sum_t w_t``, ``w_t = exp(-(T - t) dt / tau)`` (LIF):
``dr/dX = 1`` where ``0 <= r <= V_th`` (LIF: ``0 < r < V_th tau / dt``, times ``1/tau``), else 0;
the threshold gets the gradient of the clamp's upper branch (rate above ``V_th``).

**tau is DSR's, not SpikingJelly's LIF tau.** DSR-LIF discretises ``tau du/dt = -u + x`` with step
``dt = 0.05``: the decay per step is ``b = exp(-dt/tau)``. SpikingJelly's ``LIFNode`` with
``decay_input=True`` decays by ``1 - 1/tau_sj`` and scales the input by ``1/tau_sj``, the same form;
so DSR's ``tau`` corresponds to ``tau_sj = 1 / (1 - exp(-dt/tau))``: DSR's default ``tau = 1.0``
(main_single_gpu.py:35-36) is ``tau_sj = 20.50``, a slow leak, with a threshold at
``a * V_th = 0.3 * 0.3`` and spikes of height ``V_th / dt = 6`` (soft reset by ``V_th``). A recipe's
``neuron.tau`` for ``dsr_lif`` is DSR's ``tau`` (> 0) and reaches the node.

Defaults: ``DSRLIFNode`` takes the official code's argparse defaults (main_single_gpu.py:34-39:
``V_th`` 0.3, trainable, floor 0.0005, ``a`` 0.3, ``tau`` 1.0, ``dt`` 0.05; SpikingJelly's own are
floor 0.1 and ``tau`` 2.0). ``DSRIFNode`` takes the README's command for IF runs
(``--Vth 6 --alpha 0.5 --Vth_bound 0.01``, the same as SpikingJelly's defaults). The recipe's
``neuron.v_threshold`` (and ``tau`` for LIF) override them; ``neuron.preset: dsr_if | dsr_lif``
sets both to the official values.

Deliberate differences from the official code:

* the floor is applied as in the official code (neuron.py:117-118, 216-217: the parameter is
  clamped in place before each forward, so a threshold at the floor keeps its gradient), not as in
  SpikingJelly (a non-in-place ``clamp`` whose gradient is 0 at and below the floor);
* ``T`` is read from each input's first dimension (frames, or ``model.T`` repeats), not fixed at
  construction; spikes come out in float32 (SpikingJelly's functions), whatever the input dtype;
* no firing-rate statistics (``rate_stat``) and no all-reduce of the threshold gradient (DDP's
  reducer averages it with every other gradient).

Only ``v_threshold`` (and ``tau`` for LIF) come from the recipe; the LIF/IF keyword arguments our
models pass to every neuron (``v_reset``, ``surrogate_function``, ``detach_reset``, ``backend``,
``decay_input``; ``tau`` for IF) are accepted and ignored, since DSR neurons reset by subtraction
and need no surrogate. :func:`sj_bwsnn.neuron.registry.neuron_kwargs_from_config` passes none of
them.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based.neuron import dsr as sj_dsr

_IGNORED = ("v_reset", "surrogate_function", "detach_reset", "backend", "decay_input", "tau")


def _check_ignored(kwargs: dict) -> None:
    unknown = set(kwargs) - set(_IGNORED)
    if unknown:
        raise TypeError(f"unexpected DSR neuron arguments: {', '.join(sorted(unknown))}")


class _DSRMixin:
    """``T`` from each input and the official in-place threshold floor."""

    v_threshold: torch.Tensor
    v_threshold_lower_bound: float

    def _floor_threshold(self) -> torch.Tensor:
        if isinstance(self.v_threshold, torch.nn.Parameter):
            with torch.no_grad():
                self.v_threshold.clamp_(min=self.v_threshold_lower_bound)
            return self.v_threshold
        return self.v_threshold.clamp(min=self.v_threshold_lower_bound)

    def multi_step_forward(self, x_seq, *args, **kwargs):
        self.T = int(x_seq.shape[0])  # the custom backward stacks T copies of the rate gradient
        return super().multi_step_forward(x_seq, *args, **kwargs)


class DSRIFNode(_DSRMixin, sj_dsr.DSRIFNode):
    """DSR IF neuron (module docstring): spikes of height ``V_th`` at ``V >= a V_th``.

    :param v_threshold: initial (trainable) threshold ``V_th``; 6.0 as the official IF runs.
    :param alpha: firing point ``a`` as a fraction of ``V_th``.
    :param v_threshold_lower_bound: floor of ``V_th``.
    """

    def __init__(self, v_threshold: float = 6.0, alpha: float = 0.5,
                 v_threshold_lower_bound: float = 0.01, step_mode: str = "m", **kwargs):
        _check_ignored(kwargs)
        super().__init__(T=1, v_threshold=float(v_threshold), alpha=float(alpha),
                         v_threshold_lower_bound=float(v_threshold_lower_bound),
                         step_mode=step_mode)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        y = self.DSRIFFunction.apply(inputs[0], self.T, self._floor_threshold(), self.alpha,
                                     self.v_threshold_grad_scaling)
        return (y,), states


class DSRLIFNode(_DSRMixin, sj_dsr.DSRLIFNode):
    """DSR LIF neuron (module docstring): ``tau`` is DSR's time constant (``b = exp(-dt/tau)``).

    :param v_threshold: initial (trainable) threshold ``V_th``; 0.3 as the official code.
    :param tau: DSR's membrane time constant (> 0), 1.0 as the official code.
    :param delta_t: discretisation step ``dt``; outputs are ``S / dt``.
    :param alpha: firing point ``a`` as a fraction of ``V_th``.
    :param v_threshold_lower_bound: floor of ``V_th``.
    """

    def __init__(self, v_threshold: float = 0.3, tau: float = 1.0, delta_t: float = 0.05,
                 alpha: float = 0.3, v_threshold_lower_bound: float = 0.0005,
                 step_mode: str = "m", **kwargs):
        _check_ignored(kwargs)
        if not tau > 0:
            raise ValueError(f"DSR tau must be > 0, got {tau}")
        super().__init__(T=1, v_threshold=float(v_threshold), tau=float(tau),
                         delta_t=float(delta_t), alpha=float(alpha),
                         v_threshold_lower_bound=float(v_threshold_lower_bound),
                         step_mode=step_mode)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        y = self.DSRLIFFunction.apply(inputs[0], self.T, self._floor_threshold(), self.tau,
                                      self.delta_t, self.alpha, self.v_threshold_grad_scaling)
        return (y,), states

    def rate_weights(self, T: int, device=None) -> torch.Tensor:
        """``w_t / sum_t w_t``, ``w_t = exp(-(T - t) dt / tau)`` for ``t = 1..T``: the weighted
        firing rate of the official read-out (neuron.py:16-20)."""
        t = torch.arange(1, T + 1, dtype=torch.float64)
        w = torch.exp(-(self.delta_t * T - t * self.delta_t) / self.tau)
        return (w / w.sum()).to(device=device, dtype=torch.float32)
