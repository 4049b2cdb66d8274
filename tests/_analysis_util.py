"""Shared by the analysis tests: a digits checkpoint with random but spiking weights."""

from __future__ import annotations

import torch

from sj_bwsnn.engine.checkpoint import save_checkpoint
from sj_bwsnn.engine.recipe import recipe_from_dict

RECIPE = {"T": 2, "data": {"name": "digits", "batch_size": 32},
          "model": {"name": "bw_resnet_tiny"}, "train": {"epochs": 1, "device": "cpu"}}


def make_checkpoint(path, recipe: dict = RECIPE, seed: int = 0):
    """Save ``{'recipe', 'model'}`` for a bw_resnet_tiny whose BN makes neurons fire."""
    from sj_bwsnn.data import build_loaders
    from sj_bwsnn.engine.trainer import build_model

    r = recipe_from_dict(recipe)
    _, _, info = build_loaders(r.data, r.seed)
    torch.manual_seed(seed)
    model = build_model(r, info)
    with torch.no_grad():  # random BN statistics and shifts, so that every layer spikes
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(0.0, 1.5)
    save_checkpoint(path, {"recipe": r.to_dict(), "model": model.state_dict(), "epoch": 0})
    return r, model


def make_foreign_checkpoint(path, tree: dict, seed: int = 0):
    """A checkpoint as another machine or an older version left it: its recipe ``tree`` stored as
    given (training rules unchecked, e.g. OTTT with a hard reset) and a model built without its
    data set (which need not be here)."""
    from sj_bwsnn.data import data_info
    from sj_bwsnn.engine.build import build_model

    r = recipe_from_dict(tree, network_only=True)
    torch.manual_seed(seed)
    model = build_model(r, data_info(r.data))
    save_checkpoint(path, {"recipe": r.to_dict(), "model": model.state_dict(), "epoch": 0})
    return r, model
