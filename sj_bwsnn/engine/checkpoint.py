"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes), so
``torch.load(..., weights_only=True)`` can read it and a file carrying arbitrary objects is refused:

``{'format': 1, 'recipe': dict, 'epoch': int, 'model': state_dict, 'optimizer': ...,
'scheduler': ..., 'metrics': list, 'rng': {...}, 'rng_ranks': [{...} per rank] or None,
'best_acc': float}``

Every file sj_bwsnn writes (checkpoints, ``metrics.json``, ``recipe.yaml``, exports, plots)
goes through :func:`atomic_write_bytes`, where any ``OSError`` becomes one :class:`UserError` line;
loading names what a file is when it is not a training checkpoint (a folder, an empty file, a bare
``state_dict``, an export); :func:`check_trained_with` refuses a recipe whose network differs
from the checkpoint's.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from timm.models import clean_state_dict

from ..errors import UserError
from .recipe import parse_override, recipe_from_dict, setting_differences

FORMAT = 1


def _cannot_write(path: Path, e: OSError) -> UserError:
    """One line for an ``OSError`` met while writing ``path``: what failed and what to do."""
    why = e.strerror or e.__class__.__name__
    if e.errno in (errno.ENOENT, errno.ENOTDIR) and not path.parent.is_dir():
        return UserError(f"cannot write {path}: folder {path.parent} does not exist; create it or "
                         f"choose another path")
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "free some space or write to another disk"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    else:
        fix = "choose a path in a folder you can write to"
    return UserError(f"cannot write {path} ({why}); {fix}")


def _temp_beside(path: Path) -> tuple[int, str]:
    """``mkstemp`` in ``path``'s folder; a folder at ``path`` or any ``OSError`` is one line."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name")
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from None


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder, fsync it, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a truncated file. Any
    ``OSError`` (missing or read-only folder, ``path`` a folder, disk full) becomes one
    :class:`UserError` line naming ``path``, and the temp file is removed: nothing half-written.
    The file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _cannot_write(path, e) from None
        raise


def check_writable(path: str | Path) -> None:
    """Fail now, not after minutes of work, where :func:`atomic_write_bytes` could not create
    ``path`` later: the same temp file beside it (removed at once), the same one-line error."""
    fd, tmp = _temp_beside(Path(path))
    os.close(fd)
    os.unlink(tmp)


@functools.cache
def _umask() -> int:
    """The process umask (read once: ``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically save ``state`` (see the module docstring) to ``path``."""
    atomic_write_bytes(Path(path), lambda f: torch.save({"format": FORMAT, **state}, f))


def _torch_load(path: Path, map_location: str | torch.device = "cpu"):
    """``torch.load(weights_only=True)`` of an existing file; every failure is one :class:`UserError`."""
    if path.is_dir():
        hint = next((f"{path / n}" for n in ("last.pt", "best.pt") if (path / n).is_file()), None)
        raise UserError(f"checkpoint {path} is a folder; give the checkpoint file"
                        + (f", e.g. {hint}" if hint else " (a run folder holds last.pt and best.pt)"))
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes: an interrupted copy?); copy it again "
                        f"or use another checkpoint of the run (last.pt, best.pt)")
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
    if isinstance(ckpt, dict) and ckpt.get("format") == "sj_bwsnn.export":
        raise UserError(f"{path} is an sj_bwsnn export (for deployment: sj_bwsnn.load_exported), "
                        f"not a training checkpoint; give the checkpoint it was exported from")
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise UserError(f"checkpoint {path} is a bare state_dict, not an sj_bwsnn checkpoint; "
                        f"wrap it as torch.save({{'model': state_dict}}, FILE)")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"checkpoint {path} is not an sj_bwsnn checkpoint (no 'model' entry); "
                        f"give a checkpoint written by `sj-bwsnn train` (OUT/last.pt or best.pt)")
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


def is_torch_file(path: Path) -> bool:
    """A ``torch.save`` file (zip archive or legacy pickle), whatever its suffix."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


# recipe keys that do not change what a trained network computes (the backward pass, the
# initialisation, the kernel): they may differ between training and evaluation
_NOT_THE_FORWARD = ("model.init_from", "model.detach_alpha", "neuron.surrogate", "neuron.alpha",
                    "neuron.detach_reset", "neuron.backend")


def check_trained_with(name: str, recipe, overrides: list[str], ckpt: dict, path: str) -> None:
    """Refuse ``recipe`` (read from ``name``) where its network (``T``, ``model.*``, ``neuron.*``)
    differs from the one checkpoint ``ckpt`` was trained with, unless the difference is asked for
    in ``overrides`` (``--set``): weights of the same shapes would otherwise load into another
    network without a word. One :class:`UserError` line naming the first differences."""
    if not isinstance(ckpt.get("recipe"), dict):
        return  # a bare checkpoint: load_model_state still checks every shape
    try:
        differ = setting_differences(recipe, recipe_from_dict(ckpt["recipe"]))
    except UserError:
        return  # written with other recipe keys: the shapes are still checked
    asked = [".".join(parse_override(t)[0]) for t in overrides]
    diff = [k for k in differ
            if (k == "T" or k.startswith(("model.", "neuron."))) and k not in _NOT_THE_FORWARD
            and not any(k == a or k.startswith(a + ".") or a.startswith(k + ".") for a in asked)]
    if diff:
        shown = "; ".join(f"{k}: {json.dumps(differ[k][0])} here, {json.dumps(differ[k][1])} in "
                          f"the checkpoint" for k in diff[:3])
        on_purpose = "" if "model.name" in diff else (
            f", or name the change with --set {diff[0]}={json.dumps(differ[diff[0]][0])} to evaluate "
            f"it on purpose")
        raise UserError(f"recipe {name} differs from the one {path} was trained with ({shown}); "
                        f"evaluate with that recipe (the run's recipe.yaml){on_purpose}")
