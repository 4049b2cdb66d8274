"""One forward pass with hooks: what every layer receives, computes and emits.

:func:`profile_forward` runs a model on a batch and records, for every conv / linear layer, the
operations it performed and whether its input was spikes, and for every spiking neuron its
firing rate. ``summary`` and ``energy`` both read these records.

Input kind is *measured*, not assumed: a conv / linear input whose values all lie in {0, 1} is
``'spike'``; so is the output of an average pool whose input was spikes (a mean of spikes, e.g. the
classifier after the head neuron and global pooling: ``W @ mean_p(s_p) = mean_p(W @ s_p)``, so
the layer can still be run with accumulates only). Anything else is ``'real'`` (stem convs on
pixels, the 1x1 convs of the real-valued downsample shortcuts on the membrane stream).

Operations of one conv / linear call, per sample::

    ops = (output elements per sample) * fan_in,   fan_in = C_in / groups * prod(kernel)

A real-valued input makes them MACs (multiply-accumulate). A spike input makes them potential
synaptic operations; only those driven by a spike happen, which ``energy`` models as
``ops * input_rate`` (input_rate = mean of the input = spikes per input neuron per time step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn


@dataclass
class LayerRecord:
    """What one leaf module did in the profiled forward (numbers are per sample)."""

    name: str
    kind: str  # class name, e.g. BinaryConv2d
    out_shape: tuple[int, ...]  # output shape with the batch dimension removed
    fan_in: int = 0  # weights per output element (conv / linear), else 0
    ops: float = 0.0  # operations of all its calls, per sample (conv / linear), see module doc
    input_kind: str = ""  # 'spike' | 'real' for conv / linear, '' otherwise
    input_rate: float = 0.0  # mean of the input when it is spikes (spikes per neuron per step)
    firing_rate: float | None = None  # spiking neurons: mean output (spikes per neuron per step)
    _sum: float = field(default=0.0, repr=False)
    _count: int = field(default=0, repr=False)


def is_spike_tensor(x: torch.Tensor) -> bool:
    """True when every value of ``x`` is 0 or 1 (a spike tensor)."""
    return bool(((x == 0) | (x == 1)).all())


def _core_dims(m: nn.Module) -> int | None:
    """Dimensions of one single-step call's output (N plus feature dims), or None for non-ops."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return 2 + len(m.kernel_size)
    if isinstance(m, nn.Linear):
        return 2
    return None


def _fan_in(m: nn.Module) -> int:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.in_channels // m.groups * math.prod(m.kernel_size)
    return m.in_features


_AVG_POOLS = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)


def reported_modules(model: nn.Module):
    """``(name, module)`` of the modules a summary lists: spiking neurons (as one unit), convs,
    linears, average pools and every other leaf that holds parameters or buffers."""
    skip: set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(s + ".") for s in skip):
            continue
        if name and (isinstance(m, BaseNode) or _core_dims(m) is not None):
            skip.add(name)  # a neuron's surrogate, a binary layer's binarizer: part of the unit
            yield name, m
        elif name and not any(True for _ in m.children()) and (
                isinstance(m, _AVG_POOLS)
                or any(True for _ in m.parameters(recurse=False))
                or any(True for _ in m.buffers(recurse=False))):
            yield name, m


@torch.no_grad()
def profile_forward(model: nn.Module, batches) -> tuple[list[LayerRecord], int]:
    """Run ``model`` (in eval mode) on each tensor of ``batches`` (an iterable, consumed once);
    returns one record per reported module and the number of samples seen.

    Batches are model inputs: static images ``[N, C, H, W]`` or time-first event frames
    ``[T, N, C, H, W]`` (5-D), whose samples are counted along dimension 1. Rates are averaged over
    every element of every batch (T, N and neurons); ``ops`` are per sample, averaged over the
    samples. The network's state is reset around each batch.
    """
    records: dict[str, LayerRecord] = {}
    # avg-pool outputs computed from spikes, by data_ptr; held until the batch ends so that no
    # other tensor can reuse the address and be mistaken for pooled spikes
    pooled_spikes: dict[int, torch.Tensor] = {}

    def hook(name: str):
        def fn(mod, inputs, out):
            x = inputs[0]
            core = _core_dims(mod)
            r = records.get(name)
            if r is None:
                r = records[name] = LayerRecord(name, type(mod).__name__, ())
            if isinstance(mod, BaseNode):
                r._sum += float(out.sum(dtype=torch.float64))
                r._count += out.numel()
                r.firing_rate = r._sum / r._count
            elif core is not None:
                spike = is_spike_tensor(x) or x.data_ptr() in pooled_spikes
                r.input_kind = "spike" if spike else "real"
                r.fan_in = _fan_in(mod)
                r.ops += out.numel() * r.fan_in  # all samples; divided by their number below
                if spike:
                    r._sum += float(x.sum(dtype=torch.float64))
                    r._count += x.numel()
                    r.input_rate = r._sum / r._count
            elif isinstance(mod, _AVG_POOLS) and is_spike_tensor(x):
                pooled_spikes[out.data_ptr()] = out
            # the batch dimension: after the time steps of an op, or second in SJ's step mode 'm'
            bdim = (out.dim() - core) if core is not None else int(getattr(mod, "step_mode", "s") == "m")
            r.out_shape = tuple(s for i, s in enumerate(out.shape) if i != bdim)
        return fn

    hooks = [m.register_forward_hook(hook(name)) for name, m in reported_modules(model)]
    was_training = model.training
    model.eval()
    samples = 0
    device = next(model.parameters(), torch.empty(0)).device
    try:
        for x in batches:
            x = x.to(device)
            functional.reset_net(model)
            model(x)
            functional.reset_net(model)
            pooled_spikes.clear()
            samples += x.shape[1] if x.dim() == 5 else x.shape[0]
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for r in records.values():
        r.ops /= max(samples, 1)
    order = {name: i for i, (name, _) in enumerate(reported_modules(model))}
    return sorted(records.values(), key=lambda r: order[r.name]), samples
