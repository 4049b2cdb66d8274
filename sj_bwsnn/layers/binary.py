"""1-bit weight layers that drop into SpikingJelly networks.

:class:`BinaryConv2d`, :class:`BinaryConv1d` and :class:`BinaryLinear` subclass SpikingJelly 2.0's
``layer.Conv2d`` / ``layer.Conv1d`` / ``layer.Linear``, so they take ``step_mode='s'|'m'`` and, in
``'m'``, a ``[T, N, ...]`` input that is flattened to ``[T*N, ...]`` for one op over all time steps. The weight is binarized once per
call (not once per time step) by the shared :class:`~sj_bwsnn.layers.binarize.WeightBinarizer`::

    y = conv(x, alpha * sign(w)) + b        (BinaryConv2d, BinaryConv1d)
    y = x @ (alpha * sign(w))^T + b         (BinaryLinear)

``binarized_weight()`` returns exactly the tensor the forward uses. The latent ``weight`` stays
real-valued and is what the optimizer updates. Bias (off by default in blocks, where BN follows)
is real-valued.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer

from .binarize import WeightBinarizer
from .shape import check_seq, check_seq_features


class BinaryLayer:
    """Base of every layer with 1-bit weights (``isinstance(m, BinaryLayer)`` finds them all): the
    binarizer and ``binarized_weight()``."""

    binarizer: WeightBinarizer

    def binarized_weight(self) -> torch.Tensor:
        """The binarized weight ``alpha * sign(w)`` used by ``forward`` (with the STE graph)."""
        return self.binarizer(self.weight)


class _BinaryConvNd(BinaryLayer):
    """What BinaryConv1d / BinaryConv2d share: the constructor (SpikingJelly's conv arguments,
    ``bias=False`` by default, plus the binarizer's) and the step-mode forward; a subclass names
    its SpikingJelly conv base and its ``'m'`` input rank and layout."""

    _seq_dims: int
    _seq_layout: str

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = False, padding_mode: str = "zeros",
                 step_mode: str = "s", scaling: str = "channel", detach_alpha: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, step_mode)
        self.binarizer = WeightBinarizer(scaling, detach_alpha)

    def _forward_op(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.binarized_weight(), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._forward_op(x)
        check_seq(x, f"{type(self).__name__} in step_mode='m'", self.in_channels,
                  self._seq_dims, self._seq_layout)
        return functional.seq_to_ann_forward(x, self._forward_op)


class BinaryConv2d(_BinaryConvNd, layer.Conv2d):
    """2-D convolution with 1-bit weights ``alpha * sign(w)``; SpikingJelly step modes.

    Same arguments as ``spikingjelly.activation_based.layer.Conv2d`` (default ``bias=False``), plus
    ``scaling`` (``'channel'|'tensor'|'none'``) and ``detach_alpha`` for the binarizer.
    Input ``[N, C, H, W]`` in ``'s'``, ``[T, N, C, H, W]`` in ``'m'``.
    """

    _seq_dims, _seq_layout = 5, "[T, N, C, H, W]"


class BinaryConv1d(_BinaryConvNd, layer.Conv1d):
    """1-D convolution with 1-bit weights (token MLPs of spiking Transformers such as SJ's
    Spikformer are 1x1 ``Conv1d``). Arguments as ``layer.Conv1d`` (default ``bias=False``) plus
    ``scaling`` and ``detach_alpha``. Input ``[N, C, L]`` in ``'s'``, ``[T, N, C, L]`` in ``'m'``.
    """

    _seq_dims, _seq_layout = 4, "[T, N, C, L]"


class BinaryConvTranspose2d(BinaryLayer, layer.ConvTranspose2d):
    """Transposed 2-D convolution with 1-bit weights (the feedback connection of IDE/SPIDE's
    AlexNet-F); SpikingJelly step modes. Arguments as ``layer.ConvTranspose2d`` (default
    ``bias=False``) plus ``scaling`` and ``detach_alpha``. The weight is ``[C_in, C_out, k, k]``, so
    ``scaling='channel'`` gives one ``alpha`` per *input* channel (the binarizer scales dim 0)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = False, dilation=1,
                 padding_mode: str = "zeros", step_mode: str = "s", scaling: str = "channel",
                 detach_alpha: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding,
                         groups, bias, dilation, padding_mode, step_mode)
        self.binarizer = WeightBinarizer(scaling, detach_alpha)

    def _forward_op(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.binarized_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._forward_op(x)
        check_seq(x, "BinaryConvTranspose2d in step_mode='m'", self.in_channels)
        return functional.seq_to_ann_forward(x, self._forward_op)


class BinaryLinear(BinaryLayer, layer.Linear):
    """Fully connected layer with 1-bit weights ``alpha * sign(w)``; SpikingJelly step modes.

    Same arguments as ``spikingjelly.activation_based.layer.Linear`` (default ``bias=True``), plus
    ``scaling`` and ``detach_alpha``. In ``'m'`` the input is ``[T, N, ..., in_features]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 step_mode: str = "s", scaling: str = "channel", detach_alpha: bool = True):
        super().__init__(in_features, out_features, bias, step_mode)
        self.binarizer = WeightBinarizer(scaling, detach_alpha)

    def _forward_op(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.binarized_weight(), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Linear works on any leading shape, so [T, N, ..., F] needs no flattening in 'm'.
        if self.step_mode == "m":
            check_seq_features(x, "BinaryLinear in step_mode='m'", self.in_features)
        return self._forward_op(x)
