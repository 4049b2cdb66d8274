"""One forward pass with hooks: what every layer receives, computes and emits.

:func:`profile_forward` runs a model on batches and records, for every conv / linear layer, the
operations it performed and whether its input was spikes, and for every spiking neuron its
firing rate. ``summary`` and ``energy`` read these records (the literature convention, firing
rates, NeuroBench's synaptic operations); SpikingJelly's dispatch counters
(:mod:`sj_bwsnn.analysis.counting`) run in the same pass, entered through ``modes``.

Input kind is *measured*, not assumed: a conv / linear input whose values all lie in {0, 1} is
``'spike'``; so is the output of an average pool whose input was spikes (a mean of spikes, e.g. the
classifier after the head neuron and global pooling: ``W @ mean_p(s_p) = mean_p(W @ s_p)``, so
the layer can still be run with accumulates only). Anything else is ``'real'`` (stem convs on
pixels, the 1x1 convs of the real-valued downsample shortcuts on the membrane stream).

Operations of one conv / linear call, per sample::

    ops = (output elements per sample) * fan_in,   fan_in = C_in / groups * prod(kernel)

A real-valued input makes them MACs (multiply-accumulate). A spike input makes them potential
synaptic operations; the literature convention counts ``ops * input_rate`` of them
(input_rate = mean of the input = spikes per input neuron per time step).

With ``neurobench=True`` every conv / linear call also gets NeuroBench's synaptic operations
(``neurobench/metrics/utils/layers/macs.py`` ``single_layer_MACs``, v2.3.0): the layer run on
``1[x != 0]`` with weights ``1[w != 0]`` (effective) and on all-ones input and weights (dense),
bias left out, summed over outputs; the input counts as spiking when its values lie in
{-1, 0, 1}. Binary layers use the weights their forward uses, ``alpha * sign(w)``.

The hooks' own arithmetic runs hidden from SpikingJelly's dispatch counters (the Python dispatch
key excluded, as SpikingJelly's counters hide theirs), so it never adds to the counts.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from ..layers import BinaryLayer


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
    spikes: float = 0.0  # spiking neurons: spikes emitted, per sample
    outputs: float = 0.0  # spiking neurons: output elements (neurons x steps), per sample
    out_elements: float = 0.0  # conv / linear: output elements, per sample
    feeds_bn: bool = False  # binary layers: every output went straight into a BatchNorm
    nb_effective_ac: float = 0.0  # NeuroBench effective synaptic operations of calls whose
    nb_effective_mac: float = 0.0  # input lay in {-1, 0, 1} (ACs) / did not (MACs), per sample
    nb_dense: float = 0.0  # NeuroBench dense synaptic operations, per sample
    _sum: float = field(default=0.0, repr=False)
    _count: int = field(default=0, repr=False)
    _calls: int = field(default=0, repr=False)
    _into_bn: int = field(default=0, repr=False)


def is_spike_tensor(x: torch.Tensor) -> bool:
    """True when every value of ``x`` is 0 or 1 (a spike tensor)."""
    return bool(((x == 0) | (x == 1)).all())


def hidden_from_counters():
    """Run tensor code unseen by SpikingJelly's ``DispatchCounterMode`` (what its rules do,
    ``op_counter/ac.py`` ``_spike_convolution``)."""
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python))


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


def _weight(m: nn.Module) -> torch.Tensor:
    return m.binarized_weight() if isinstance(m, BinaryLayer) else m.weight


def _synapse_count(m: nn.Module, x: torch.Tensor, w: torch.Tensor) -> float:
    """Sum over outputs of ``layer(x; w)`` without bias (NeuroBench's ``stateless_layer_macs``)."""
    if isinstance(m, nn.Linear):
        return float(F.linear(x, w).sum(dtype=torch.float64))
    core = _core_dims(m) - 1
    if x.dim() > core + 1:  # multi-step [T, N, ...] -> [T*N, ...] as SpikingJelly's layers do
        x = x.flatten(0, x.dim() - core - 1)
    return float(m._conv_forward(x, w, None).sum(dtype=torch.float64))


_AVG_POOLS = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
_BATCH_NORMS = nn.modules.batchnorm._BatchNorm


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


def batch_size(x: torch.Tensor) -> int:
    """Samples in a model input: ``[N, ...]`` images, or ``[T, N, C, H, W]`` event frames."""
    return x.shape[1] if x.dim() == 5 else x.shape[0]


@torch.no_grad()
def profile_forward(model: nn.Module, batches, modes=None, neurobench: bool = False
                    ) -> tuple[list[LayerRecord], int]:
    """Run ``model`` (in eval mode) on each tensor of ``batches`` (an iterable, consumed once);
    returns one record per reported module and the number of samples seen.

    Batches are model inputs: static images ``[N, C, H, W]`` or time-first event frames
    ``[T, N, C, H, W]`` (5-D), whose samples are counted along dimension 1. Rates are averaged over
    every element of every batch (T, N and neurons); ``ops`` are per sample, averaged over the
    samples. The network's state is reset around each batch. ``modes``, if given, returns the
    context managers (SpikingJelly's counter modes) to enter around each forward call only.
    """
    records: dict[str, LayerRecord] = {}
    # avg-pool outputs computed from spikes and outputs of binary layers, by data_ptr; held until
    # the batch ends so that no other tensor can reuse the address and be mistaken for them
    pooled_spikes: dict[int, torch.Tensor] = {}
    binary_out: dict[int, tuple[LayerRecord, torch.Tensor]] = {}
    dense_cache: dict[tuple, float] = {}

    def hook(name: str):
        def fn(mod, inputs, out):
            with hidden_from_counters():
                _record(name, mod, inputs[0], out)
        return fn

    def _record(name, mod, x, out):
        core = _core_dims(mod)
        r = records.get(name)
        if r is None:
            r = records[name] = LayerRecord(name, type(mod).__name__, ())
        if isinstance(mod, BaseNode):
            r.spikes += float(out.sum(dtype=torch.float64))
            r.outputs += out.numel()
            r.firing_rate = r.spikes / r.outputs
        elif core is not None:
            spike = is_spike_tensor(x) or x.data_ptr() in pooled_spikes
            r.input_kind = "spike" if spike else "real"
            r.fan_in = _fan_in(mod)
            r.ops += out.numel() * r.fan_in  # all samples; divided by their number below
            r.out_elements += out.numel()
            r._calls += 1
            if spike:
                r._sum += float(x.sum(dtype=torch.float64))
                r._count += x.numel()
                r.input_rate = r._sum / r._count
            if isinstance(mod, BinaryLayer):
                binary_out[out.data_ptr()] = (r, out)
            if neurobench:
                w = _weight(mod)
                effective = _synapse_count(mod, (x != 0).to(w.dtype), (w != 0).to(w.dtype))
                if bool(((x == 0) | (x == 1) | (x == -1)).all()):
                    r.nb_effective_ac += effective
                else:
                    r.nb_effective_mac += effective
                key = (name, tuple(x.shape))
                if key not in dense_cache:
                    dense_cache[key] = _synapse_count(mod, torch.ones_like(x, dtype=w.dtype),
                                                      torch.ones_like(w))
                r.nb_dense += dense_cache[key]
        elif isinstance(mod, _AVG_POOLS) and is_spike_tensor(x):
            pooled_spikes[out.data_ptr()] = out
        elif isinstance(mod, _BATCH_NORMS) and x.data_ptr() in binary_out:
            src, y = binary_out[x.data_ptr()]
            if y.numel() == x.numel():  # the whole output (or a reshaped view of it)
                src._into_bn += 1
        # the batch dimension: after the time steps of an op, or second in SJ's step mode 'm'
        bdim = (out.dim() - core) if core is not None else int(getattr(mod, "step_mode", "s") == "m")
        r.out_shape = tuple(s for i, s in enumerate(out.shape) if i != bdim)

    hooks = [m.register_forward_hook(hook(name)) for name, m in reported_modules(model)]
    was_training = model.training
    model.eval()
    samples = 0
    device = next(model.parameters(), torch.empty(0)).device
    try:
        for x in batches:
            x = x.to(device)
            functional.reset_net(model)
            with ExitStack() as stack:
                for mode in (modes() if modes else ()):
                    stack.enter_context(mode)
                model(x)
            functional.reset_net(model)
            pooled_spikes.clear()
            binary_out.clear()
            samples += batch_size(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n = max(samples, 1)
    for r in records.values():
        r.ops /= n
        r.out_elements /= n
        r.spikes /= n
        r.outputs /= n
        r.nb_effective_ac /= n
        r.nb_effective_mac /= n
        r.nb_dense /= n
        r.feeds_bn = r._calls > 0 and r._into_bn == r._calls
    order = {name: i for i, (name, _) in enumerate(reported_modules(model))}
    return sorted(records.values(), key=lambda r: order[r.name]), samples
