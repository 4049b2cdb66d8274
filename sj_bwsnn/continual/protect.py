"""Continual-learning methods (``continual.protect``): what happens around each task's training.

The runner (:class:`~sj_bwsnn.continual.runner.ContinualTrainer`) trains stage after stage with the
ordinary :class:`~sj_bwsnn.engine.trainer.Trainer` machinery and calls its method at fixed points:

============================== =================================================================
``attach(run)``                once, after the model, training method and optimizer exist (``run``
                               is the ContinualTrainer: ``run.model``, ``run.method``,
                               ``run.recipe``, ``run.epoch``, ``run.device``...)
``begin_stage(stage)``         before a stage trains (``stage.kind``: ``task`` | ``replay`` |
                               ``joint``; ``stage.task``: its task index)
``grad_transform(optimizer)``  in every optimizer step, after backward and before the update
                               (:class:`~sj_bwsnn.engine.precision.Precision`'s
                               ``grad_transforms``): may read and rewrite ``p.grad``
``batch_reset()``              after each batch, when the network's state is reset
``end_stage(stage)``           after a stage's last epoch, before the tasks are evaluated
``state_dict()`` / ``load_state_dict()`` its own state in the checkpoint (tensors and plain
                               values), so ``--resume`` continues exactly
============================== =================================================================

``joint = True`` makes the runner train every task at once, in one stage (the upper bound).
A new method (EWC, SI, ...) is one class here or in its own module, added to :data:`PROTECTS`; an
EWC, for instance, would estimate the Fisher information in ``end_stage`` and add
``lambda * F * (theta - theta*)`` to the gradients in ``grad_transform``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError, closest


@dataclass(frozen=True)
class Stage:
    """One training stage of a continual run: learning ``task`` (``kind='task'``), replaying the
    memory of tasks ``0..task`` (``'replay'``) or all tasks at once (``'joint'``)."""

    kind: str
    task: int


class Protect:
    """No protection: each task is trained as an ordinary run on the previous task's weights (the
    baseline that forgets). Base class of every method."""

    name = "none"
    joint = False

    def __init__(self, recipe):
        self.recipe = recipe

    def attach(self, run) -> None:
        pass

    def begin_stage(self, stage: Stage) -> None:
        pass

    def grad_transform(self, optimizer) -> None:
        pass

    def batch_reset(self) -> None:
        pass

    def end_stage(self, stage: Stage) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> str:
        """One line for the run's header."""
        return self.name


class Joint(Protect):
    """All tasks' training data at once, for ``epochs_per_task`` epochs: the multitask upper bound
    a continual method is measured against (one row in the accuracy matrix, no BWT)."""

    name = "joint"
    joint = True


def _hlop():
    from .hlop import HLOP

    return HLOP


PROTECTS = {"none": lambda: Protect, "joint": lambda: Joint, "hlop": _hlop}


def build_protect(recipe) -> Protect:
    """The method named by ``continual.protect``."""
    name = recipe.continual.protect
    if name not in PROTECTS:
        raise UserError(f"continual.protect: unknown method {name!r}{closest(name, PROTECTS)}; "
                        f"choose one of {', '.join(PROTECTS)}")
    return PROTECTS[name]()(recipe)
