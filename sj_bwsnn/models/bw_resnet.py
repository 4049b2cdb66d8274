"""BW-ResNet: multi-shortcut spiking ResNets with 1-bit convs, registered with timm.

Layout: real-valued stem -> stages of :class:`~sj_bwsnn.layers.MultiShortcutBasicBlock`
(every 3x3 conv binary, each inside its own shortcut) -> SN -> global average pool ->
real-valued classifier. ``binary=False`` builds the full-precision twin (baseline / teacher).

Input: a static image batch ``[N, C, H, W]`` (direct encoding: the stem runs once and its output
is repeated over ``T`` steps) or an event-frame sequence ``[T', N, C, H, W]`` (then ``T = T'``).
``forward`` returns the time-averaged logits ``[N, num_classes]``; ``forward_seq`` the per-step
logits ``[T, N, num_classes]``.

Registered names: ``bw_resnet18``, ``bw_resnet34`` (``stem='imagenet'`` default: 7x7/2 conv +
max-pool; ``stem='cifar'``: 3x3/1 conv for 32x32 inputs) and ``bw_resnet_tiny`` (8x8 inputs such
as scikit-learn's digits). After ``import sj_bwsnn``,
``timm.create_model('bw_resnet18', num_classes=10, T=2)`` works.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from spikingjelly.activation_based import functional, layer
from timm.models import register_model
from torch import nn

from ..layers import MultiShortcutBasicBlock
from ..neuron import LIFNode
from .base import SpikingClassifier, entrypoint_kwargs

STEMS = ("imagenet", "cifar")


class BWResNet(SpikingClassifier):
    """Multi-shortcut binary-weight spiking ResNet (see module docstring).

    :param layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
    :param widths: channels per stage.
    :param T: time steps for static input.
    :param binary: 1-bit convs in the blocks (True) or the real-valued twin (False).
    :param neuron: neuron class; :class:`sj_bwsnn.neuron.LIFNode` by default.
    :param neuron_kwargs: its keyword arguments (``step_mode`` is set to 'm' here).
    :param scaling, detach_alpha: weight-binarizer options (see :mod:`sj_bwsnn.layers.binarize`).
    """

    def __init__(self, layers: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512),
                 stem: str = "imagenet", in_chans: int = 3, num_classes: int = 1000, T: int = 4,
                 binary: bool = True, neuron: type = LIFNode,
                 neuron_kwargs: dict[str, Any] | None = None, scaling: str = "channel",
                 detach_alpha: bool = True, stem_width: int | None = None):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T, self.binary, self.num_classes = int(T), bool(binary), num_classes
        neuron_kwargs = dict(neuron_kwargs or {})
        neuron_kwargs.pop("step_mode", None)
        sw = stem_width or widths[0]
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_chans, sw, 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(sw), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, sw, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(sw))
        blocks, in_ch = [], sw
        for i, (n, w) in enumerate(zip(layers, widths)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(MultiShortcutBasicBlock(in_ch, w, stride, binary, neuron,
                                                      neuron_kwargs, scaling, detach_alpha))
                in_ch = w
        self.blocks = nn.Sequential(*blocks)
        self.head_sn = neuron(step_mode="m", **neuron_kwargs)
        self.pool = layer.AdaptiveAvgPool2d(1, step_mode="m")
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # static image: the stem sees identical input at every step, run it once
            y = self.stem(x)
            return y.unsqueeze(0).repeat(self.T, *([1] * y.dim()))
        if x.dim() == 5:  # [T', N, C, H, W] frames
            return functional.seq_to_ann_forward(x, self.stem)
        raise ValueError(f"expected [N, C, H, W] or [T, N, C, H, W] input, got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, num_features]`` pooled spike features."""
        x = self.blocks(self._encode(x))
        return self.pool(self.head_sn(x)).flatten(2)

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, N, num_classes]``."""
        return self.fc(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def feedback_points(self) -> list[nn.Module]:
        """Where direct-feedback methods (``opzo``, ``dfa``) cut the net: the stem and every
        multi-shortcut unit. Each unit's output is the residual stream, so cutting there leaves
        no path around a cut: a unit (SN -> conv -> BN plus its shortcut) is one layer."""
        return [self.stem, *(unit for block in self.blocks for unit in block)]


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
