"""sj_bwsnn: binary-weight spiking neural networks (SEI-BWSNN) on SpikingJelly 2.0 and timm.

``import sj_bwsnn`` registers the models with timm (``timm.create_model('bw_resnet18', T=2)``).
"""

__version__ = "0.1.0"

from . import layers, models, neuron  # noqa: E402,F401  (models registers with timm)
from .layers import BinaryConv1d, BinaryConv2d, BinaryLinear  # noqa: E402
from .deploy import load_exported, to_nir  # noqa: E402
from .convert import binarize  # noqa: E402

__all__ = ["BinaryConv1d", "BinaryConv2d", "BinaryLinear", "binarize", "load_exported", "to_nir", "layers", "models", "neuron",
           "__version__"]
