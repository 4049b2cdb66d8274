"""What every training method shares: where its loss sits in time (``train.loss_on``).

A method declares its default placement and the placements it can compute; its constructor takes
``loss_on`` (``None``: the default) and calls :meth:`LossPlacement.set_loss_on`, which refuses an
impossible combination with one line. A method holding the logits of all T steps at once turns
them into the loss with :func:`sj_bwsnn.engine.objectives.sequence_loss`; a step-wise method
calls the objective on each step's logits and divides by T (the ``per_step`` placement).
"""

from __future__ import annotations

from ...errors import UserError
from ..objectives import LOSS_ON

STEPWISE_MEAN_WHY = ("it runs backward at each step, before the later steps' logits (and so their "
                     "mean) exist; use loss_on: per_step, or sltt_fused (the SLTT gradient in one "
                     "multi-step pass) or bptt for a loss on the mean")


class LossPlacement:
    """``self.loss_on`` in ``('mean', 'per_step')`` for a method (module docstring)."""

    name = "method"
    default_loss_on = "per_step"
    loss_on_choices: tuple[str, ...] = LOSS_ON
    loss_on_why = ""  # why a placement outside loss_on_choices cannot be computed
    # train.compile (sj_bwsnn.engine.compile): the model method train_step calls ("forward" or
    # "forward_seq"), or None with compile_refusal saying why compiling it is not supported
    compile_entry: str | None = None
    compile_refusal = "it does not declare what to compile (no compile_entry)"

    def set_loss_on(self, loss_on: str | None) -> None:
        loss_on = loss_on or self.default_loss_on
        if loss_on not in LOSS_ON:
            raise UserError(f"train.loss_on must be one of {', '.join(LOSS_ON)} or null, "
                            f"got {loss_on!r}")
        if loss_on not in self.loss_on_choices:
            raise UserError(f"train.loss_on: {loss_on} is not possible with train.method "
                            f"{self.name}: {self.loss_on_why}")
        self.loss_on = loss_on

    def check_model(self, model) -> None:
        """Refuse, with one line, a model this method cannot train. The trainer calls it once the
        model is built, before the run writes anything; the default accepts every model."""
