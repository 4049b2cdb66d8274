"""Training objectives: what a batch's loss is.

An objective is called as ``objective(logits, y, x)``: ``logits`` are student logits ``[N, K]``
(the time average, or one time step's), ``y`` the labels (``[N]`` class indices, or ``[N, K]``
soft targets after Mixup/CutMix), ``x`` the input batch (so a distillation objective can run its
teacher on the same input). :func:`build_objective` picks one from the recipe.

Where the loss sits in time (``train.loss_on``) is the method's business, not the objective's:
:func:`sequence_loss` turns per-step logits ``[T, N, K]`` into the loss for either placement, and
every method that holds all T steps' logits at once uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from ..errors import UserError


LOSS_ON = ("mean", "per_step")
MSE_TARGETS = ("one_hot", "ones")


def sequence_loss(objective, logits_seq: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                  loss_on: str) -> torch.Tensor:
    """The loss of per-step logits ``[T, N, K]`` for ``train.loss_on``::

        mean     : objective(mean_t logits[t], y, x)
        per_step : (1/T) sum_t objective(logits[t], y, x)     (SLTT's and OTTT's code)

    ``per_step`` with a distillation objective compares every step's logits with the teacher's
    (one teacher forward per batch).
    """
    if loss_on == "mean":
        return objective(logits_seq.mean(0), y, x)
    if loss_on != "per_step":
        raise UserError(f"train.loss_on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
    T = logits_seq.shape[0]
    return sum(objective(logits_seq[t], y, x) for t in range(T)) / T


class CrossEntropyObjective:
    """``(1 - lambda) * CE(logits, y) + lambda * MSE(logits, target)`` with optional label
    smoothing in CE; ``lambda = mse_lambda`` (0: plain CE; SLTT's and OTTT's code use 0.05).
    ``x`` is unused.

    ``mse_target``: ``'one_hot'`` (``one_hot(y)``, or the soft targets themselves after Mixup;
    OTTT's code, SLTT's with ``-mse_n_reg``) or ``'ones'`` (an all-ones target: SLTT's CIFAR runs,
    ``-loss_means 1.0``, qymeng94/SLTT train_SLTT.py:58-60, 336-342). ``y`` may hold class indices
    or probabilities (timm Mixup's soft targets, which already include label smoothing).
    """

    def __init__(self, label_smoothing: float = 0.0, mse_lambda: float = 0.0,
                 mse_target: str = "one_hot"):
        if mse_target not in MSE_TARGETS:
            raise UserError(f"train.mse_target must be one of {', '.join(MSE_TARGETS)}, "
                            f"got {mse_target!r}")
        self.label_smoothing = label_smoothing
        self.mse_lambda = float(mse_lambda)
        self.mse_target = mse_target

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None):
        logits = logits.float()
        smoothing = 0.0 if y.dim() == 2 else self.label_smoothing
        ce = F.cross_entropy(logits, y, label_smoothing=smoothing)
        if self.mse_lambda == 0.0:
            return ce
        if self.mse_target == "ones":
            target = torch.ones_like(logits)
        else:
            target = y.float() if y.dim() == 2 else F.one_hot(y, logits.shape[-1]).float()
        return (1.0 - self.mse_lambda) * ce + self.mse_lambda * F.mse_loss(logits, target)


class DistillationObjective:
    """ReActNet-style distribution loss mixed with cross-entropy.

    ``L = w * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)) + (1 - w) * CE(z_s, y)``

    with ``z_s`` the student logits it is given (time-averaged, or one step's under
    ``train.loss_on: per_step``) and ``z_t`` the frozen teacher's time-averaged logits on the
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
        zt = self.teacher_logits(x)  # its classes are checked when it is built (engine/distill.py)
        t = self.tau
        log_ps = F.log_softmax(logits.float() / t, dim=-1)
        log_pt = F.log_softmax(zt / t, dim=-1)
        kd = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * t * t
        if self.weight >= 1.0:
            return kd
        return self.weight * kd + (1.0 - self.weight) * self.ce(logits, y, x)


def build_objective(recipe, teacher: torch.nn.Module | None = None):
    """The recipe's training objective: CE, or KD + CE when a teacher is given."""
    ce = CrossEntropyObjective(recipe.train.label_smoothing, recipe.train.mse_lambda,
                               recipe.train.mse_target)
    if teacher is None:
        return ce
    return DistillationObjective(teacher, recipe.teacher.tau, recipe.teacher.weight, ce)
