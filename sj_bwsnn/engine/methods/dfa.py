"""DFA: direct feedback alignment (Nøkland, NeurIPS 2016), OPZO's main baseline, on the same engine.

Every layer ``l`` receives the output error through a fixed random matrix instead of spatial
backprop (the OPZO paper compares against it in the same online setting; secondary summary)::

    e        = dL_t / do                      closed-form loss gradient at the logits
    g_l      = B_l e                          B_l [n_l x K], fixed, B_l ~ N(0, 1/n_l)   (ours)
    dL/dW_l += (psi(u_l) * g_l) a_hat_{l-1}^T  local backward of layer l, OTTT traces

:class:`DFA` is :class:`~.opzo.OPZO`'s loop (cuts at the feedback points, traces, online
updates, AMP, torchrun) without noise and with ``B_l`` never updated. ``B_l`` is drawn once per
run from ``torch.Generator().manual_seed(seed)`` (the recipe's ``seed``, not the per-rank global
stream), so every rank draws the same matrices; they are saved in every checkpoint. The scale
``1/sqrt(n_l)`` per entry is that of the Jacobian of a default-initialised linear read-out on
``n_l`` inputs (our choice; DFA's sign-agnostic alignment makes the scale a learning-rate factor).
"""

from __future__ import annotations

import math

import torch

from .opzo import DirectFeedback


class DFA(DirectFeedback):
    """Direct feedback alignment with fixed random ``B_l`` (module docstring).

    :param seed: seed of the generator that draws ``B_l`` (the recipe's ``seed``).
    :param trace_decay, online_update: as :class:`~.opzo.OPZO`.
    """

    name = "dfa"

    def __init__(self, trace_decay: float = 0.5, online_update: bool = False, seed: int = 0,
                 loss_on: str | None = None):
        super().__init__(trace_decay, online_update, samples=1, loss_on=loss_on)
        self.seed = int(seed)
        self._generator = None

    def _init_matrix(self, i: int, n: int, k: int, device) -> torch.Tensor:
        if self._generator is None or i == 0:
            self._generator = torch.Generator().manual_seed(self.seed)
        b = torch.randn(n, k, generator=self._generator) / math.sqrt(n)
        return b.to(device)
