"""Plain feed-forward SNNs without shortcuts (fully connected and convolutional), registered with timm.

Every layer is ``W -> BN -> SN [-> AvgPool]`` and feeds only the next one, so a method that trains
each layer from a direct top-down signal (``train.method: opzo | dfa``,
:mod:`sj_bwsnn.engine.methods.opzo`) can cut the network between layers: the outputs of the
layers are :meth:`PlainSNN.feedback_points`. The OPZO paper (Xiao et al., ICLR 2026) evaluates a
fully connected net on N-MNIST and a 5-layer conv net on the other sets (secondary summary; the
paper's exact widths could not be read), so both shapes are offered; their sizes are our choice.

Layout (``binary=True``: 1-bit weights in every hidden layer, as in the core's blocks)::

    stem:   real W_0 -> BN -> SN                    (W_0 sees the raw input: kept real, untraced)
    layers: binary W_l -> BN -> SN [-> 2x2 AvgPool] (l = 1 .. L-1)
    head:   [global AvgPool ->] real Linear         (per step; ``forward`` averages over T)

``bw_snn_mlp``: ``W`` are linear layers on the flattened input ``C*H*W``; ``bw_snn_cnn``: 3x3 convs
(padding 1), a 2x2 average pool after the layers listed in ``pool_after`` (0 is the stem) and a
global average pool before the head.

Input: a static batch ``[N, C, H, W]`` (direct encoding: repeated over ``T`` steps) or event frames
``[T', N, C, H, W]`` (then ``T = T'``). ``forward`` gives the time-averaged logits ``[N, K]``,
``forward_seq`` the per-step logits ``[T, N, K]``; all modules run in SpikingJelly's multi-step mode.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from spikingjelly.activation_based import layer
from timm.models import register_model
from torch import nn

from ..errors import UserError
from ..layers import BinaryConv2d, BinaryLinear
from ..neuron import LIFNode
from .base import SpikingClassifier, entrypoint_kwargs

KINDS = ("mlp", "cnn")


def _layer(kind: str, binary: bool, in_ch: int, out_ch: int, scaling: str, detach_alpha: bool):
    """One weight layer: real or binary linear (``mlp``) / 3x3 conv (``cnn``), multi-step, no bias."""
    if kind == "mlp":
        if binary:
            return BinaryLinear(in_ch, out_ch, bias=False, step_mode="m", scaling=scaling,
                                detach_alpha=detach_alpha)
        return layer.Linear(in_ch, out_ch, bias=False, step_mode="m")
    if binary:
        return BinaryConv2d(in_ch, out_ch, 3, 1, 1, bias=False, step_mode="m", scaling=scaling,
                            detach_alpha=detach_alpha)
    return layer.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False, step_mode="m")


class PlainSNN(SpikingClassifier):
    """A chain of spiking layers without shortcuts (module docstring).

    :param kind: ``'mlp'`` (fully connected) or ``'cnn'`` (3x3 convs).
    :param widths: units (``mlp``) or channels (``cnn``) of the stem and each hidden layer.
    :param pool_after: ``cnn`` only: indices of the layers (0 = stem) followed by a 2x2 average pool.
    :param in_chans, input_size: input channels and image side (``mlp`` needs the side to size its
        first layer: ``in_chans * input_size**2`` inputs).
    :param T: time steps for static input.
    :param binary: 1-bit weights in the hidden layers (the stem and the head stay real).
    :param neuron, neuron_kwargs: spiking neuron class and its arguments (``step_mode`` is set here).
    :param scaling, detach_alpha: weight-binarizer options (:mod:`sj_bwsnn.layers.binarize`).
    """

    def __init__(self, kind: str = "mlp", widths: Sequence[int] = (800, 800),
                 pool_after: Sequence[int] = (), in_chans: int = 1, input_size: int = 28,
                 num_classes: int = 10, T: int = 4, binary: bool = True, neuron: type = LIFNode,
                 neuron_kwargs: dict[str, Any] | None = None, scaling: str = "channel",
                 detach_alpha: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if not widths:
            raise ValueError("widths must name at least one layer (the stem)")
        bad = [i for i in pool_after if not 0 <= i < len(widths)]
        if kind == "mlp" and pool_after or bad:
            raise ValueError(f"pool_after must list layer indices 0..{len(widths) - 1} of a cnn, "
                             f"got {tuple(pool_after)} for kind {kind!r}")
        self.kind, self.T, self.binary, self.num_classes = kind, int(T), bool(binary), num_classes
        self.in_chans, self.input_size = in_chans, input_size
        neuron_kwargs = dict(neuron_kwargs or {})
        neuron_kwargs.pop("step_mode", None)
        norm = layer.BatchNorm1d if kind == "mlp" else layer.BatchNorm2d
        in_ch = in_chans * input_size * input_size if kind == "mlp" else in_chans
        blocks = []
        for i, width in enumerate(widths):
            mods = [_layer(kind, binary and i > 0, in_ch, width, scaling, detach_alpha),
                    norm(width, step_mode="m"), neuron(step_mode="m", **neuron_kwargs)]
            if i in pool_after:
                mods.append(layer.AvgPool2d(2, 2, step_mode="m"))
            blocks.append(nn.Sequential(*mods))
            in_ch = width
        self.stem = blocks[0]
        self.layers = nn.Sequential(*blocks[1:])
        self.pool = layer.AdaptiveAvgPool2d(1, step_mode="m") if kind == "cnn" else nn.Identity()
        self.num_features = in_ch
        self.head = nn.Linear(in_ch, num_classes)

    def _sequence(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # static image: the same input at every step
            x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        elif x.dim() != 5:
            raise ValueError(f"expected [N, C, H, W] or [T, N, C, H, W] input, got {tuple(x.shape)}")
        if self.kind == "cnn":
            return x
        if x[0, 0].numel() != self.in_chans * self.input_size ** 2:
            raise UserError(f"bw_snn_mlp was built for {self.in_chans}x{self.input_size}x"
                            f"{self.input_size} inputs but gets {'x'.join(map(str, x.shape[2:]))}; "
                            f"set model.kwargs.input_size (and the data's input_size) to match")
        return x.flatten(2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, num_features]`` spike features of the last layer (pooled for ``cnn``)."""
        return self.pool(self.layers(self.stem(self._sequence(x)))).flatten(2)

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, N, num_classes]``."""
        return self.head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def feedback_points(self) -> list[nn.Module]:
        """The layers whose outputs a direct-feedback method cuts and perturbs: stem and layers."""
        return [self.stem, *self.layers]


def _create(kind: str, pretrained: bool, kwargs: dict, **defaults) -> PlainSNN:
    kwargs = entrypoint_kwargs(pretrained, kwargs)
    for key, value in defaults.items():
        kwargs.setdefault(key, value)
    return PlainSNN(kind, **kwargs)


@register_model
def bw_snn_mlp(pretrained: bool = False, **kwargs) -> PlainSNN:
    """Fully connected SNN: real stem, 1-bit hidden layers, 800-800 by default (our choice);
    ``input_size`` must match the data (28 by default)."""
    return _create("mlp", pretrained, kwargs, widths=(800, 800))


@register_model
def bw_snn_cnn(pretrained: bool = False, **kwargs) -> PlainSNN:
    """5-layer conv SNN (3x3, 128-256-256-512-512, 2x2 pools after layers 1, 2, 3; our choice):
    real stem, 1-bit hidden convs, global average pool, real head."""
    return _create("cnn", pretrained, kwargs, widths=(128, 256, 256, 512, 512), pool_after=(1, 2, 3))
