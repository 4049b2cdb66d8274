"""Model, data and weights for the analysis commands, from a recipe or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import DataInfo, build_loaders, to_model_input
from ..engine.checkpoint import load_checkpoint, load_model_state
from ..engine.recipe import Recipe, recipe_from_dict
from ..engine.build import build_model
from ..engine.trainer import seed_everything
from ..errors import UserError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class Source:
    """A built model (eval mode, CPU) with its recipe, data description and test loader."""

    recipe: Recipe
    model: torch.nn.Module
    info: DataInfo
    test_loader: torch.utils.data.DataLoader


def is_checkpoint_path(path: str | Path) -> bool:
    """True for a file whose suffix is a checkpoint's (``.pt``, ``.pth``, ``.ckpt``)."""
    return Path(path).suffix in CHECKPOINT_SUFFIXES


def build_source(recipe: Recipe, state: dict | None = None, path: str | Path = "") -> Source:
    """Build the recipe's model (seeded) and loaders; load ``state`` (a state dict) if given."""
    seed_everything(recipe.seed)
    _, test_loader, info = build_loaders(recipe.data, recipe.seed, recipe.T)
    model = build_model(recipe, info)
    if state is not None:
        load_model_state(model, state, path)
    model.eval()
    return Source(recipe, model, info, test_loader)


def source_from_checkpoint(path: str | Path) -> Source:
    """The model of an sj_bwsnn training checkpoint, rebuilt from the recipe stored in it."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("recipe"), dict):  # never rebuild on default settings silently
        raise UserError(f"checkpoint {path} holds no recipe to rebuild its model from (not written "
                        f"by `sj-bwsnn train`?); give a run's last.pt or best.pt")
    try:
        recipe = recipe_from_dict(ckpt["recipe"])
    except UserError as e:  # e.g. written by a version with other recipe keys
        raise UserError(f"the recipe stored in {path} does not load here (written by another "
                        f"sj_bwsnn version?): {e}") from None
    return build_source(recipe, ckpt["model"], path)


def sample_batches(src: Source, n_batches: int | None):
    """The model inputs of the first ``n_batches`` test batches (all when None); event frames
    come time-first ``[T, N, ...]``, as the trainer feeds them."""
    for i, (x, _) in enumerate(src.test_loader):
        if n_batches is not None and i >= n_batches:
            return
        yield to_model_input(x, src.info)
