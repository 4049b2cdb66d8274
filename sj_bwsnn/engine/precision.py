"""Mixed precision, gradient scaling and clipping in one object every training method uses.

A method's ``train_step(model, x, y, objective, optimizer, precision)`` runs its forward and loss
inside ``precision.autocast()``, calls ``precision.backward(loss)`` instead of
``loss.backward()`` and ``precision.step(optimizer)`` instead of ``optimizer.step()``:

- ``amp='bf16'``: ``torch.autocast(dtype=bfloat16)``; no scaler (bf16 has fp32's range).
- ``amp='fp16'``: ``torch.autocast(dtype=float16)`` and a ``torch.amp.GradScaler``: the loss is
  multiplied by the scale S before backward; ``step`` unscales (g <- g / S), skips the step if a
  gradient is inf/nan and adapts S.
- ``clip_grad=c``: after unscaling, gradients are rescaled so that ||g||_2 (all parameters) <= c.
- ``grad_sync``: under torchrun, for methods that bypass DDP's wrapper, a callable that averages
  the gradients over ranks (:func:`~sj_bwsnn.engine.distributed.average_gradients`); ``step``
  calls it first, so unscaling, the inf/nan check and clipping all see the global gradient.
- ``grad_transforms``: callables ``fn(optimizer)`` run by ``step`` after the gradient sync and
  unscaling, before clipping and the optimizer step; each may rewrite ``p.grad`` in place. This is
  how something outside the training method changes every update of a run without a special case
  in any method (continual learning's gradient projection, :mod:`sj_bwsnn.continual`). Under
  fp16 they see unscaled gradients (the scaler unscales first).

A method that steps several times per batch (online learning) calls ``backward``/``step`` once
per update; the scaler handles that.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """``autocast()``, ``backward(loss)``, ``step(optimizer)`` for one device and amp mode."""

    def __init__(self, amp: str = "off", device: torch.device | str = "cpu",
                 clip_grad: float | None = None, grad_sync: Callable[[], None] | None = None):
        self.amp, self.clip_grad, self.grad_sync = amp, clip_grad, grad_sync
        self.grad_transforms: list[Callable[[torch.optim.Optimizer], None]] = []
        self.device_type = torch.device(device).type
        self.dtype = DTYPES.get(amp)
        self.scaler = torch.amp.GradScaler(self.device_type) if amp == "fp16" else None

    def autocast(self):
        """Context for forward and loss; a no-op when amp is off."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Sync gradients over ranks, unscale, apply ``grad_transforms``, clip, step (skipped on
        inf/nan under fp16) and update the scale."""
        if self.grad_sync is not None:
            self.grad_sync()
        if self.scaler and (self.clip_grad is not None or self.grad_transforms):
            self.scaler.unscale_(optimizer)
        for transform in self.grad_transforms:
            transform(optimizer)
        if self.clip_grad is not None:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
