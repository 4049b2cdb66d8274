"""Training methods: how one batch turns into gradients and optimizer steps.

A method is an object with ``train_step(model, x, y, objective, optimizer) -> (loss, logits)``;
it owns zero_grad, forward, backward and ``optimizer.step()`` (online methods step more than once
per batch). ``loss`` and ``logits`` (time-averaged, ``[N, K]``) come back detached for metrics.
The trainer resets the network's neuron state after each batch.

``bptt`` (default): one multi-step forward over all T steps, one backward through time.
"""

from __future__ import annotations

from ..errors import UserError, closest


class BPTT:
    """Backpropagation through time with surrogate gradients; memory grows linearly with T."""

    name = "bptt"

    def train_step(self, model, x, y, objective, optimizer):
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = objective(logits, y, x)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()


METHODS = {"bptt": BPTT}


def build_method(name: str):
    """The training method for a recipe's ``train.method``."""
    try:
        return METHODS[name]()
    except KeyError:
        raise UserError(f"train.method: unknown method {name!r}{closest(name, METHODS)}; "
                        f"choose one of {', '.join(METHODS)}") from None
