"""NeuroBench-compatible metrics (``sj-bwsnn energy --neurobench``).

Definitions of NeuroBench (J. Yik et al., "The neurobench framework for benchmarking neuromorphic
computing algorithms and systems", Nature Communications 16, 1545 (2025), arXiv:2304.04640, the
algorithm track's complexity metrics), computed the way its code does (``neurobench`` 2.3.0):

* footprint: bytes of every parameter and buffer at its stored dtype
  (``metrics/static/footprint.py``);
* connection sparsity: zero weights / all weights of the Linear and Conv layers
  (``metrics/static/connection_sparsity.py``);
* activation sparsity: zero outputs / all outputs of the activation layers, over all layers, time
  steps and samples (``metrics/workload/activation_sparsity.py``; here the spiking neurons);
* synaptic operations per sample (``metrics/workload/synaptic_operations.py`` and
  ``metrics/utils/layers/macs.py``): for every Linear / Conv call, the layer applied to
  ``1[x != 0]`` with weights ``1[w != 0]``, bias left out, summed over outputs (effective) and the
  same with all-ones input and weights (dense); effective operations of a call whose inputs all
  lie in {-1, 0, 1} are ACs, otherwise MACs.

The per-call numbers come from :func:`~sj_bwsnn.analysis.profile.profile_forward`'s pass (the same
one SpikingJelly's counters run in). Deliberate differences from the ``neurobench`` package, which
cross-checks these numbers in tests/test_neurobench.py when it is installed (``pip install
sj-bwsnn[neurobench]``):

1. Binary layers are read through the weights their forward uses, ``alpha * sign(w)`` (never zero):
   NeuroBench reads ``layer.weight``, the latent real weights.
2. Per sample means per sample: NeuroBench divides by ``data[0].size(0)``, which for time-first
   event frames ``[T, N, ...]`` is ``T``.
3. ``footprint_deployed_bytes`` (ours, not NeuroBench's) adds the deployed size, 1-bit weights
   packed (see ``sj-bwsnn summary``).
"""

from __future__ import annotations

from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from ..layers import BinaryLayer
from .profile import LayerRecord

_CONNECTION_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # neurobench blocks/layer.py


def footprint_bytes(model: nn.Module) -> int:
    """Parameters and buffers at their element size (NeuroBench ``Footprint``)."""
    return (sum(p.numel() * p.element_size() for p in model.parameters())
            + sum(b.numel() * b.element_size() for b in model.buffers()))


def connection_sparsity(model: nn.Module) -> float:
    """Zero weights over all weights of Linear / Conv layers (binary layers: ``alpha*sign(w)``)."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, _CONNECTION_LAYERS):
            w = m.binarized_weight() if isinstance(m, BinaryLayer) else m.weight
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total if total else 0.0


def neurobench_metrics(model: nn.Module, records: list[LayerRecord]) -> dict:
    """The four metrics from the records of one profiling pass (``neurobench=True``)."""
    from .summary import deployed_bytes

    neurons = [r for r in records if r.firing_rate is not None]
    spikes, outputs = sum(r.spikes for r in neurons), sum(r.outputs for r in neurons)
    layers = [r for r in records if r.input_kind]
    modules = dict(model.named_modules())
    return {
        "footprint_bytes": footprint_bytes(model),
        "footprint_deployed_bytes": deployed_bytes(model),
        "connection_sparsity": connection_sparsity(model),
        "activation_sparsity": 1.0 - spikes / outputs if outputs else 0.0,
        "synaptic_operations": {
            "effective_macs": sum(r.nb_effective_mac for r in layers),
            "effective_acs": sum(r.nb_effective_ac for r in layers),
            "dense": sum(r.nb_dense for r in layers),
        },
        "layers": [{"name": r.name, "kind": r.kind, "effective_macs": r.nb_effective_mac,
                    "effective_acs": r.nb_effective_ac, "dense": r.nb_dense} for r in layers
                   if isinstance(modules.get(r.name), _CONNECTION_LAYERS)],
        "activation_layers": len([r for r in neurons if isinstance(modules.get(r.name), BaseNode)]),
    }
