"""Shape contracts: time first, ``[T, N, ...]``, checked once where data enters.

SpikingJelly's multi-step mode ('m') reads dimension 0 as time and dimension 1 as the batch. A
batch laid out ``[N, T, C, H, W]`` runs through most layers without an error (they flatten the
first two dimensions) and quietly treats samples as time steps and time steps as samples: the
neurons integrate across different images and the accuracy drops with no message. Each check here
costs a few integer comparisons and runs once per ``forward`` at a model's entry (and at the entry
of the public multi-step blocks and of the binary convs in ``step_mode='m'``), so a wrong layout
fails at once with one line saying what was expected, what was given and how to fix it.

What can be detected:

* a wrong rank (e.g. ``[N, C, H, W]`` handed to a multi-step block, or a single image without its
  batch dimension);
* a wrong channel count where a module knows its input channels (e.g. channels-last ``[N, H, W, C]``);
* at a model with a known ``T``: 5-D input whose dimension 1, not 0, equals ``T`` (and whose
  dimension 0 is neither ``T`` nor 1, the one-step input of step-wise training) looks like
  ``[N, T, ...]`` and is refused. Frames set the number of steps, so ``T'`` frames with
  ``T' != model.T`` are otherwise accepted; when their batch size happens to equal ``model.T``,
  set ``model.T = T'`` (the message says so). When ``N == T`` the two layouts have the same shape
  and cannot be told apart.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError


def _shape(x: torch.Tensor) -> str:
    return f"{x.dim()}-D shape {tuple(x.shape)}"


def check_seq(x: torch.Tensor, owner: str, channels: int | None = None, rank: int = 5,
              layout: str = "[T, N, C, H, W]") -> None:
    """Raise :class:`~sj_bwsnn.errors.ShapeError` unless ``x`` is a multi-step tensor of ``rank``
    dimensions, time first, with ``channels`` at dimension 2 (when given).

    :param owner: the module's name for the message, e.g. ``'SpikingConvUnit'``.
    :param layout: the expected layout as written in the message.
    """
    if isinstance(x, torch.fx.Proxy):
        return  # symbolic tracing (NIR export, fx passes): no concrete shape to check
    if x.dim() != rank:
        hint = ""
        if x.dim() == rank - 1:
            hint = (f"; it has no time dimension: add one with x.unsqueeze(0) (one step) or "
                    f"x.unsqueeze(0).repeat(T, {', '.join(['1'] * (rank - 1))}) (T steps)")
        raise ShapeError(f"{owner} expects a multi-step {rank}-D {layout} input (time first), "
                         f"got {_shape(x)}{hint}")
    if channels is not None and x.shape[2] != channels:
        hint = ""
        if x.shape[-1] == channels and rank == 5:
            hint = "; it looks channels-last [T, N, H, W, C]: pass x.permute(0, 1, 4, 2, 3)"
        raise ShapeError(f"{owner} expects {layout} with C={channels} at dimension 2, got "
                         f"{_shape(x)}{hint}")


def check_seq_features(x: torch.Tensor, owner: str, features: int) -> None:
    """Raise :class:`~sj_bwsnn.errors.ShapeError` unless ``x`` is a multi-step input of a linear
    layer: ``[T, N, ..., features]`` (time first, at least 3-D, ``features`` last)."""
    if isinstance(x, torch.fx.Proxy):
        return  # symbolic tracing (NIR export, fx passes): no concrete shape to check
    layout = f"[T, N, ..., {features}]"
    if x.dim() < 3:
        hint = ("; it has no time dimension: add one with x.unsqueeze(0) (one step)"
                if x.dim() == 2 else "")
        raise ShapeError(f"{owner} expects a multi-step {layout} input (time first), got "
                         f"{_shape(x)}{hint}")
    if x.shape[-1] != features:
        raise ShapeError(f"{owner} expects {layout} with {features} features last, got {_shape(x)}")


def check_model_input(x: torch.Tensor, owner: str, T: int, in_chans: int | None = None) -> None:
    """Raise :class:`~sj_bwsnn.errors.ShapeError` unless ``x`` is a static batch ``[N, C, H, W]``
    or time-first frames ``[T', N, C, H, W]`` (see the module docstring for what is detected).

    :param T: the model's time steps for static input (``model.T``).
    :param in_chans: the model's input channels, checked when given.
    """
    if isinstance(x, torch.fx.Proxy):
        return  # symbolic tracing (NIR export, fx passes): no concrete shape to check
    expected = f"[N, C, H, W] images or [T, N, C, H, W] frames (time first, T={T})"
    if x.dim() not in (4, 5):
        hint = "; a single image needs a batch dimension: x.unsqueeze(0)" if x.dim() == 3 else ""
        raise ShapeError(f"{owner} expects {expected}, got {_shape(x)}{hint}")
    if x.dim() == 5 and x.shape[0] not in (T, 1) and x.shape[1] == T:
        raise ShapeError(
            f"{owner} expects {expected}, got {_shape(x)}, which looks like [N, T, C, H, W] "
            f"(dimension 1 equals T={T}): pass x.transpose(0, 1); if dimension 0 really holds "
            f"{x.shape[0]} time steps, set model.T = {x.shape[0]}")
    c = 1 if x.dim() == 4 else 2
    if in_chans is not None and x.shape[c] != in_chans:
        hint = ""
        if x.shape[-1] == in_chans:
            perm = "x.permute(0, 3, 1, 2)" if x.dim() == 4 else "x.permute(0, 1, 4, 2, 3)"
            hint = f"; it looks channels-last: pass {perm}"
        layout = "[N, C, H, W]" if x.dim() == 4 else "[T, N, C, H, W]"
        raise ShapeError(f"{owner} expects {layout} with C={in_chans} at dimension {c}, got "
                         f"{_shape(x)}{hint}")
