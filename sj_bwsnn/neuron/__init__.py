"""Spiking neurons: the one place where a neuron class is chosen.

``LIFNode`` / ``IFNode`` subclass SpikingJelly 2.0's nodes and add ``backend='auto'|'cupy'|'torch'``
(see :mod:`sj_bwsnn.neuron.nodes`). Models take a neuron *class* plus keyword arguments;
recipes name one with :func:`resolve_neuron` / :func:`neuron_kwargs_from_config`, or a source's
whole setting with ``neuron.preset`` (:data:`PRESETS`: sltt, ottt, dsr_if, dsr_lif, spikingjelly).
"""

from .nodes import BACKENDS, IFNode, LIFNode, check_backend_available
from .registry import (NEURONS, PRESETS, SURROGATES, build_surrogate, neuron_kwargs_from_config,
                       resolve_neuron, resolve_preset)

__all__ = [
    "check_backend_available",
    "BACKENDS", "IFNode", "LIFNode", "NEURONS", "PRESETS", "SURROGATES",
    "build_surrogate", "neuron_kwargs_from_config", "resolve_neuron", "resolve_preset",
]
