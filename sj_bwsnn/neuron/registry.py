"""Names a recipe may use for neurons, surrogate functions and neuron presets."""

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

# ``neuron.preset``: the neuron settings of a source, as recipe values. A recipe's explicit neuron
# keys override them (sj_bwsnn/engine/recipe.py). Checked against (commit in brackets):
#   SLTT  qymeng94/SLTT@0758ecd:   modules/neuron.py:5-10 (SLTTNeuron: decay_input False,
#         v_reset None = soft reset, detach_reset False), train_SLTT.py:37 (-tau 1.1),
#         :44 + :179-180 ("triangle" = SpikingJelly PiecewiseQuadratic(), alpha 1.0 by default)
#   OTTT  pkuxmq/OTTT-SNN@c15d5da: modules/neuron.py:62-67 (OnlineLIFNode: decay_input False,
#         v_reset None, detach_reset True), train_cifar.py:39 (-tau 2.), :102 (Sigmoid(alpha=4.))
#   DSR   qymeng94/DSR@876c8d1:   cifar/main_single_gpu.py:34-39 (LIF: Vth 0.3, tau 1.0 in DSR's
#         own meaning, see neuron/dsr.py), README.md IF commands (--Vth 6 --alpha 0.5)
#   SpikingJelly 2.0 LIFNode defaults (activation_based/neuron/lif.py:97-108): tau 2.0,
#         decay_input True, hard reset to 0, Sigmoid(alpha=4), detach_reset False
# DSR neurons use only type, v_threshold and (dsr_lif) tau; their other fields are SpikingJelly's
# defaults and have no effect.
_SJ = dict(type="lif", tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
           surrogate="sigmoid", alpha=4.0, detach_reset=False)
PRESETS: dict[str, dict[str, Any]] = {
    "spikingjelly": _SJ,
    "sltt": dict(type="lif", tau=1.1, decay_input=False, v_threshold=1.0, v_reset=None,
                 surrogate="piecewise_quadratic", alpha=1.0, detach_reset=False),
    "ottt": dict(type="lif", tau=2.0, decay_input=False, v_threshold=1.0, v_reset=None,
                 surrogate="sigmoid", alpha=4.0, detach_reset=True),
    "dsr_lif": {**_SJ, "type": "dsr_lif", "tau": 1.0, "v_threshold": 0.3},
    "dsr_if": {**_SJ, "type": "dsr_if", "v_threshold": 6.0},
}


def resolve_preset(name: str) -> dict[str, Any]:
    """The neuron values of a preset (a copy)."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise UserError(
            f"neuron.preset: unknown preset {name!r}{closest(name, PRESETS)}; "
            f"choose one of {', '.join(PRESETS)} (or null)"
        ) from None


def resolve_neuron(name: str) -> type:
    """The neuron class for a recipe name (``'lif'``, ``'if'``, ``'dsr_if'``, ``'dsr_lif'``)."""
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
    """``(neuron class, constructor kwargs)`` from a recipe's ``neuron`` section.

    DSR neurons get ``v_threshold`` (and ``tau`` for ``dsr_lif``, DSR's meaning) and nothing else.
    """
    cls = resolve_neuron(cfg.type)
    if cls is DSRIFNode:
        return cls, dict(v_threshold=float(cfg.v_threshold))
    if cls is DSRLIFNode:
        return cls, dict(v_threshold=float(cfg.v_threshold), tau=float(cfg.tau))
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
