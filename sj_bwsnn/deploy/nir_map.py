"""SpikingJelly's NIR mapper extended for sj_bwsnn (imported only when ``nir`` is installed).

:class:`NodeMapper` subclasses ``_ModuleMapper`` of SpikingJelly 2.0
(``spikingjelly/activation_based/nir_exchange/to_nir.py:25``; LIF at ``:196``, IF at ``:186``,
checked against its reader ``from_nir.py:171``), which maps torch / SpikingJelly
conv, linear, pooling, flatten and IF/LIF/PLIF/CUBA-LIF modules to NIR nodes. What it adds:

* our :class:`~sj_bwsnn.neuron.LIFNode` / :class:`~sj_bwsnn.neuron.IFNode` (subclasses of SJ's,
  which the base looks up by exact class), mapped by the base's own ``map_lif`` / ``map_if``;
* :class:`Conv2d`, :class:`Conv1d`, :class:`Linear`: the plain layers :mod:`sj_bwsnn.deploy.nir`
  puts in place of binary layers and of conv/linear + BatchNorm pairs; mapped by the base, their
  ``nir_meta`` (1-bit structure, BN scale) goes into the node's metadata;
* every node's metadata names the layer it came from (``sj_bwsnn_layer``); neurons also record
  the spike condition, reset and time constant;
* ``threshold='spec'``: neuron ``v_threshold`` lowered to the largest float32 below it.
"""

from __future__ import annotations

import nir
import nirtorch
import numpy as np
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based.nir_exchange.to_nir import _ModuleMapper
from torch import nn
from torch.nn.modules.utils import _pair

from ..errors import UserError
from ..neuron import IFNode, LIFNode


class Conv2d(nn.Conv2d):
    """A plain conv that carries ``nir_meta`` (a folded or binary layer's metadata)."""


class Conv1d(nn.Conv1d):
    """A plain 1-D conv that carries ``nir_meta``."""


class Linear(nn.Linear):
    """A plain linear layer that carries ``nir_meta`` (always with bias: ``nir.Affine``)."""


_NEURONS = (sj_neuron.IFNode, sj_neuron.LIFNode, sj_neuron.ParametricLIFNode, IFNode, LIFNode)


class NodeMapper(_ModuleMapper):
    """SpikingJelly's ``_ModuleMapper`` plus our layers (see the module docstring)."""

    def __init__(self, net, example_input, dt: float, threshold: str):
        self.threshold = threshold
        super().__init__(net, example_input, dt=dt)

    @property
    def map_dict(self) -> dict:
        base = dict(super().map_dict)
        base.update({LIFNode: self.map_lif, IFNode: self.map_if, Conv2d: self.map_conv2d,
                     Conv1d: self.map_conv1d, Linear: self.map_linear})
        return {cls: self._with_metadata(fn) for cls, fn in base.items()}

    def map_avgpool2d(self, module: nn.AvgPool2d) -> nir.NIRNode:
        """The base's node with ``kernel_size`` / ``stride`` / ``padding`` as 2-element arrays, as
        the NIR spec types them (the base passes ints through; snnTorch's reader needs arrays)."""
        node = super().map_avgpool2d(module)
        for field in ("kernel_size", "stride", "padding"):
            setattr(node, field, np.array(_pair(getattr(node, field))))
        return node

    def _with_metadata(self, fn):
        def mapped(module: nn.Module) -> nir.NIRNode:
            name = getattr(module, "nir_meta", {}).get("sj_bwsnn_layer",
                                                        getattr(module, "_nir_name", ""))
            try:
                node = fn(module)
            except (NotImplementedError, ValueError) as e:  # the base's refusals (groups, ...)
                raise UserError(f"cannot export to NIR: layer '{name}' ({type(module).__name__}): "
                                f"{e}") from None
            meta = {"sj_bwsnn_layer": getattr(module, "_nir_name", "")}
            meta.update(getattr(module, "nir_meta", {}))
            if isinstance(module, _NEURONS):
                meta.update(self._neuron_meta(module, node))
            node.metadata = meta
            return node
        return mapped

    def _neuron_meta(self, module: nn.Module, node: nir.NIRNode) -> dict:
        v_th = np.float32(module.v_threshold)
        if self.threshold == "spec":
            below = np.nextafter(v_th, np.float32(-np.inf))
            node.v_threshold = np.full_like(node.v_threshold, float(below))
        meta = {"neuron": type(module).__name__, "v_threshold_trained": float(v_th),
                "spike_condition": ("v >= v_threshold" if self.threshold == "sj"
                                    else "v > v_threshold"),
                "reset": f"hard, to v_reset = {module.v_reset}"}
        if hasattr(module, "tau"):
            meta.update(tau_steps=float(module.tau), decay_input=int(bool(module.decay_input)))
        return meta


def _mapped_classes() -> tuple:
    """Classes the mapper knows (the base's plus ours), without building a mapper."""
    base = _ModuleMapper.__new__(_ModuleMapper)
    return tuple(_ModuleMapper.map_dict.fget(base)) + (LIFNode, IFNode, Conv2d, Conv1d, Linear)


MAPPED = _mapped_classes()


def export(gm: nn.Module, example_input, dt: float, threshold: str) -> nir.NIRGraph:
    """``nirtorch.torch_to_nir`` of the rewritten per-step graph module, through :class:`NodeMapper`."""
    mapper = NodeMapper(gm, example_input, dt, threshold)
    # default_dict=None: nirtorch's defaults would override our nn.Linear mapping (no metadata)
    return nirtorch.torch_to_nir(gm, mapper.map_dict, default_dict=None, type_check=True)
