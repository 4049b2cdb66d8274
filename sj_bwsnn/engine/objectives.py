"""Training objectives: what a batch's loss is.

An objective is called as ``objective(logits, y, x)``: ``logits`` are the time-averaged student
logits ``[N, K]``, ``y`` the labels, ``x`` the input batch (so a distillation objective can run its
teacher on the same input). :func:`build_objective` picks one from the recipe.
"""

from __future__ import annotations

import torch


class CrossEntropyObjective:
    """``CE(mean_t logits_t, y)`` with optional label smoothing; ``x`` is unused here.

    Objectives are called as ``objective(logits [N, K], y [N], x)``: ``x`` lets a distillation
    objective run its teacher on the same input.
    """

    def __init__(self, label_smoothing: float = 0.0):
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None):
        return self.loss(logits.float(), y)


def build_objective(recipe) -> CrossEntropyObjective:
    """The recipe's training objective."""
    return CrossEntropyObjective(recipe.train.label_smoothing)
