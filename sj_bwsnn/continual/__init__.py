"""Continual learning: a model learns tasks one after another, and forgetting is measured.

A recipe with a ``continual:`` section (``protocol: permuted | split``) makes ``sj-bwsnn train``
run the whole task sequence (:class:`~.runner.ContinualTrainer`): each task trained with the
recipe's method (``bptt``, ``ottt``, ``dsr``...), every task seen so far evaluated after each one,
``acc_matrix`` / ACC / BWT in ``metrics.json`` and ``continual.png`` (:mod:`.metrics`).
``continual.protect`` picks what guards old tasks (:mod:`.protect`): ``hlop`` (Hebbian learning
based orthogonal projection, :mod:`.hlop`), ``none`` (the forgetting baseline) or ``joint`` (all
tasks at once, the upper bound). Tasks come from :mod:`sj_bwsnn.data.continual`.

Place in the architecture: above ``engine`` (it drives the trainer through ``Trainer.build_data``
and ``Precision.grad_transforms``), below ``cli``.
"""

from .metrics import format_matrix, plot_heatmap, summarize
from .protect import PROTECTS, Protect, Stage, build_protect
from .runner import ContinualTrainer, plan

__all__ = ["ContinualTrainer", "PROTECTS", "Protect", "Stage", "build_protect", "format_matrix",
           "plan", "plot_heatmap", "summarize"]
