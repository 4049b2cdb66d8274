"""Normalizer-free spiking units with scaled weight-standardised convs (OTTT's nets, no BN).

OTTT's paper networks (Xiao et al., NeurIPS 2022) use no BatchNorm: convs with scaled weight
standardisation (pkuxmq/OTTT-SNN@c15d5da models/spiking_vgg.py:13-33, the same formula as
SpikingJelly's ``layer.WSConv2d``)::

    W_hat[c] = gain[c] * (W[c] - mean(W[c])) / sqrt(var(W[c]) * fan_in + eps),   eps = 1e-4

and a constant ``Scale(2.74)`` after every neuron (spiking_vgg.py:232, 246), which restores unit
variance after the spike nonlinearity. Their ResNets are NF-ResNets
(models/spiking_resnet_imagenet.py:125-177, 361-389): each residual branch sees ``x / beta``
(``beta = sqrt`` of the expected variance of the stream) and is multiplied by ``alpha = 0.2``
times a learnable scalar ``skipinit_gain`` that starts at 0; the expected variance grows by
``alpha^2`` per branch and restarts at ``1 + alpha^2`` after a downsampling shortcut.

:class:`WSSpikingConvUnit` is that, for our multi-shortcut unit (one shortcut per conv)::

    y = S(x) + alpha * s * 2.74 * g[c] * WSConv(SN(x / beta))
    S = identity (S(x) = x), or AvgPool -> WS 1x1 conv (gain) on x / beta

Deliberate differences from OTTT's code: the per-channel ``gain`` and the 2.74 are applied to the
conv's output (``g[c] * conv(s, W) = conv(s, g[c] * W)`` and ``2.74 * conv(s) = conv(2.74 s)``:
the same function), so the conv still receives spikes {0, 1} and a 1-bit conv's weight stays
``alpha * sign`` per channel; the downsampling shortcut acts on the real-valued stream ``x / beta``
(as our BN units do), not on the spikes; convs have no bias. A 1-bit WS conv
(:class:`BinaryWSConv2d`) standardises its latent weight and then binarizes it through the one
binarizer (:mod:`sj_bwsnn.layers.binarize`): ``w_b = alpha * sign(standardise(W))``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from spikingjelly.activation_based import layer
from torch import nn

from .binarize import WeightBinarizer
from .binary import BinaryConv2d

NF_ALPHA = 0.2  # OTTT's NF-ResNet default (spiking_resnet_imagenet.py:317)
SPIKE_SCALE = 2.74  # OTTT's Scale(2.74) after every neuron
WS_EPS = 1e-4  # OTTT's ScaledWSConv2d eps (spiking_vgg.py:15)


def standardize_weight(w: torch.Tensor, eps: float = WS_EPS) -> torch.Tensor:
    """``(W - mean) / sqrt(var * fan_in + eps)`` per output channel (OTTT spiking_vgg.py:23-30)."""
    dims = tuple(range(1, w.dim()))
    fan_in = math.prod(w.shape[1:])
    mean = w.mean(dim=dims, keepdim=True)
    var = w.var(dim=dims, keepdim=True)
    return (w - mean) / (var * fan_in + eps) ** 0.5


class StandardizedBinarizer(WeightBinarizer):
    """The shared binarizer applied to the standardised weight: ``binarize(standardize(W))``."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return super().forward(standardize_weight(w))


class BinaryWSConv2d(BinaryConv2d):
    """:class:`~sj_bwsnn.layers.BinaryConv2d` whose latent weight is weight-standardised before
    the sign: ``binarized_weight() = alpha * sign(standardize(W))``, exported like any 1-bit
    conv."""

    def __init__(self, *args, scaling: str = "channel", detach_alpha: bool = True, **kwargs):
        super().__init__(*args, scaling=scaling, detach_alpha=detach_alpha, **kwargs)
        self.binarizer = StandardizedBinarizer(scaling, detach_alpha)


def make_ws_conv(binary: bool, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, scaling: str = "channel", detach_alpha: bool = True):
    """A bias-free multi-step WS conv without gain (the gain sits in :class:`ResidualBranchScale`);
    the 1-bit and the real twin have the same parameter names (``weight``)."""
    if binary:
        return BinaryWSConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False,
                              step_mode="m", scaling=scaling, detach_alpha=detach_alpha)
    return layer.WSConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False, step_mode="m",
                          gain=False, eps=WS_EPS)


class ResidualBranchScale(nn.Module):
    """``x * alpha * skip * 2.74 * gain[c]`` on ``[T, N, C, H, W]``: the NF-ResNet branch scale
    (``skip`` starts at 0, ``gain`` at 1; see the module docstring)."""

    def __init__(self, channels: int, alpha: float = NF_ALPHA):
        super().__init__()
        self.alpha = float(alpha)
        self.gain = nn.Parameter(torch.ones(channels))
        self.skip = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gain.view(-1, *([1] * (x.dim() - 3)))
        return x * (self.alpha * SPIKE_SCALE * self.skip) * g

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, spike_scale={SPIKE_SCALE}"


class WSDownsample(nn.Sequential):
    """Real shortcut for a change of shape without BN: AvgPool(stride) -> WS 1x1 conv with gain."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        mods: list[nn.Module] = []
        if stride != 1:
            mods.append(layer.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False,
                                        step_mode="m"))
        mods.append(layer.WSConv2d(in_ch, out_ch, 1, bias=False, step_mode="m", gain=True,
                                   eps=WS_EPS))
        super().__init__(*mods)


class WSSpikingConvUnit(nn.Module):
    """``y = S(x) + ResidualBranchScale(WSConv(SN(x / beta)))`` (module docstring).

    :param beta: the expected standard deviation of the input stream ``x``.
    :param alpha: the NF branch scale (0.2).
    Other parameters as :class:`~sj_bwsnn.layers.SpikingConvUnit`.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, binary: bool, neuron: type,
                 neuron_kwargs: dict[str, Any], scaling: str = "channel",
                 detach_alpha: bool = True, kernel_size: int = 3, beta: float = 1.0,
                 alpha: float = NF_ALPHA):
        super().__init__()
        self.beta = float(beta)
        self.sn = neuron(step_mode="m", **neuron_kwargs)
        self.conv = make_ws_conv(binary, in_ch, out_ch, kernel_size, stride, kernel_size // 2,
                                 scaling, detach_alpha)
        self.scale = ResidualBranchScale(out_ch, alpha)
        self.shortcut = (WSDownsample(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x / self.beta
        short = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(xs)
        return short + self.scale(self.conv(self.sn(xs)))

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4f}"

    def var_after(self, var_in: float) -> float:
        """Expected variance of ``y`` given that of ``x`` (OTTT
        spiking_resnet_imagenet.py:378-387)."""
        base = 1.0 if not isinstance(self.shortcut, nn.Identity) else var_in
        return base + self.scale.alpha ** 2
