"""Training objectives: what a batch's loss is.

An objective is called as ``objective(logits, y, x)``: ``logits`` are the time-averaged student
logits ``[N, K]``, ``y`` the labels, ``x`` the input batch (so a distillation objective can run its
teacher on the same input). :func:`build_objective` picks one from the recipe.
"""

from __future__ import annotations

import torch


class CrossEntropyObjective:
    """``(1 - lambda) * CE(logits, y) + lambda * MSE(logits, one_hot(y))`` with optional label
    smoothing in CE; ``lambda = mse_lambda`` (0: plain CE; SLTT's code uses 0.05). ``x`` is unused.

    Objectives are called as ``objective(logits [N, K], y [N], x)``: ``x`` lets a distillation
    objective run its teacher on the same input.
    """

    def __init__(self, label_smoothing: float = 0.0, mse_lambda: float = 0.0):
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.mse_lambda = float(mse_lambda)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None):
        ce = self.loss(logits.float(), y)
        if self.mse_lambda == 0.0:
            return ce
        one_hot = torch.nn.functional.one_hot(y, logits.shape[-1]).to(ce.dtype)
        mse = torch.nn.functional.mse_loss(logits.to(ce.dtype), one_hot)
        return (1.0 - self.mse_lambda) * ce + self.mse_lambda * mse


def build_objective(recipe) -> CrossEntropyObjective:
    """The recipe's training objective."""
    return CrossEntropyObjective(recipe.train.label_smoothing, recipe.train.mse_lambda)
