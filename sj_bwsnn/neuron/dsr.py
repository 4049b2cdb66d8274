"""DSR neurons (Meng et al., CVPR 2022) for ``train.method: dsr``: SpikingJelly 2.0's
``DSRIFNode`` / ``DSRLIFNode`` adapted to how our models build neurons.

Forward (SpikingJelly's, multi-step only, state starts at zero on every call)::

    IF : V[t] = V[t-1] + X[t];                 S[t] = V_th * 1{V[t] >= a * V_th};  V[t] -= S[t]
    LIF: V[t] = b V[t-1] + (1 - b) X[t], b = exp(-dt/tau);  spikes as IF, output S[t] / dt

Backward: through the (weighted) firing rate ``r = mean_t X[t]``: ``dr/dX = 1`` where
``0 <= r <= V_th`` (LIF: ``0 < r < V_th * tau / dt``, scaled by ``1/tau``), else ``0``; ``V_th`` is
learnable (clamped below by ``v_threshold_lower_bound``).

Differences from SpikingJelly's classes: ``T`` is read from the input (frames or ``model.T``), so
it is not a constructor argument, and the LIF/IF keyword arguments our models pass
(``v_reset``, ``surrogate_function``, ``detach_reset``, ``backend``, ``tau``, ``decay_input``)
are accepted and ignored: DSR neurons reset by subtraction and need no surrogate. Only
``v_threshold`` (the initial threshold) is taken from the recipe.
"""

from __future__ import annotations

from spikingjelly.activation_based.neuron import dsr as sj_dsr

_IGNORED = ("v_reset", "surrogate_function", "detach_reset", "backend", "tau", "decay_input")


def _check_ignored(kwargs: dict) -> None:
    unknown = set(kwargs) - set(_IGNORED)
    if unknown:
        raise TypeError(f"unexpected DSR neuron arguments: {', '.join(sorted(unknown))}")


class DSRIFNode(sj_dsr.DSRIFNode):
    """SpikingJelly's ``DSRIFNode`` with ``T`` taken from each input (see module docstring)."""

    def __init__(self, v_threshold: float = 1.0, alpha: float = 0.5, step_mode: str = "m", **kwargs):
        _check_ignored(kwargs)
        super().__init__(T=1, v_threshold=float(v_threshold), alpha=float(alpha), step_mode=step_mode)

    def multi_step_forward(self, x_seq, *args, **kwargs):
        self.T = int(x_seq.shape[0])  # the custom backward stacks T copies of the rate gradient
        return super().multi_step_forward(x_seq, *args, **kwargs)


class DSRLIFNode(sj_dsr.DSRLIFNode):
    """SpikingJelly's ``DSRLIFNode`` with ``T`` taken from each input (see module docstring)."""

    def __init__(self, v_threshold: float = 1.0, alpha: float = 0.3, step_mode: str = "m", **kwargs):
        _check_ignored(kwargs)
        super().__init__(T=1, v_threshold=float(v_threshold), alpha=float(alpha), step_mode=step_mode)

    def multi_step_forward(self, x_seq, *args, **kwargs):
        self.T = int(x_seq.shape[0])
        return super().multi_step_forward(x_seq, *args, **kwargs)
