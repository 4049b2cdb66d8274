"""Training methods: how one batch turns into gradients and optimizer steps.

A method is an object with
``train_step(model, x, y, objective, optimizer, precision=None) -> (loss, logits)``;
it owns zero_grad, forward, backward and the optimizer step (online methods step more than once
per batch), running forward and loss in ``precision.autocast()`` and going through
``precision.backward(loss)`` / ``precision.step(optimizer)`` (AMP, grad scaling, clipping: see
:mod:`sj_bwsnn.engine.precision`). ``loss`` and ``logits`` (time-averaged, ``[N, K]``) come back
detached for metrics. The trainer resets the network's neuron state after each batch.

``bptt`` (default): one multi-step forward over all T steps, one backward through time.
"""

from __future__ import annotations

from ..errors import UserError, closest
from .precision import Precision


class BPTT:
    """Backpropagation through time with surrogate gradients; memory grows linearly with T."""

    name = "bptt"

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(x)
            loss = objective(logits, y, x)
        precision.backward(loss)
        precision.step(optimizer)
        return loss.detach(), logits.detach()


METHODS = {"bptt": BPTT}


def build_method(name: str):
    """The training method for a recipe's ``train.method``."""
    try:
        return METHODS[name]()
    except KeyError:
        raise UserError(f"train.method: unknown method {name!r}{closest(name, METHODS)}; "
                        f"choose one of {', '.join(METHODS)}") from None
