"""Model, data and weights for the analysis and export commands, from a recipe or a checkpoint.

``summary`` and ``export`` need the model and one input of the right shape, not the data set:
with ``need_data=False`` the model is built from :func:`~sj_bwsnn.data.data_info` (no file read)
and the test loader is used only where the data set is on disk (never downloaded); otherwise
:func:`example_batch` makes a synthetic input and says so. ``energy`` streams the test set and
needs it (``need_data=True``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import DataInfo, build_loaders, data_info, to_model_input
from ..engine.build import build_model, classifier_out
from ..engine.checkpoint import load_checkpoint, load_model_state
from ..engine.recipe import Recipe, recipe_from_dict
from ..engine.build import seed_everything
from ..errors import UserError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
SYNTHETIC_BATCH = 16  # samples in a synthetic example batch


@dataclass
class Source:
    """A built model (eval mode, CPU) with its recipe, data description and test loader (None
    when the data set is not here: ``no_data`` then holds the data set's own one-line reason)."""

    recipe: Recipe
    model: torch.nn.Module
    info: DataInfo
    test_loader: torch.utils.data.DataLoader | None
    no_data: str = ""


def is_checkpoint_path(path: str | Path) -> bool:
    """True for a file whose suffix is a checkpoint's (``.pt``, ``.pth``, ``.ckpt``)."""
    return Path(path).suffix in CHECKPOINT_SUFFIXES


def build_source(recipe: Recipe, state: dict | None = None, path: str | Path = "",
                 need_data: bool = True) -> Source:
    """Build the recipe's model (seeded) and test loader; load ``state`` (a state dict) if given.

    ``need_data=False``: a data set that is not on disk is no error (the loader is None) and the
    model's classes come from ``state``'s classifier where it disagrees with :func:`data_info`
    (an ImageNet subset)."""
    seed_everything(recipe.seed)
    loader, no_data = None, ""
    if need_data:
        _, loader, info = build_loaders(recipe.data, recipe.seed, recipe.T)
    else:
        info = data_info(recipe.data)
        try:  # read the test set where it is here; never download for an analysis
            _, loader, info = build_loaders(dataclasses.replace(recipe.data, download=False),
                                            recipe.seed, recipe.T)
        except UserError as e:
            no_data = str(e)
    model = build_model(recipe, info)
    found = classifier_out(model, state) if state is not None and loader is None else None
    if found and found[1] != info.num_classes:
        info = dataclasses.replace(info, num_classes=found[1])
        model = build_model(recipe, info)
    if state is not None:
        load_model_state(model, state, path)
    model.eval()
    return Source(recipe, model, info, loader, no_data)


def source_from_checkpoint(path: str | Path, need_data: bool = True) -> Source:
    """The model of an sj_bwsnn training checkpoint, rebuilt from the recipe stored in it."""
    recipe, ckpt = recipe_from_checkpoint(path)
    return build_source(recipe, ckpt["model"], path, need_data)


def recipe_from_checkpoint(path: str | Path) -> tuple[Recipe, dict]:
    """``(recipe, checkpoint)``: the recipe stored in a training checkpoint, validated only as far
    as building the network needs (training rules may have changed since it was trained)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("recipe"), dict):  # never rebuild on default settings silently
        raise UserError(f"checkpoint {path} holds no recipe to rebuild its model from (not written "
                        f"by `sj-bwsnn train`?); give a run's last.pt or best.pt")
    try:
        recipe = recipe_from_dict(ckpt["recipe"], network_only=True)
    except UserError as e:  # e.g. written by a version with other recipe keys
        raise UserError(f"the recipe stored in {path} does not load here (written by another "
                        f"sj_bwsnn version?): {e}") from None
    return recipe, ckpt


def sample_batches(src: Source, n_batches: int | None):
    """The model inputs of the first ``n_batches`` test batches (all when None); event frames
    come time-first ``[T, N, ...]``, as the trainer feeds them. Needs the test set."""
    if src.test_loader is None:
        raise UserError(src.no_data or "no test data")
    for i, (x, _) in enumerate(src.test_loader):
        if n_batches is not None and i >= n_batches:
            return
        yield to_model_input(x, src.info)


def example_batch(src: Source) -> tuple[torch.Tensor, str]:
    """``(x, what)``: the first test batch, or, without the data set, a synthetic batch of
    :data:`SYNTHETIC_BATCH` samples of the model's input shape (standard normal values, like
    normalised images; event frames uniform in [0, 1)), seeded by the recipe. ``what`` names it
    for the command's output: ``'test inputs'`` or ``'synthetic inputs (no test set here: ...)'``."""
    if src.test_loader is not None:
        return next(sample_batches(src, 1)), "test inputs"
    info, T = src.info, src.recipe.T
    g = torch.Generator().manual_seed(src.recipe.seed)
    shape = (SYNTHETIC_BATCH, info.in_chans, *info.input_size)
    x = torch.rand((T, *shape), generator=g) if info.frames else torch.randn(shape, generator=g)
    return x, f"synthetic inputs (no test set here: {src.no_data})"
