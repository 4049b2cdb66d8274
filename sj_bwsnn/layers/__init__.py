"""Binary-weight layers and multi-shortcut spiking blocks.

``from sj_bwsnn.layers import BinaryConv2d, BinaryLinear`` drops 1-bit weights into any
SpikingJelly network; both accept ``step_mode='s'|'m'``.
"""

from .binarize import SCALINGS, WeightBinarizer, binarize_weight, binary_sign
from .binary import BinaryConv1d, BinaryConv2d, BinaryConvTranspose2d, BinaryLayer, BinaryLinear
from .blocks import Downsample, MultiShortcutBasicBlock, SpikingConvUnit, make_conv

__all__ = [
    "SCALINGS", "WeightBinarizer", "binarize_weight", "binary_sign",
    "BinaryConv1d", "BinaryConv2d", "BinaryConvTranspose2d", "BinaryLayer", "BinaryLinear",
    "Downsample", "MultiShortcutBasicBlock", "SpikingConvUnit", "make_conv",
]
