"""NIR export: ``sj_bwsnn.to_nir(model, example_input)`` and ``sj-bwsnn export --format nir``.

NIR (the Neuromorphic Intermediate Representation, package ``nir``) describes one time step of a
network as a graph of nodes; a reader steps it ``T`` times. This module turns a model into that
per-step graph and hands it to SpikingJelly 2.0's own mapper
(``spikingjelly/activation_based/nir_exchange/to_nir.py``: ``_ModuleMapper``, then
``nirtorch.torch_to_nir``), extended in :mod:`sj_bwsnn.deploy.nir_map` with what our models need:

================================  ===============================================================
ours                              NIR
================================  ===============================================================
BinaryConv2d / Conv1d / Linear    Conv2d / Conv1d / Affine with the effective weight
                                  ``alpha * sign(w)``; metadata ``binary_signs`` (sign bits packed
                                  as in the packed export), ``binary_alpha``, ``channel_scale``
conv/linear -> BatchNorm (eval)   BN folded into the conv: ``W' = W * k``, ``b' = beta + (b - mu) k``,
                                  ``k = gamma / sqrt(var + eps)`` (float64, then float32)
BatchNorm on anything else        a diagonal 1x1 Conv2d / Conv1d / Affine (``x * k + b'``)
``a + b`` (multi-shortcut sums)   two edges into the consumer (NIR sums a node's inputs)
AvgPool2d, AdaptiveAvgPool2d      AvgPool2d (adaptive: when the input divides evenly; ``ceil_mode``
                                  only when it does not change the output)
flatten                           Flatten (NIR has no batch dimension: ``start_dim - 1``)
LIFNode / IFNode, hard reset      LIF (``tau_nir = tau * dt``, ``r = 1`` if ``decay_input`` else
                                  ``tau``, ``v_leak = v_reset``) / IF (``r = 1 / dt``)
Identity, Dropout (eval)          nothing (bypassed)
================================  ===============================================================

The graph's ``metadata`` records ``dt``, ``T``, the spike condition and the read-out (the model's
logits are the mean over the ``T`` steps of the output node); every node's metadata names the
layer it came from (``sj_bwsnn_layer``).

Refused with one :class:`~sj_bwsnn.errors.UserError` naming the layer: feedback SNNs
(``fsnn_*``: recurrent through the time step), spiking self-attention (products of two signals),
soft-reset neurons (``v_reset=None``: NIR's IF/LIF reset *to* ``v_reset``; reset by subtraction has
no NIR form), DSR and other neurons without a NIR node, BW-ResNets with ``norm='ws'`` or
``head='dsr'`` (constant scalings and DSR's read-out, which the per-step view does not build), max
pooling, BatchNorm without running statistics, and any other function in the forward. Of the
bundled recipes only ``digits_bwsnn`` (hard-reset LIF) exports: every real-data BW-ResNet recipe
uses ``neuron.preset: sltt`` (soft reset). :func:`check_recipe` words the refusal for a
checkpoint's recipe (the method's case) before its model is built.

Threshold: SpikingJelly fires at ``v >= v_th``, the NIR spec at ``v > v_th`` (snnTorch, Norse and
hardware follow the spec). With 1-bit weights and binary spikes the membrane lands exactly on the
threshold often, so this matters. ``threshold='sj'`` (default) writes ``v_th`` as trained:
SpikingJelly's ``import_from_nir`` reproduces the model. ``threshold='spec'`` writes the largest
float32 below ``v_th``: a reader that follows the spec fires at exactly our float32 membranes.
"""

from __future__ import annotations

import copy
import io
import operator
from pathlib import Path

import numpy as np
import torch
from spikingjelly.activation_based import base, functional, layer
from spikingjelly.activation_based import neuron as sj_neuron
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import UserError
from ..layers import BinaryLayer
from ..models.base import SpikingClassifier
from ..models.bw_resnet import BWResNet
from ..models.fsnn import FeedbackSNN
from .packed import pack_signs

DT = 1e-4  # SpikingJelly's and snnTorch's default; a reader must step with the same dt
THRESHOLDS = ("sj", "spec")
NEEDS_NIR = "needs the nir package: pip install 'sj-bwsnn[nir]'"
PACKED = "use the packed export (sj-bwsnn export CHECKPOINT --out FILE, --format packed)"
ONLY_DIGITS = ("of the bundled recipes only digits_bwsnn trains hard-reset neurons: every real-data "
               "BW-ResNet recipe uses neuron.preset sltt (soft reset)")
_BN = nn.modules.batchnorm._BatchNorm
_BYPASS = (nn.Identity, nn.Dropout, layer.Dropout)


def require_nir():
    """Import ``nir``, ``nirtorch`` and the mapper, or raise the one-line install hint."""
    try:
        import nir  # noqa: F401
        import nirtorch  # noqa: F401

        from . import nir_map
    except ImportError:
        raise UserError(NEEDS_NIR) from None
    return nir_map


class _ResNetStep(nn.Module):
    """One time step of a :class:`BWResNet` (its modules, single-step mode): stem -> blocks ->
    head SN -> pool -> flatten -> fc. The stem runs every step on that step's input (the model
    runs it once for a static image and repeats it: the same values). This is
    ``BWResNet.forward_seq`` for ``norm='bn'`` and ``head='linear'`` only; the others (a head
    scale, DSR's read-out) are refused in :func:`_refuse_unmappable`."""

    def __init__(self, m: BWResNet):
        super().__init__()
        self.stem, self.blocks, self.head_sn, self.pool, self.fc = (
            m.stem, m.blocks, m.head_sn, m.pool, m.fc)
        self.flatten = nn.Flatten(1)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.head_sn(self.blocks(self.stem(x))))))


def _refuse_unmappable(net: nn.Module, mapped: tuple) -> None:
    """One line for the layer NIR cannot express (checked before tracing). Attention first,
    then neurons, then pooling: the message names the most fundamental obstacle."""
    from spikingjelly.activation_based.layer.attention import SpikingSelfAttention

    from ..models.bw_spikformer import SSAUnit

    mods = list(net.named_modules())
    where = lambda name, m: ("cannot export to NIR: " + (f"layer '{name}'" if name else  # noqa: E731
                                                           "the model") + f" ({type(m).__name__})")
    for name, m in mods:
        if isinstance(m, FeedbackSNN):
            raise UserError(f"{where(name, m)} is a feedback SNN (fsnn_*): its last layer feeds "
                            f"layer 0 one step later, a loop through time that the per-step NIR "
                            f"export (feed-forward graphs) does not build; {PACKED}")
    for name, m in mods:
        if isinstance(m, (SpikingSelfAttention, SSAUnit)):
            raise UserError(f"{where(name, m)} is spiking self-attention: its matrix products "
                            f"Q*K^T*V multiply two signals, and NIR has no node for that")
    for name, m in mods:
        is_neuron = isinstance(m, sj_neuron.BaseNode) or (
            isinstance(m, base.MemoryModule) and hasattr(m, "v_threshold"))
        if is_neuron and type(m) not in mapped:
            raise UserError(f"{where(name, m)} is a neuron with no NIR node (NIR maps LIF and IF "
                            f"neurons with hard reset)")
        if is_neuron and m.v_reset is None:
            raise UserError(f"{where(name, m)} resets by subtraction (v_reset=None), but NIR's "
                            f"LIF/IF reset to v_reset: {PACKED}, or retrain with hard reset "
                            f"(neuron.v_reset: 0.0) where the method allows it (train.method ottt "
                            f"does not); {ONLY_DIGITS}")
    for name, m in mods:
        if isinstance(m, BWResNet) and m.norm == "ws":
            raise UserError(f"{where(name, m)} has model.kwargs.norm: ws (weight-standardised "
                            f"convs, the stream scaled by constants between blocks), which the "
                            f"NIR export does not map (norm: bn only); {PACKED}")
        if isinstance(m, BWResNet) and m.head == "dsr":
            raise UserError(f"{where(name, m)} has model.kwargs.head: dsr (DSR's read-out, pool "
                            f"-> SN -> fc -> BN -> SN with weighted rates), which the NIR export "
                            f"does not map (head: linear only); {PACKED}")
    for name, m in mods:
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            raise UserError(f"{where(name, m)}: NIR has no max pooling node (average pooling "
                            f"is supported)")


def _step_view(net: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The per-step module of ``net`` (already single-step) and its per-step example input."""
    if isinstance(net, BWResNet):
        if x.dim() not in (4, 5):
            raise UserError(f"example_input for {type(net).__name__}: expected [N, C, H, W] or "
                            f"[T, N, C, H, W], got shape {tuple(x.shape)}")
        return _ResNetStep(net), (x if x.dim() == 4 else x[0])
    if isinstance(net, SpikingClassifier):
        raise UserError(f"cannot export to NIR: no per-step view of {type(net).__name__} "
                        f"(NIR export supports BWResNet models and plain layer stacks)")
    return net, x


def _owner(node: fx.Node) -> str:
    """``layer 'name'`` of the module whose forward made ``node`` (or the model's own forward)."""
    stack = node.meta.get("nn_module_stack") or {}
    name = next(reversed(stack.values()))[0] if stack else ""
    return f"layer '{name}'" if name else "the model's own forward"


def _fold_weight(mod: nn.Module, bn: _BN | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(weight, bias, metadata) of ``mod`` with ``bn`` folded in (float64 math, float32 result)."""
    binary = isinstance(mod, BinaryLayer)
    w = (mod.binarized_weight() if binary else mod.weight).detach().double()
    c = w.shape[0]
    b = mod.bias.detach().double() if mod.bias is not None else torch.zeros(c, dtype=torch.float64)
    meta: dict = {}
    k = torch.ones(c, dtype=torch.float64)
    if bn is not None:
        k, shift = _bn_affine(bn)
        b = shift + b * k
        meta["bn_folded"] = 1
        meta["bn_scale"] = k.float().numpy()
    w_eff = (w * k.view(-1, *([1] * (w.dim() - 1)))).float()
    if binary:
        bits, alpha = pack_signs(mod.binarized_weight())
        meta.update(binary_signs=bits.numpy(), binary_alpha=alpha.numpy(),
                    channel_scale=w_eff.reshape(c, -1)[:, 0].abs().numpy()
                    * np.sign(k.numpy()).astype(np.float32),
                    binary_weight_form="weight[c] = channel_scale[c] * (2 * bit - 1), "
                                       "bits = binary_signs unpacked MSB first")
    return w_eff, b.float(), meta


def _bn_affine(bn: _BN) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k, shift)`` with ``BN(x) = x * k + shift`` per channel, eval mode (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise UserError(f"cannot export to NIR: layer '{bn._nir_name}' is a BatchNorm without "
                        f"running statistics (track_running_stats=False); it normalises each "
                        f"batch, which NIR cannot express")
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(var)
    k = gamma / torch.sqrt(var + bn.eps)
    return k, beta - mean * k


def _plain(mod: nn.Module, w: torch.Tensor, b: torch.Tensor, nir_map, meta: dict) -> nn.Module:
    """A plain conv/linear (the mapper's own classes) holding ``w``, ``b`` and ``meta``."""
    if isinstance(mod, nn.Linear):
        new = nir_map.Linear(w.shape[1], w.shape[0])
    else:
        cls = nir_map.Conv2d if isinstance(mod, nn.Conv2d) else nir_map.Conv1d
        new = cls(w.shape[1] * mod.groups, w.shape[0], mod.kernel_size, mod.stride, mod.padding,
                  mod.dilation, mod.groups, True, mod.padding_mode)
    new.weight.data.copy_(w)
    new.bias.data.copy_(b)
    new.nir_meta = meta
    return new


def _diag_affine(bn: _BN, shape, nir_map) -> nn.Module:
    """A BatchNorm that follows no conv/linear, as a diagonal 1x1 conv (or affine for [N, F])."""
    k, shift = _bn_affine(bn)
    c = k.numel()
    if len(shape) == 2:
        new = nir_map.Linear(c, c)
    else:
        new = (nir_map.Conv2d if len(shape) == 4 else nir_map.Conv1d)(c, c, 1, bias=True)
    with torch.no_grad():
        new.weight.zero_()
        new.weight.view(c, c, -1)[:, :, 0] = torch.diag(k.float())
        new.bias.copy_(shift.float())
    new.nir_meta = {"bn_as_affine": 1, "bn_scale": k.float().numpy()}
    return new


def _avg_pool(mod: nn.Module, shape, name: str) -> nn.Module:
    """AvgPool2d / AdaptiveAvgPool2d as a plain AvgPool2d, when that is exact for ``shape``."""
    h, w = shape[-2:]
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        out = mod.output_size if isinstance(mod.output_size, tuple) else (mod.output_size,) * 2
        oh, ow = (h if out[0] is None else out[0]), (w if out[1] is None else out[1])
        if h % oh or w % ow:
            raise UserError(f"cannot export to NIR: layer '{name}' (AdaptiveAvgPool2d) pools "
                            f"{h}x{w} to {oh}x{ow}, not an even division (no fixed NIR window)")
        return nn.AvgPool2d((h // oh, w // ow), (h // oh, w // ow))
    k, s, p = (nn.modules.utils._pair(v) for v in (mod.kernel_size, mod.stride, mod.padding))
    if mod.divisor_override is not None or (mod.ceil_mode and any(
            (n + 2 * pi - ki) % si for n, ki, si, pi in zip((h, w), k, s, p))):
        raise UserError(f"cannot export to NIR: layer '{name}' (AvgPool2d) uses ceil_mode or a "
                        f"divisor override that changes its output on {h}x{w} inputs")
    if any(p) and not mod.count_include_pad:
        raise UserError(f"cannot export to NIR: layer '{name}' (AvgPool2d) pads without counting "
                        f"the padding; NIR's AvgPool2d counts it")
    return nn.AvgPool2d(k, s, p)


def _rewrite(gm: fx.GraphModule, nir_map) -> None:
    """Fold BN, replace binary layers, pools and flatten calls by what the mapper knows."""
    g = gm.graph
    for node in list(g.nodes):
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            mod._nir_name = node.target
            if isinstance(mod, _BYPASS):
                node.replace_all_uses_with(node.args[0])
                g.erase_node(node)
    for node in list(g.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BN):
            continue
        bn, prev = gm.get_submodule(node.target), node.args[0]
        prev_mod = gm.get_submodule(prev.target) if prev.op == "call_module" else None
        if isinstance(prev_mod, (nn.Conv1d, nn.Conv2d, nn.Linear)) and len(prev.users) == 1:
            w, b, meta = _fold_weight(prev_mod, bn)
            meta["sj_bwsnn_layer"] = f"{prev.target} + {node.target}"
            gm.add_submodule(prev.target, _plain(prev_mod, w, b, nir_map, meta))
            node.replace_all_uses_with(prev)
            g.erase_node(node)
        else:
            new = _diag_affine(bn, node.args[0].meta["tensor_meta"].shape, nir_map)
            new.nir_meta["sj_bwsnn_layer"] = node.target
            gm.add_submodule(node.target, new)
    for node in list(g.nodes):
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, BinaryLayer):  # not followed by a BN: alpha * sign(w) as it is
                w, b, meta = _fold_weight(mod, None)
                meta["sj_bwsnn_layer"] = node.target
                gm.add_submodule(node.target, _plain(mod, w, b, nir_map, meta))
            elif isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                new = _avg_pool(mod, node.args[0].meta["tensor_meta"].shape, node.target)
                new.nir_meta = {"sj_bwsnn_layer": node.target}
                gm.add_submodule(node.target, new)
        elif node.op in ("call_method", "call_function"):
            _rewrite_call(gm, node)
    g.lint()
    gm.recompile()


def _rewrite_call(gm: fx.GraphModule, node: fx.Node) -> None:
    """Keep sums, turn flatten calls into ``nn.Flatten``; anything else has no NIR node."""
    if node.target in (operator.add, "add"):
        return
    if node.target in ("flatten", torch.flatten):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        name = f"_nir_flatten_{node.name}"
        flat = nn.Flatten(start, end)
        flat.nir_meta = {"sj_bwsnn_layer": node.name}
        gm.add_submodule(name, flat)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        return
    op = getattr(node.target, "__name__", str(node.target))
    raise UserError(f"cannot export to NIR: {_owner(node)} computes `{op}`, which has no "
                    f"NIR node (NIR graphs hold layers, neurons and sums of their outputs)")


def _trace(view: nn.Module, nir_map) -> fx.GraphModule:
    from nirtorch.torch_tracer import NIRTorchTracer

    leaves = tuple(nir_map.MAPPED) + (_BN, BinaryLayer, nn.AdaptiveAvgPool2d, nn.MaxPool2d) + _BYPASS
    tracer = NIRTorchTracer(leaves)
    try:
        graph = tracer.trace(view)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"cannot export to NIR: {type(view).__name__}'s forward cannot be traced "
                        f"into a graph of layers ({e.__class__.__name__}: {first})") from None
    return fx.GraphModule(tracer.root, graph)


def to_nir(model: nn.Module, example_input: torch.Tensor, dt: float = DT,
           threshold: str = "sj"):
    """The ``nir.NIRGraph`` of one time step of ``model`` (see the module docstring).

    :param model: a :class:`~sj_bwsnn.models.BWResNet` (trained or not; exported in eval mode,
        BN running statistics folded) or a plain stack of SpikingJelly / torch layers in step mode
        ``'s'`` or ``'m'``. The model is copied, never changed.
    :param example_input: what ``model`` takes: ``[N, C, H, W]`` or ``[T, N, C, H, W]`` for a
        BWResNet, ``[T, N, ...]`` for a multi-step layer stack, ``[N, ...]`` for a single-step
        one. Only its per-step shape is used.
    :param dt: the time step written into neuron time constants; a reader must use the same.
    :param threshold: ``'sj'`` (SpikingJelly's ``v >= v_th``) or ``'spec'`` (NIR's ``v > v_th``:
        the largest float32 below ``v_th`` is written).
    :raises UserError: for a layer NIR cannot express (one line naming it), or without ``nir``.
    """
    nir_map = require_nir()
    if threshold not in THRESHOLDS:
        raise UserError(f"threshold must be one of {', '.join(THRESHOLDS)}, got {threshold!r}")
    if not float(dt) > 0:
        raise UserError(f"dt must be > 0, got {dt}")
    _refuse_unmappable(model, tuple(nir_map.MAPPED))
    net = copy.deepcopy(model).cpu().float().eval()
    functional.reset_net(net)
    multi = any(getattr(m, "step_mode", "s") == "m" for m in net.modules())
    functional.set_step_mode(net, "s")
    x = example_input.detach().cpu().float()
    view, x_step = _step_view(net, x)
    if view is net and multi:
        x_step = x[0]
    gm = _trace(view, nir_map)
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(x_step)
        except Exception as e:
            raise UserError(f"cannot export to NIR: the model does not run on an example input of "
                            f"shape {tuple(x_step.shape)} per step ({e.__class__.__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    functional.reset_net(gm)
    _rewrite(gm, nir_map)
    graph = nir_map.export(gm, x_step, float(dt), threshold)
    graph.metadata = {
        "producer": "sj_bwsnn", "model": type(model).__name__, "dt": float(dt),
        "time_steps": int(getattr(model, "T", 0) or (x.shape[0] if multi else 0)),
        "spike_condition": "v >= v_threshold" if threshold == "sj" else "v > v_threshold",
        "readout": "logits = mean over the T steps of the output node",
        "input": ("the same image at every step (or one frame per step)"
                  if isinstance(model, SpikingClassifier) else "one input per step"),
    }
    return graph


def write_nir(graph, out: str | Path) -> int:
    """Write ``graph`` to ``out`` (HDF5, atomically); returns the file size in bytes."""
    import nir

    from ..engine.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    nir.write(buf, graph)
    data = buf.getvalue()
    atomic_write_bytes(Path(out), lambda f: f.write(data))
    return len(data)
