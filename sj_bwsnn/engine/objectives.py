"""Training objectives: what a batch's loss is.

An objective is called as ``objective(logits, y, x)``: ``logits`` are the time-averaged student
logits ``[N, K]``, ``y`` the labels (``[N]`` class indices, or ``[N, K]`` soft targets after
Mixup/CutMix), ``x`` the input batch (so a distillation objective can run its teacher on the same
input). :func:`build_objective` picks one from the recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from ..errors import UserError


class CrossEntropyObjective:
    """``(1 - lambda) * CE(logits, y) + lambda * MSE(logits, one_hot(y))`` with optional label
    smoothing in CE; ``lambda = mse_lambda`` (0: plain CE; SLTT's code uses 0.05). ``x`` is unused.

    ``y`` may hold class indices or probabilities (timm Mixup's soft targets, which already
    include label smoothing).
    """

    def __init__(self, label_smoothing: float = 0.0, mse_lambda: float = 0.0):
        self.label_smoothing = label_smoothing
        self.mse_lambda = float(mse_lambda)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None):
        logits = logits.float()
        smoothing = 0.0 if y.dim() == 2 else self.label_smoothing
        ce = F.cross_entropy(logits, y, label_smoothing=smoothing)
        if self.mse_lambda == 0.0:
            return ce
        target = y.float() if y.dim() == 2 else F.one_hot(y, logits.shape[-1]).float()
        return (1.0 - self.mse_lambda) * ce + self.mse_lambda * F.mse_loss(logits, target)


class DistillationObjective:
    """ReActNet-style distribution loss mixed with cross-entropy.

    ``L = w * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)) + (1 - w) * CE(z_s, y)``

    with ``z_s`` the time-averaged student logits and ``z_t`` the frozen teacher's logits on the
    same ``x`` (KL averaged over the batch). The teacher runs once per batch: its logits are
    cached for the last ``x`` seen (by identity), since online methods call the objective once per
    time step with the same batch. Its neuron states are reset after each forward.
    """

    def __init__(self, teacher: torch.nn.Module, tau: float, weight: float,
                 ce: CrossEntropyObjective):
        self.teacher, self.tau, self.weight, self.ce = teacher, tau, weight, ce
        self._x: torch.Tensor | None = None
        self._zt: torch.Tensor | None = None
        self.teacher_calls = 0

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self._x is not x:
            self._zt = self.teacher(x).float()
            functional.reset_net(self.teacher)
            self._x = x
            self.teacher_calls += 1
        return self._zt

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor):
        zt = self.teacher_logits(x)
        if zt.shape[-1] != logits.shape[-1]:
            raise UserError(f"teacher gives {zt.shape[-1]} classes but the student "
                            f"{logits.shape[-1]}; distil from a teacher with the same classes")
        t = self.tau
        log_ps = F.log_softmax(logits.float() / t, dim=-1)
        log_pt = F.log_softmax(zt / t, dim=-1)
        kd = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * t * t
        if self.weight >= 1.0:
            return kd
        return self.weight * kd + (1.0 - self.weight) * self.ce(logits, y, x)


def build_objective(recipe, teacher: torch.nn.Module | None = None):
    """The recipe's training objective: CE, or KD + CE when a teacher is given."""
    ce = CrossEntropyObjective(recipe.train.label_smoothing, recipe.train.mse_lambda)
    if teacher is None:
        return ce
    return DistillationObjective(teacher, recipe.teacher.tau, recipe.teacher.weight, ce)
