"""1-bit packed export (``sj-bwsnn export``, the default ``--format packed``) and :func:`load_exported`.

The file is a ``torch.save`` of plain values and tensors only, so ``torch.load(weights_only=True)``
reads it and no code is unpickled::

    {'format': 'sj_bwsnn.export', 'version': 1,
     'recipe': dict,                        # the training recipe (rebuilds the architecture)
     'info': {'num_classes', 'in_chans', 'input_size'},
     'binary': {layer_name: {'bits': uint8[ceil(n / 8)],   # sign(w) >= 0, packed 8 per byte (MSB first)
                             'shape': [C_out, ...], 'alpha': float32[C_out]}},
     'tensors': {state_dict_key: tensor}}   # every other entry of the state dict, unchanged

A binary layer's deployed weight is ``w_b[c] = alpha[c] * (2 * bit - 1)``. ``alpha`` is read
back from the trained layer's own ``binarized_weight()`` (``|w_b[c, k]| = alpha[c]`` exactly), so
whatever ``scaling`` the layer used ('channel', 'tensor', 'none' -> alpha = 1) is stored per
channel. On load the weight is rebuilt exactly and the layer's binarizer is replaced by
:class:`Prebinarized`, so the reloaded model computes bit-identical outputs in eval mode.

BatchNorm is kept as it is, not folded: folding ``gamma / sigma`` into ``alpha`` and ``beta -
gamma * mu / sigma`` into a bias is exact in real arithmetic but changes float rounding, which can
flip a spike whose membrane potential sits at the threshold; bit-identical outputs matter more here.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import DataInfo
from ..engine.checkpoint import atomic_write_bytes
from ..engine.recipe import recipe_from_dict
from ..errors import UserError
from ..layers import BinaryLayer

FORMAT = "sj_bwsnn.export"
VERSION = 1


def pack_signs(w_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bits uint8[ceil(n/8)], alpha float32[C_out])`` of a binarized weight ``alpha * sign``.

    Raises ``ValueError`` if ``w_b`` is not of that form (a channel with two magnitudes).
    """
    flat = w_b.detach().float().reshape(w_b.shape[0], -1).cpu()
    alpha = flat[:, 0].abs().clone()
    if not torch.equal(flat.abs(), alpha[:, None].expand_as(flat)):
        raise ValueError("weight is not alpha * sign(w) per output channel")
    bits = np.packbits((flat >= 0).numpy().reshape(-1))
    return torch.from_numpy(bits), alpha


def unpack_signs(bits: torch.Tensor, alpha: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`pack_signs`: the float32 weight ``alpha[c] * (+-1)`` of ``shape``."""
    n = math.prod(shape)
    signs = np.unpackbits(bits.numpy(), count=n).astype(np.float32) * 2 - 1
    w = torch.from_numpy(signs).view(shape[0], -1) * alpha[:, None]
    return w.view(*shape)


class Prebinarized(nn.Module):
    """Stands in for a binary layer's ``WeightBinarizer`` in an exported model.

    The layer's ``weight`` already holds ``alpha * sign(w)`` (unpacked from the export), so the
    forward uses it as it is: ``forward(w) = w``. Inference only (no straight-through gradient).
    """

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def extra_repr(self) -> str:
        return "weights stored as alpha * sign (exported)"


def _binary_layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryLayer)]


@torch.no_grad()
def export_model(model: nn.Module, recipe: dict, info: DataInfo, out: str | Path) -> dict:
    """Write ``model`` to ``out`` in the export format (atomically); returns size figures.

    Returned: ``binary_bytes_fp32`` (binary layers' latent weights in fp32), ``binary_bytes_packed``
    (packed bits + alpha), ``ratio`` (their quotient) and ``file_bytes``.
    """
    binary, skip = {}, set()
    fp32 = packed = 0
    for name, m in _binary_layers(model):
        bits, alpha = pack_signs(m.binarized_weight())
        binary[name] = {"bits": bits, "shape": list(m.weight.shape), "alpha": alpha}
        skip.add(f"{name}.weight")
        fp32 += 4 * m.weight.numel()
        packed += bits.numel() + 4 * alpha.numel()
    tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in skip}
    payload = {"format": FORMAT, "version": VERSION, "recipe": recipe,
               "info": {"num_classes": info.num_classes, "in_chans": info.in_chans,
                        "input_size": list(info.input_size)},
               "binary": binary, "tensors": tensors}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_bytes(Path(out), lambda f: f.write(data))
    return {"binary_layers": len(binary), "binary_bytes_fp32": fp32, "binary_bytes_packed": packed,
            "ratio": fp32 / packed if packed else float("nan"), "file_bytes": len(data)}


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild a model from an export file (no code unpickled); returned in eval mode on the CPU.

    Binary layers get their exact ``alpha * sign`` weight and a :class:`Prebinarized` binarizer;
    every other tensor is loaded as stored.
    """
    from ..engine.build import build_model

    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported model not found: {path}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refusals, truncation, not a torch file
        raise UserError(f"{path} is not a readable sj_bwsnn export ({e.__class__.__name__}); "
                        f"create one with `sj-bwsnn export CHECKPOINT --out FILE`") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise UserError(f"{path} is not an sj_bwsnn export (a training checkpoint? "
                        f"convert it with `sj-bwsnn export {path} --out FILE`)")
    if d.get("version") != VERSION:
        raise UserError(f"{path} has export version {d.get('version')}; this sj_bwsnn reads "
                        f"version {VERSION}")
    info = d["info"]
    model = build_model(recipe_from_dict(d["recipe"], network_only=True),
                        DataInfo(info["num_classes"], info["in_chans"], tuple(info["input_size"])))
    state = dict(d["tensors"])
    layers = dict(_binary_layers(model))
    if set(layers) != set(d["binary"]):
        raise UserError(f"{path}: binary layers do not match the recipe's model "
                        f"({sorted(set(layers) ^ set(d['binary']))[:3]})")
    for name, entry in d["binary"].items():
        state[f"{name}.weight"] = unpack_signs(entry["bits"], entry["alpha"], entry["shape"])
        layers[name].binarizer = Prebinarized()
    model.load_state_dict(state)
    return model.eval()
