"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes), so
``torch.load(..., weights_only=True)`` can read it and a file carrying arbitrary objects is refused:

``{'format': 1, 'recipe': dict, 'epoch': int, 'model': state_dict, 'optimizer': ...,
'scheduler': ..., 'metrics': list, 'rng': {...}, 'rng_ranks': [{...} per rank] or None,
'best_acc': float}``
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from timm.models import clean_state_dict

from ..errors import UserError

FORMAT = 1


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder, fsync it, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a truncated file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically save ``state`` (see the module docstring) to ``path``."""
    atomic_write_bytes(Path(path), lambda f: torch.save({"format": FORMAT, **state}, f))


def _torch_load(path: Path, map_location: str | torch.device = "cpu"):
    """``torch.load(weights_only=True)`` of an existing file; every failure is one :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported object"
        raise UserError(f"checkpoint {path} holds objects other than tensors and plain values "
                        f"and is refused (weights_only=True): {first}") from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} is truncated or not a PyTorch checkpoint "
                        f"({e.__class__.__name__})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; every failure is one :class:`UserError` line."""
    path = Path(path)
    ckpt = _torch_load(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"checkpoint {path} is not an sj_bwsnn checkpoint (no 'model' entry)")
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``load_state_dict`` that names the disagreeing layers in one line instead of a traceback."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        parts = []
        if shape:
            parts.append("shape differs for " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape[:3]))
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        raise UserError(f"checkpoint {path} does not fit this model (another architecture?): "
                        + "; ".join(parts))
    model.load_state_dict(state)


def load_weights_file(path: str | Path) -> tuple[dict, dict | None]:
    """``(state_dict, recipe or None)`` from an sj_bwsnn checkpoint or a plain weights file.

    Accepts our checkpoints (``model`` + ``recipe``), timm training checkpoints (``state_dict``)
    and bare ``state_dict`` files (timm/torchvision downloads); a DDP ``module.`` prefix is
    dropped. Read with ``weights_only=True``; failures are one :class:`UserError` line.
    """
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {path} is not a state_dict or checkpoint mapping")
    recipe = obj.get("recipe") if isinstance(obj.get("recipe"), dict) else None
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {path} holds no state_dict (expected tensors by name)")
    return clean_state_dict(obj), recipe  # timm's: strips DDP's module. and torch.compile's _orig_mod.
