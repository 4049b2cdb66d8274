"""Building a run's model and device from a recipe (shared by the trainer and the KD teacher)."""

from __future__ import annotations

import timm
import torch

from ..errors import UserError, closest
from ..neuron import neuron_kwargs_from_config
from .recipe import Recipe


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is {name!r} but CUDA is not available; use auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None


def build_model(recipe: Recipe, info) -> torch.nn.Module:
    """The recipe's model through ``timm.create_model`` with neuron, T, classes and channels."""
    import sj_bwsnn.models  # noqa: F401  (registers our models with timm)

    neuron, neuron_kwargs = neuron_kwargs_from_config(recipe.neuron)
    name = recipe.model.name
    if not timm.is_model(name):
        ours = timm.list_models("bw_*") + timm.list_models("fsnn_*")
        raise UserError(f"model.name: unknown model {name!r}{closest(name, ours)}; "
                        f"sj_bwsnn models: {', '.join(ours)}")
    kwargs = dict(num_classes=info.num_classes, in_chans=info.in_chans, T=recipe.T,
                  binary=recipe.model.binary, neuron=neuron, neuron_kwargs=neuron_kwargs,
                  scaling=recipe.model.scaling, detach_alpha=recipe.model.detach_alpha)
    kwargs.update(recipe.model.kwargs)
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as e:
        raise UserError(f"model.kwargs: {name} does not accept these arguments ({e})") from None


def classifier_out(model: torch.nn.Module, state: dict) -> tuple[str, int] | None:
    """``(weight name, classes)`` of ``model``'s classifier as stored in ``state``, if found."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        head = linears[-1] if linears else None
    for name, p in model.named_parameters():
        if head is not None and p is getattr(head, "weight", None) and name in state:
            return name, int(state[name].shape[0])
    return None
