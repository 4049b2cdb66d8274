"""Building a run's parts from a recipe: device, model, parameter groups, mixup, seeds (shared by
the trainer, the KD teacher and the analysis commands)."""

from __future__ import annotations

import random

import numpy as np
import timm
import torch

from ..errors import UserError, closest
from ..layers import BinaryLayer
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


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def param_groups(model: torch.nn.Module, weight_decay: float, binary_weight_decay: float):
    """Three groups: latent binary weights, other weights, and biases/norms (no decay)."""
    binary_ids = {id(m.weight) for m in model.modules() if isinstance(m, BinaryLayer)}
    groups = {"binary": [], "decay": [], "no_decay": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = "binary" if id(p) in binary_ids else ("no_decay" if p.ndim <= 1 else "decay")
        groups[key].append(p)
    decay = {"binary": binary_weight_decay, "decay": weight_decay, "no_decay": 0.0}
    return [{"params": ps, "weight_decay": decay[k]} for k, ps in groups.items() if ps]


def _build_mixup(recipe: Recipe, num_classes: int):
    d = recipe.data
    if d.mixup <= 0 and d.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=d.mixup, cutmix_alpha=d.cutmix, prob=d.mixup_prob,
                 switch_prob=d.mixup_switch_prob, label_smoothing=recipe.train.label_smoothing,
                 num_classes=num_classes)
