"""The 2-task toy behind ``tests/test_continual.py``, shared with ``bench/continual.py --toy``
(which measures it over many seeds so the test's bars sit well below the worst seed)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import torch

from sj_bwsnn.engine.recipe import recipe_from_dict

# two permuted-digits tasks on a small spiking MLP trained with DSR (our choice of sizes: a few
# seconds on one core)
TOY = {
    "T": 2,
    "data": {"name": "digits", "batch_size": 64},
    "model": {"name": "spiking_mlp", "binary": False,
              "kwargs": {"img_size": 16, "hidden": [64, 64]}},
    "neuron": {"preset": "dsr_lif"},
    "optim": {"name": "momentum", "lr": 0.2, "momentum": 0.0, "sched": "none"},
    "train": {"method": "dsr", "plot": False},
    "continual": {"protocol": "permuted", "tasks": 2, "epochs_per_task": 8, "image_size": 16,
                  "hlop": {"neurons": [[40, 40, 40], 20], "lr": [0.01],
                           "proj_type": "weight"}},
}


def toy_run(protect: str, seed: int = 0) -> dict:
    """Summary (``acc_matrix``, ``acc``, ``bwt``) of the toy under ``protect``."""
    from sj_bwsnn.continual import ContinualTrainer

    tree = {**TOY, "seed": seed, "continual": {**TOY["continual"], "protect": protect}}
    recipe = recipe_from_dict(tree)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
            return ContinualTrainer(recipe, Path(out)).run()
    finally:
        torch.set_num_threads(threads)
