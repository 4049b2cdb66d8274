"""Multi-shortcut spiking blocks: a shortcut around every binary conv, on a membrane stream.

One unit (:class:`SpikingConvUnit`) on the real-valued residual stream ``x``, ``[T, N, C, H, W]``::

    y = D(x) + BN(W * SN(x))        SN: spiking neuron, spikes {0, 1}; W: 1-bit (or real) conv
                                    D = identity, or AvgPool(stride) -> real 1x1 conv -> BN

and a :class:`MultiShortcutBasicBlock` stacks two units, so a ResNet BasicBlock gets two
shortcuts instead of one::

    y = D(x) + BN1(W1 * SN1(x))
    z = y    + BN2(W2 * SN2(y))

Only spikes meet the binary convs; the stream itself stays real-valued (a membrane shortcut).

Sources, checked line by line:

* Multi-shortcut unit: Bi-Real Net's PyTorch code, ``liuzechun/Bi-Real-net``
  ``pytorch_implementation/BiReal18_34/birealnet.py`` (at f58aa4d): ``BasicBlock`` (62-87) is
  ``sign(x) -> HardBinaryConv -> BN -> + residual`` with one block per 3x3 conv (``birealnet18``
  stacks 4 per stage, 139-141), and the shape-changing shortcut is ``AvgPool2d(2, stride) -> 1x1
  conv -> BN`` (108-112). ReActNet's ``resnet/2_step2/birealnet.py`` (``liuzechun/ReActNet`` at
  a6cd08d, 73-106) keeps this layout and adds learnable biases and RPReLU around it.
* Neuron before the conv, shortcut on the membrane: MS-ResNet, ``Ariande1/MS-ResNet``
  ``models/MS_ResNet.py`` (at 7c5f006): ``BasicBlock_104`` (136-172) is ``LIF -> conv -> BN ->
  LIF -> conv -> BN`` plus the shortcut, added without a neuron; its shortcut is again
  AvgPool -> 1x1 conv -> BN (160-169).

Deliberate differences:

1. ``SN`` replaces Bi-Real's ``sign`` (so activations are spikes in {0, 1}, not +-1) and is the
   recipe's neuron (MS-ResNet: its own LIF with decay 0.25, threshold 0.5, rectangular surrogate).
2. Two shortcuts per BasicBlock (Bi-Real/ReActNet) rather than MS-ResNet's one.
3. No ReActNet learnable biases / RPReLU; BatchNorm is PyTorch's per-channel BN over ``T*N``
   (MS-ResNet: tdBN with weight initialised to the threshold, the last BN of a block to zero).
4. The downsample AvgPool uses ``ceil_mode=True, count_include_pad=False`` (Bi-Real:
   ``AvgPool2d(2, stride)``), which differs only for odd feature-map sizes.

All modules run in SpikingJelly's multi-step mode on time-first ``[T, N, C, H, W]`` tensors and
check that layout on entry (:mod:`sj_bwsnn.layers.shape`).
``norm='ws'`` builds the normalizer-free variant of OTTT's nets instead (weight-standardised
convs, no BN: :class:`~sj_bwsnn.layers.ws.WSSpikingConvUnit`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from spikingjelly.activation_based import layer
from torch import nn

from .binary import BinaryConv2d
from .shape import check_seq
from .ws import WSSpikingConvUnit


def make_conv(binary: bool, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
              padding: int = 0, scaling: str = "channel", detach_alpha: bool = True) -> nn.Module:
    """A bias-free multi-step conv: :class:`BinaryConv2d` if ``binary``, else SJ's real ``Conv2d``."""
    if binary:
        return BinaryConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False,
                            step_mode="m", scaling=scaling, detach_alpha=detach_alpha)
    return layer.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False, step_mode="m")


class Downsample(nn.Sequential):
    """Real-valued shortcut for a change of shape: AvgPool(stride) -> 1x1 conv -> BN (Bi-Real Net)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        mods: list[nn.Module] = []
        if stride != 1:
            mods.append(layer.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False,
                                        step_mode="m"))
        mods += [layer.Conv2d(in_ch, out_ch, 1, bias=False, step_mode="m"),
                 layer.BatchNorm2d(out_ch, step_mode="m")]
        super().__init__(*mods)


class SpikingConvUnit(nn.Module):
    """``x -> SN -> Conv -> BN -> + shortcut(x)``: one binary conv inside its own shortcut.

    :param binary: 1-bit conv (True) or its real-valued twin (False).
    :param neuron: neuron class (e.g. :class:`sj_bwsnn.neuron.LIFNode`), built in step mode 'm'.
    :param neuron_kwargs: keyword arguments for ``neuron``.
    :param kernel_size: of the conv (padding ``kernel_size // 2``); 3 in the ResNet blocks.
    :param shortcut: the shortcut module; default :class:`Downsample` when the shape changes,
        else identity.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, binary: bool, neuron: type,
                 neuron_kwargs: dict[str, Any], scaling: str = "channel", detach_alpha: bool = True,
                 kernel_size: int = 3, shortcut: nn.Module | None = None):
        super().__init__()
        self.sn = neuron(step_mode="m", **neuron_kwargs)
        self.conv = make_conv(binary, in_ch, out_ch, kernel_size, stride, kernel_size // 2, scaling,
                              detach_alpha)
        self.bn = layer.BatchNorm2d(out_ch, step_mode="m")
        if shortcut is None:
            shortcut = (Downsample(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch
                        else nn.Identity())
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_seq(x, type(self).__name__, self.conv.in_channels)
        return self.shortcut(x) + self.bn(self.conv(self.sn(x)))


NORMS = ("bn", "ws")


class MultiShortcutBasicBlock(nn.Sequential):
    """A ResNet BasicBlock with a shortcut around each of its two 3x3 convs (see module doc).

    :param norm: ``'bn'`` (:class:`SpikingConvUnit`, BatchNorm after each conv) or ``'ws'``
        (:class:`~sj_bwsnn.layers.ws.WSSpikingConvUnit`: weight-standardised convs, no BN, OTTT's
        NF scaling); ``expected_var`` is then the variance of the input stream, and
        ``self.expected_var`` that of the output (1.0 for ``'bn'``).
    """

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, binary: bool, neuron: type,
                 neuron_kwargs: dict[str, Any], scaling: str = "channel", detach_alpha: bool = True,
                 norm: str = "bn", expected_var: float = 1.0):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        common = dict(binary=binary, neuron=neuron, neuron_kwargs=neuron_kwargs,
                      scaling=scaling, detach_alpha=detach_alpha)
        if norm == "bn":
            super().__init__(SpikingConvUnit(in_ch, out_ch, stride, **common),
                             SpikingConvUnit(out_ch, out_ch, 1, **common))
            self.expected_var = 1.0
            return
        units, var = [], float(expected_var)
        for cin, s in ((in_ch, stride), (out_ch, 1)):
            units.append(WSSpikingConvUnit(cin, out_ch, s, beta=math.sqrt(var), **common))
            var = units[-1].var_after(var)
        super().__init__(*units)
        self.expected_var = var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_seq(x, type(self).__name__, self[0].conv.in_channels)
        return super().forward(x)
