"""Names a recipe may use for neurons and surrogate functions."""

from __future__ import annotations

from typing import Any

from spikingjelly.activation_based import surrogate

from ..errors import UserError, closest
from .dsr import DSRIFNode, DSRLIFNode
from .nodes import IFNode, LIFNode

NEURONS = {"lif": LIFNode, "if": IFNode, "dsr_if": DSRIFNode, "dsr_lif": DSRLIFNode}

SURROGATES = {
    "sigmoid": surrogate.Sigmoid,
    "atan": surrogate.ATan,
    "piecewise_quadratic": surrogate.PiecewiseQuadratic,
    "piecewise_exp": surrogate.PiecewiseExp,
    "soft_sign": surrogate.SoftSign,
    "super_spike": surrogate.SuperSpike,
    "erf": surrogate.Erf,
}


def resolve_neuron(name: str) -> type:
    """The neuron class for a recipe name (``'lif'`` or ``'if'``)."""
    try:
        return NEURONS[name]
    except KeyError:
        raise UserError(
            f"neuron.type: unknown neuron {name!r}{closest(name, NEURONS)}; "
            f"choose one of {', '.join(NEURONS)}"
        ) from None


def build_surrogate(name: str, alpha: float):
    """A SpikingJelly surrogate by recipe name, with its ``alpha``."""
    try:
        cls = SURROGATES[name]
    except KeyError:
        raise UserError(
            f"neuron.surrogate: unknown surrogate {name!r}{closest(name, SURROGATES)}; "
            f"choose one of {', '.join(SURROGATES)}"
        ) from None
    return cls(alpha=float(alpha))


def neuron_kwargs_from_config(cfg: Any) -> tuple[type, dict]:
    """``(neuron class, constructor kwargs)`` from a recipe's ``neuron`` section."""
    cls = resolve_neuron(cfg.type)
    kwargs = dict(
        v_threshold=float(cfg.v_threshold),
        v_reset=None if cfg.v_reset is None else float(cfg.v_reset),
        surrogate_function=build_surrogate(cfg.surrogate, cfg.alpha),
        detach_reset=bool(cfg.detach_reset),
        backend=cfg.backend,
    )
    if cls is LIFNode:
        kwargs.update(tau=float(cfg.tau), decay_input=bool(cfg.decay_input))
    return cls, kwargs
