"""Knowledge-distillation teachers and two-stage initialisation.

Teacher (recipe section ``teacher``): either a model trained by another sj_bwsnn recipe (its
checkpoint carries the recipe, so ``teacher.model`` may stay null; ``teacher.T`` overrides its
time steps on static input), or any timm / ``torchvision.NAME`` architecture (``teacher.model``,
``teacher.kwargs``) loaded from a local state_dict file. The teacher is put in eval mode with
``requires_grad=False``; it must predict the student's classes, checked once here when it is
built (it is built for the student's class count, so its weights must have that shape; the loss
does not check again). A non-spiking teacher given
event frames ``[T, N, C, H, W]`` sees their time average.

Two-stage training (ReActNet): stage 1 trains real weights (``model.binary: false``), stage 2
sets ``model.init_from`` to stage 1's checkpoint: the latent weights of the binary convs start
from the real weights (both twins share parameter names).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .build import build_model, classifier_out
from .checkpoint import load_model_state, load_weights_file
from .recipe import Recipe, recipe_from_dict


class FrameMean(nn.Module):
    """Feed a static network the time average of ``[T, N, C, H, W]`` frames."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mean(0) if x.dim() == 5 else x)


def _external_model(name: str, num_classes: int, in_chans: int, kwargs: dict) -> nn.Module:
    try:
        if name.startswith("torchvision."):
            import torchvision

            return torchvision.models.get_model(name.split(".", 1)[1], num_classes=num_classes,
                                                **kwargs)
        import timm

        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"teacher.model: cannot build {name!r} ({e})") from None


def _check_classes(model: nn.Module, state: dict, num_classes: int, path) -> None:
    found = classifier_out(model, state)
    if found and found[1] != num_classes:
        raise UserError(f"teacher {path} predicts {found[1]} classes but the student's data has "
                        f"{num_classes}; distil from a teacher trained on the same classes")


def _require(path: Path, key: str) -> None:
    if not path.is_file():
        raise UserError(f"{key}: checkpoint not found: {path} (train the full-precision recipe "
                        f"first, e.g. `sj-bwsnn train RECIPE --out {path.parent}`)")


def build_teacher(recipe: Recipe, info, device: torch.device,
                  memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module | None:
    """The frozen teacher for ``recipe.teacher`` (None when ``teacher.checkpoint`` is null), its
    weights in ``memory_format`` (the student's: ``train.channels_last``)."""
    cfg = recipe.teacher
    if not cfg.checkpoint:
        return None
    path = Path(cfg.checkpoint).expanduser()
    _require(path, "teacher.checkpoint")
    state, saved = load_weights_file(path)
    if saved is not None:
        trecipe = recipe_from_dict(saved)
        if cfg.model and cfg.model != trecipe.model.name:
            raise UserError(f"teacher.model is {cfg.model!r} but {path} holds a "
                            f"{trecipe.model.name}; leave teacher.model null for sj_bwsnn "
                            f"checkpoints")
        if info.frames:  # frames set T (teacher.T acts on static input only); the model's T
            trecipe = dataclasses.replace(trecipe, T=recipe.T)  # must match them (shape check)
        elif cfg.T:
            trecipe = dataclasses.replace(trecipe, T=cfg.T)
        model = build_model(trecipe, info)
    else:
        if not cfg.model:
            raise UserError(f"teacher.model is required: {path} is a plain state_dict without "
                            f"a recipe (name its timm or torchvision.NAME architecture)")
        model = _external_model(cfg.model, info.num_classes, info.in_chans, cfg.kwargs)
    _check_classes(model, state, info.num_classes, path)
    load_model_state(model, state, path)
    if saved is None and info.frames:
        model = FrameMean(model)
    return model.to(device, memory_format=memory_format).eval().requires_grad_(False)


def init_from_checkpoint(model: nn.Module, path: str) -> None:
    """Load ``path``'s weights into ``model`` (stage 2 of the two-stage schedule)."""
    _require(Path(path).expanduser(), "model.init_from")
    state, _ = load_weights_file(Path(path).expanduser())
    load_model_state(model, state, path)
