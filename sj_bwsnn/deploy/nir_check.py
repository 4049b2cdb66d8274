"""Round trips of an exported NIR graph: run it in SpikingJelly and snnTorch, compare with ours.

Each runner steps a model ``T`` times on ``x_seq`` (``[T, N, ...]``: for a BWResNet, the static
image repeated, exactly what the model's stem sees) and returns ``(out [T, N, K], spikes)`` where
``spikes`` maps our layer name (``'blocks.0.0.sn'``, read from each NIR node's metadata
``sj_bwsnn_layer``) to its ``[T, N, ...]`` output spikes. :func:`agreement` compares two runs.

Readers:

* :func:`run_sj` — SpikingJelly 2.0's ``import_from_nir(graph, dt, step_mode='m')``: LIF with
  ``tau = tau_nir / dt``, ``decay_input`` from ``r`` (1 -> True, ``tau`` -> False), hard reset to
  ``v_reset``, fires at ``v >= v_threshold``.
* :func:`run_snntorch` — snnTorch 1.0's ``snntorch.import_nir.import_from_nir`` (its ``dt`` is fixed
  at 1e-4, so the graph must be exported with ``dt=1e-4``): ``snn.Leaky`` with
  ``beta = 1 - dt / tau_nir``, input not scaled, threshold divided by ``r * dt / tau_nir``
  (``1 / tau`` for ``decay_input=True``: the membrane is ``tau`` times SJ's), reset to zero
  (``v_reset`` ignored), fires at ``mem > threshold``. Its ``Flatten`` keeps NIR's batch-free
  ``start_dim``, which flattens the batch into the features; ``fix_flatten=True`` shifts it by one.
  Its IF mapping asserts ``r == 1`` and builds a leaky neuron (``beta = 0.9``), so graphs with IF
  neurons do not import.

Both readers build their graph with ``nirtorch.nir_to_torch``, which sums a node's several inputs
in the order of a Python ``set`` (``nirtorch/nir_interpreter.py:241``): for 3+ inputs the float
rounding of the sum, unlike ours, follows ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import contextlib
import io

import torch
from spikingjelly.activation_based import functional
from torch import nn

from ..models.base import SpikingClassifier


def input_sequence(model: nn.Module, x: torch.Tensor, T: int | None = None) -> torch.Tensor:
    """``[T, N, ...]`` per-step inputs for a reader: a static ``[N, C, H, W]`` batch is repeated
    ``T`` (default ``model.T``) times, a sequence is returned as it is."""
    if isinstance(model, SpikingClassifier) and x.dim() == 4:
        return x.unsqueeze(0).repeat(T or model.T, *([1] * x.dim()))
    return x


def _layer(meta) -> str:
    name = meta.get("sj_bwsnn_layer", "")
    return name.decode() if isinstance(name, bytes) else str(name)


@torch.no_grad()
def run_ours(model: nn.Module, x: torch.Tensor, neurons=None):
    """``(out [T, N, K], spikes)`` of our model on its own input ``x`` (eval mode, CPU)."""
    model = model.cpu().eval()
    spikes, hooks = {}, []
    neuron_types = neurons or _neuron_types()
    for name, m in model.named_modules():
        if isinstance(m, neuron_types):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: spikes.__setitem__(name, o.detach().clone())))
    try:
        functional.reset_net(model)
        out = model.forward_seq(x) if isinstance(model, SpikingClassifier) else model(x)
    finally:
        for h in hooks:
            h.remove()
        functional.reset_net(model)
    return out, spikes


def _neuron_types() -> tuple:
    from spikingjelly.activation_based.neuron import BaseNode

    return (BaseNode,)


@torch.no_grad()
def run_sj(graph, x_seq: torch.Tensor, dt: float):
    """``(out, spikes)`` of ``graph`` imported with SpikingJelly's ``import_from_nir``."""
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    gm = import_from_nir(graph, dt=dt, step_mode="m")
    spikes, hooks = {}, []
    for name, mod in gm.named_children():
        node = graph.nodes.get(name)
        if node is not None and type(node).__name__ in ("LIF", "IF"):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, key=_layer(node.metadata): spikes.__setitem__(key, o[0].clone())))
    out, _ = gm(x_seq)
    for h in hooks:
        h.remove()
    return out, spikes


@torch.no_grad()
def run_snntorch(graph, x_seq: torch.Tensor, fix_flatten: bool = True):
    """``(out, spikes)`` of ``graph`` imported with snnTorch, stepped ``T`` times."""
    import snntorch
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a warning per rescaled LIF
        net = import_from_nir(graph)
    spikes, hooks, neurons = {}, [], []
    for name, mod in net.named_children():
        node = graph.nodes.get(name)
        if isinstance(mod, nn.Flatten) and fix_flatten:
            mod.start_dim += 1
            mod.end_dim += 1 if mod.end_dim >= 0 else 0
        if isinstance(mod, snntorch.SpikingNeuron):
            neurons.append(mod)
            key = _layer(node.metadata)
            spikes[key] = []
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, key=key: spikes[key].append(o.clone())))
    for m in neurons:
        m.reset_mem()
    outs, state = [], None
    for t in range(x_seq.shape[0]):
        out, state = net(x_seq[t], state)
        outs.append(out)
    for h in hooks:
        h.remove()
    return torch.stack(outs), {k: torch.stack(v) for k, v in spikes.items()}


def agreement(ours, theirs) -> dict:
    """Per-layer fraction of identical spikes, largest |logit difference| (time-averaged) and the
    fraction of identical predictions (argmax of the time-averaged output)."""
    (out_a, sp_a), (out_b, sp_b) = ours, theirs
    a, b = out_a.mean(0), out_b.mean(0)
    layers = {k: (sp_a[k] == sp_b[k]).float().mean().item() for k in sp_a if k in sp_b}
    return {"samples": int(a.shape[0]),
            "same_prediction": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
            "max_logit_diff": (a - b).abs().max().item(),
            "spikes_identical": layers,
            "spikes_identical_all": (sum((sp_a[k] == sp_b[k]).sum().item() for k in layers)
                                     / max(1, sum(sp_a[k].numel() for k in layers))),
            "layers_compared": len(layers), "layers_ours": len(sp_a)}
