"""OTTT presynaptic traces for any conv / linear layer, binary ones included.

For a layer ``u[t] = W x[t] + b`` whose output feeds a leaky membrane (``lambda = 1 - 1/tau``),
OTTT (Xiao et al., NeurIPS 2022) keeps the temporal credit of ``W`` in a trace of its input::

    a_hat[t] = lambda * a_hat[t-1] + x[t]          (a_hat[0] = x[0], no gradient)
    dL/dW   += delta[t] a_hat[t]^T,   delta[t] = dL_t/du[t] (spatial path only)

:func:`presynaptic_traces` installs this on chosen layers for the duration of a ``with`` block:
each call of a traced layer is one time step; its forward value is ``layer(x[t])`` unchanged,
while its backward sends ``W^T delta[t]`` to ``x[t]`` and computes the weight gradient from
``layer(a_hat[t])`` (SpikingJelly's ``ReplaceforGrad``, as in its ``OTTTSequential``). The layer's
own forward runs in both branches, so a binary layer binarizes its weight there and the trace
meets ``alpha * sign(w)``; the STE then carries the gradient to the latent weight.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from spikingjelly.activation_based.layer.online_learning import ReplaceforGrad
from torch import nn


_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def input_layers(model: nn.Module) -> list[nn.Module]:
    """The conv / linear layers that see the model's raw input (image or event frames).

    A model may declare them with an ``input_layers()`` method; otherwise the first conv / linear
    in module order is taken, which is the stem's conv for BW-ResNet and the patch stem's first
    conv for BW-Spikformer (tests/test_methods.py checks both with forward hooks).
    """
    declared = getattr(model, "input_layers", None)
    if callable(declared):
        return list(declared())
    first = next((m for m in model.modules() if isinstance(m, _WEIGHTED)), None)
    return [first] if first is not None else []


def traced_layers(model: nn.Module, skip: list[nn.Module] | None = None) -> list[nn.Module]:
    """Every conv / linear layer (binary and SpikingJelly layers subclass them) except ``skip``,
    by default :func:`input_layers`.

    As in the OTTT code (pkuxmq/OTTT-SNN models/spiking_vgg.py:224-231: the first conv is not
    wrapped by ``WrapedSNNOp``) and SpikingJelly's ``OTTTSequential``, layers after the first
    spiking neuron get traces (the classifier included); the layer that sees the raw input keeps
    its plain gradient. BatchNorm parameters keep plain (per-step) gradients.
    """
    skipped = {id(m) for m in (input_layers(model) if skip is None else skip)}
    return [m for m in model.modules() if isinstance(m, _WEIGHTED) and id(m) not in skipped]


def _traced_forward(layer_forward, traces: dict, key: int, decay: float):
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            prev = traces.get(key)
            trace = x.detach() if prev is None else prev * decay + x
            traces[key] = trace
            out = layer_forward(x)
        out_for_grad = layer_forward(ReplaceforGrad.apply(x, trace))
        return ReplaceforGrad.apply(out_for_grad, out)

    return forward


@contextmanager
def presynaptic_traces(layers: list[nn.Module], decay: float):
    """Within the block, ``layers`` use OTTT traces (see the module docstring); traces start at
    zero on entry (one block per batch) and the layers' own ``forward`` is restored on exit."""
    traces: dict[int, torch.Tensor] = {}
    for layer in layers:
        layer.forward = _traced_forward(layer.forward, traces, id(layer), float(decay))
    try:
        yield traces
    finally:
        for layer in layers:
            del layer.forward  # the instance attribute; the class's forward is back
