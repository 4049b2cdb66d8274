"""Binary-weight layers and multi-shortcut spiking blocks.

``from sj_bwsnn.layers import BinaryConv2d, BinaryLinear`` drops 1-bit weights into any
SpikingJelly network; both accept ``step_mode='s'|'m'``. Multi-step modules take time-first
``[T, N, ...]`` input and check it on entry (:mod:`sj_bwsnn.layers.shape`).
"""

from .binarize import SCALINGS, WeightBinarizer, binarize_weight, binary_sign
from .binary import BinaryConv1d, BinaryConv2d, BinaryConvTranspose2d, BinaryLayer, BinaryLinear
from .blocks import Downsample, MultiShortcutBasicBlock, SpikingConvUnit, make_conv
from .shape import check_model_input, check_seq

__all__ = [
    "SCALINGS", "WeightBinarizer", "binarize_weight", "binary_sign",
    "BinaryConv1d", "BinaryConv2d", "BinaryConvTranspose2d", "BinaryLayer", "BinaryLinear",
    "Downsample", "MultiShortcutBasicBlock", "SpikingConvUnit", "make_conv",
    "check_model_input", "check_seq",
]
