"""BW-ResNet: multi-shortcut spiking ResNets with 1-bit convs, registered with timm.

Layout, on a real-valued membrane stream ``x`` (``[T, N, C, H, W]``)::

    x = stem(image)                                 real conv + BN (+ max-pool), no neuron
    x = D(x) + BN(W * SN(x))                        per 3x3 conv, W 1-bit (sj_bwsnn.layers.blocks)
    logits_t = FC(avgpool(SN_head(x)))              real classifier on pooled spikes, per step
    logits = mean_t logits_t

Each :class:`~sj_bwsnn.layers.MultiShortcutBasicBlock` holds two such units (two shortcuts per
BasicBlock); the equations, sources and differences of the unit are in
:mod:`sj_bwsnn.layers.blocks`. ``binary=False`` builds the full-precision twin (baseline / teacher).

Sources, checked line by line:

* Layout of ResNet-18/34 with a shortcut per binary conv: Bi-Real Net,
  ``liuzechun/Bi-Real-net`` ``pytorch_implementation/BiReal18_34/birealnet.py`` (at f58aa4d):
  16 single-conv blocks in 4 stages of 64/128/256/512 channels for ResNet-18 (98-101, 139-141;
  here 8 two-unit blocks, the same 16 shortcuts), the ImageNet stem 7x7/2 conv -> BN -> 3x3/2
  max-pool with no activation (94-97), stride 2 in the first block of stages 2-4.
* Head: MS-ResNet, ``Ariande1/MS-ResNet`` ``models/MS_ResNet.py`` (at 7c5f006, 221-226): a neuron
  on the stream, global average pool, mean over time, then the real FC (here the FC runs per step
  and the logits are averaged: the same by linearity, and ``forward_seq`` gives the steps).

Deliberate differences (our choices):

1. The head neuron: Bi-Real pools the real stream into the FC (birealnet.py:132-134); here the FC
   sees pooled spikes, as in MS-ResNet, so ``sj-bwsnn energy`` counts it as accumulates.
2. Initialisation: Kaiming normal (fan_out, ReLU) on every conv, binary ones included
   (torchvision's ResNet); Bi-Real draws binary latent weights from U[0, 0.001) (birealnet.py:47).
3. ``stem='cifar'`` (3x3/1 conv + BN for 32x32 inputs) and ``bw_resnet_tiny`` (8x8 digits) are
   our sizes. Direct encoding: for a static image the stem runs once and its output is repeated
   over ``T`` steps (it would compute the same thing at every step).

Input: a static image batch ``[N, C, H, W]`` or time-first event frames ``[T', N, C, H, W]`` (then
``T = T'``); anything else, ``[N, T, C, H, W]`` included, is refused at the entry with one line
(:mod:`sj_bwsnn.layers.shape`). ``forward`` returns the time-averaged logits
``[N, num_classes]``; ``forward_seq`` the per-step logits ``[T, N, num_classes]``.

Registered names: ``bw_resnet18``, ``bw_resnet34`` (``stem='imagenet'`` default: 7x7 conv +
max-pool; ``stem='cifar'``: 3x3/1 conv for 32x32 inputs), ``bw_resnet_small`` (28x28 grey images
such as (Fashion-)MNIST, sized for 2 CPU cores) and ``bw_resnet_tiny`` (8x8 inputs such as
scikit-learn's digits). After ``import sj_bwsnn``,
``timm.create_model('bw_resnet18', num_classes=10, T=2)`` works.

Options (``model.kwargs`` in a recipe):

* ``norm='bn'`` (default) BatchNorm after every conv; ``norm='ws'`` the normalizer-free variant of
  OTTT's paper nets: weight-standardised convs (1-bit ones binarize the standardised weight), no
  BN anywhere, the stem a WS conv, OTTT's NF-ResNet branch scaling (``x / beta`` into each unit,
  ``0.2 * skipinit * 2.74 * gain`` on its output) — see :mod:`sj_bwsnn.layers.ws`.
* ``head='linear'`` (default) ``SN -> pool -> fc`` per step; ``head='dsr'`` DSR's read-out
  (qymeng94/DSR@876c8d1 cifar/modules/preresnet.py:106-125, 147-162):
  ``SN -> pool -> SN -> fc -> BN1d -> SN`` and the output's firing rate, weighted by
  ``w_t = exp(-(T - t) dt / tau)`` when that last neuron is a DSR-LIF (preresnet.py:158-161).
  ``forward_seq`` then returns ``T * w_t * s[t]`` (``w_t = 1/T`` otherwise), so ``forward``'s
  time average is exactly DSR's (weighted) rate. Made for ``neuron.type: dsr_if | dsr_lif``
  (spikes of height ``V_th``); with LIF/IF neurons the read-out is a rate in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from spikingjelly.activation_based import functional, layer
from timm.models import register_model
from torch import nn

from ..errors import UserError
from ..layers import MultiShortcutBasicBlock, check_model_input
from ..layers.blocks import NORMS
from ..layers.ws import WS_EPS
from ..neuron import LIFNode
from ..neuron.dsr import DSRLIFNode
from .base import SpikingClassifier, entrypoint_kwargs

STEMS = ("imagenet", "cifar")
HEADS = ("linear", "dsr")


class BWResNet(SpikingClassifier):
    """Multi-shortcut binary-weight spiking ResNet (see module docstring).

    :param layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
    :param widths: channels per stage.
    :param T: time steps for static input.
    :param binary: 1-bit convs in the blocks (True) or the real-valued twin (False).
    :param neuron: neuron class; :class:`sj_bwsnn.neuron.LIFNode` by default.
    :param neuron_kwargs: its keyword arguments (``step_mode`` is set to 'm' here).
    :param scaling, detach_alpha: weight-binarizer options (see :mod:`sj_bwsnn.layers.binarize`).
    :param norm: ``'bn'`` or ``'ws'`` (module docstring).
    :param head: ``'linear'`` or ``'dsr'`` (module docstring).
    """

    def __init__(self, layers: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512),
                 stem: str = "imagenet", in_chans: int = 3, num_classes: int = 1000, T: int = 4,
                 binary: bool = True, neuron: type = LIFNode,
                 neuron_kwargs: dict[str, Any] | None = None, scaling: str = "channel",
                 detach_alpha: bool = True, stem_width: int | None = None, norm: str = "bn",
                 head: str = "linear"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if norm not in NORMS:
            raise UserError(f"model.kwargs.norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if head not in HEADS:
            raise UserError(f"model.kwargs.head must be one of {', '.join(HEADS)}, got {head!r}")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T, self.binary, self.num_classes = int(T), bool(binary), num_classes
        self.in_chans = in_chans
        self.norm, self.head = norm, head
        neuron_kwargs = dict(neuron_kwargs or {})
        neuron_kwargs.pop("step_mode", None)
        sw = stem_width or widths[0]
        self.stem = _stem(stem, norm, in_chans, sw)
        blocks, in_ch, var = [], sw, 1.0
        for i, (n, w) in enumerate(zip(layers, widths)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(MultiShortcutBasicBlock(in_ch, w, stride, binary, neuron,
                                                      neuron_kwargs, scaling, detach_alpha,
                                                      norm=norm, expected_var=var))
                in_ch, var = w, blocks[-1].expected_var
        self.blocks = nn.Sequential(*blocks)
        self.head_scale = 1.0 / math.sqrt(var)  # 'ws': the stream's expected std is sqrt(var)
        self.head_sn = neuron(step_mode="m", **neuron_kwargs)
        self.pool = layer.AdaptiveAvgPool2d(1, step_mode="m")
        self.num_features = in_ch
        if head == "dsr":
            self.pool_sn = neuron(step_mode="m", **neuron_kwargs)
        self.fc = nn.Linear(in_ch, num_classes)
        if head == "dsr":
            self.fc_bn = layer.BatchNorm1d(num_classes, step_mode="m")
            self.out_sn = neuron(step_mode="m", **neuron_kwargs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        check_model_input(x, type(self).__name__, self.T, self.in_chans)
        if x.dim() == 4:  # static image: the stem sees identical input at every step, run it once
            y = self.stem(x)
            # T copies stacked over the batch dim, then split off as [T, N, ...]: cat keeps y's memory
            # format (a channels_last stem output stays channels_last at every step, as the neurons
            # and convs want it), which unsqueeze(0).repeat(T, ...) would turn into NCHW
            return torch.cat([y] * self.T).view(self.T, *y.shape)
        return functional.seq_to_ann_forward(x, self.stem)  # [T', N, C, H, W] frames

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, num_features]`` pooled spike features."""
        x = self.blocks(self._encode(x))
        if self.head_scale != 1.0:
            x = x * self.head_scale
        return self.pool(self.head_sn(x)).flatten(2)

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, N, num_classes]`` (``head='dsr'``: weighted output spikes whose
        time average is DSR's read-out rate)."""
        if self.head == "linear":
            return self.fc(self.forward_features(x))
        feats = self.pool_sn(self.forward_features(x))
        out = self.out_sn(self.fc_bn(self.fc(feats)))
        T = out.shape[0]
        if isinstance(self.out_sn, DSRLIFNode):
            w = self.out_sn.rate_weights(T, out.device).to(out.dtype) * T
            out = out * w.view(T, 1, 1)
        return out

    def get_classifier(self) -> nn.Module:
        return self.fc

    def feedback_points(self) -> list[nn.Module]:
        """Where direct-feedback methods (``opzo``, ``dfa``) cut the net: the stem and every
        multi-shortcut unit. Each unit's output is the residual stream, so cutting there leaves
        no path around a cut: a unit (SN -> conv -> BN plus its shortcut) is one layer."""
        return [self.stem, *(unit for block in self.blocks for unit in block)]


def _stem(kind: str, norm: str, in_chans: int, width: int) -> nn.Sequential:
    """The real-valued stem: conv (WS conv with gain for ``norm='ws'``) -> BN (``'bn'`` only)
    -> max-pool (``'imagenet'``). It runs once per static image (single-step modules)."""
    k, stride, pad = (7, 2, 3) if kind == "imagenet" else (3, 1, 1)
    if norm == "ws":
        mods = [layer.WSConv2d(in_chans, width, k, stride, pad, bias=False, gain=True, eps=WS_EPS)]
    else:
        mods = [nn.Conv2d(in_chans, width, k, stride, pad, bias=False), nn.BatchNorm2d(width)]
    if kind == "imagenet":
        mods.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*mods)


def _create(layers, widths, default_stem, pretrained: bool = False, **kwargs) -> BWResNet:
    kwargs = entrypoint_kwargs(pretrained, kwargs)
    kwargs.setdefault("stem", default_stem)
    return BWResNet(layers, widths, **kwargs)


@register_model
def bw_resnet18(pretrained: bool = False, **kwargs) -> BWResNet:
    """BW-ResNet-18: 8 multi-shortcut BasicBlocks, 16 binary 3x3 convs."""
    return _create((2, 2, 2, 2), (64, 128, 256, 512), "imagenet", pretrained, **kwargs)


@register_model
def bw_resnet34(pretrained: bool = False, **kwargs) -> BWResNet:
    """BW-ResNet-34: 16 multi-shortcut BasicBlocks, 32 binary 3x3 convs."""
    return _create((3, 4, 6, 3), (64, 128, 256, 512), "imagenet", pretrained, **kwargs)


@register_model
def bw_resnet_tiny(pretrained: bool = False, **kwargs) -> BWResNet:
    """A small BW-ResNet for 8x8 inputs (digits): 3x3 stem, 3 blocks of 32/64/128 channels."""
    kwargs.setdefault("in_chans", 1)
    return _create((1, 1, 1), (32, 64, 128), "cifar", pretrained, **kwargs)


@register_model
def bw_resnet_small(pretrained: bool = False, **kwargs) -> BWResNet:
    """A small BW-ResNet for 28x28 grey images ((Fashion-)MNIST) on a few CPU cores: 3x3 stem,
    4 blocks of 16/32/64/128 channels at 28/14/7/4 pixels (8 binary 3x3 convs)."""
    kwargs.setdefault("in_chans", 1)
    return _create((1, 1, 1, 1), (16, 32, 64, 128), "cifar", pretrained, **kwargs)
