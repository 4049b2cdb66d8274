"""sj_bwsnn: binary-weight spiking neural networks (SEI-BWSNN) on SpikingJelly 2.0 and timm.

``import sj_bwsnn`` registers the models with timm (``timm.create_model('bw_resnet18', T=2)``).
Deployment (``load_exported``, ``to_nir``) is imported on first use, so the import stays light.
"""

__version__ = "0.1.0"

from . import layers, models, neuron  # noqa: E402,F401  (models registers with timm)
from .layers import BinaryConv1d, BinaryConv2d, BinaryLinear  # noqa: E402
from .convert import binarize  # noqa: E402

_LAZY = {"load_exported": "deploy", "to_nir": "deploy"}  # name -> submodule, imported when used

__all__ = ["BinaryConv1d", "BinaryConv2d", "BinaryLinear", "binarize", "load_exported", "to_nir",
           "layers", "models", "neuron", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
