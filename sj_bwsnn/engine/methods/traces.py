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


def traced_layers(model: nn.Module, skip: tuple[str, ...] = ("stem",)) -> list[nn.Module]:
    """Every ``nn.Conv2d`` / ``nn.Linear`` (binary and SpikingJelly layers subclass them) outside
    the submodules named in ``skip``.

    As in SpikingJelly's ``OTTTSequential`` and the OTTT code, layers after the first spiking
    neuron get traces (the classifier included); the stem sees the raw input and keeps its plain
    gradient. BatchNorm parameters keep plain (per-step) gradients.
    """
    skipped = {id(m) for name in skip if hasattr(model, name)
               for m in getattr(model, name).modules()}
    return [m for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in skipped]


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
