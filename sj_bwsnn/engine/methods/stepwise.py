"""SLTT, SLTT-K, OTTT (step by step, memory flat in T) and the fused SLTT variant.

All four minimise, by default, the per-step loss of SLTT's code (Meng et al., ICCV 2023;
qymeng94/SLTT train_SLTT.py:320-363)::

    L = (1/T) * sum_t objective(logits[t], y, x)

with the temporal gradient path dropped: ``V[t-1]`` enters step ``t`` detached, so
``dL/dW = sum_t dL_t/dW`` through the spatial path of step ``t`` only. ``sltt``, ``sltt_k`` and
``ottt`` run backward at every step, so only this ``train.loss_on: per_step`` placement is
possible for them (``mean`` is refused with one line); ``sltt_fused`` holds all T steps and also
takes ``loss_on: mean`` (the SLTT gradient of ``objective(mean_t logits[t])``).

* :class:`SLTT` — one step at a time: forward step ``t``, ``backward(L_t)``, detach every neuron's
  state (``functional.detach_net``), next step; gradients accumulate, one optimizer step. Only one
  step's graph is alive, so activation memory does not grow with T. BatchNorm sees ``N`` samples
  per call (as in SLTT's code).
* :class:`SLTTFused` — one multi-step forward with ``temporal_grad=False`` on every neuron that
  has the flag (``sj_bwsnn.neuron`` nodes), one backward: the same gradient, with the speed of a
  fused multi-step call (CuPy kernel on GPU) but activation memory O(T); BatchNorm sees ``T*N``.
  Use it when memory is not the limit; use ``sltt`` when T or the batch does not fit.
* :class:`SLTTK` — :class:`SLTT` with backward only at ``k`` steps drawn at random per batch
  (``torch.randperm``, so runs are seeded); the other steps run under ``no_grad``, and the loss
  still divides by T (as in SLTT-K's code). Cheaper per batch than ``sltt``.
* :class:`OTTT` — :class:`SLTT` plus presynaptic traces for the weight gradient of every conv /
  linear except the layer(s) that see the raw input (:mod:`.traces`); ``online_update=True``
  takes an optimizer step after every time step (OTTT_O), ``False`` accumulates over the batch
  (OTTT_A). Neurons must reset softly (``v_reset=None``, as OTTT's OnlineLIFNode,
  pkuxmq/OTTT-SNN modules/neuron.py:62-82): the trace ``a_hat`` is the leaky sum of a layer's
  inputs, which equals the membrane's dependence on the weights only when no hard reset zeroes
  the membrane. A model with hard-reset neurons is refused with one line.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from spikingjelly.activation_based import functional

from ..objectives import sequence_loss
from ..precision import Precision
from ...errors import UserError
from .base import STEPWISE_MEAN_WHY, LossPlacement
from .traces import presynaptic_traces, traced_layers


def require_forward_seq(model, why: str = "step-wise training") -> None:
    """One clear line when ``model`` cannot give per-step logits."""
    if not hasattr(model, "forward_seq"):
        raise UserError(f"{why} needs a model with forward_seq(x) -> [T, N, K]; "
                        f"{type(model).__name__} has none (use train.method: bptt with "
                        f"train.loss_on: mean)")


def step_inputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """One-step inputs ``[1, N, ...]``: frame ``t`` of ``[T, N, C, H, W]`` input, or the static
    image ``[N, C, H, W]`` repeated ``model.T`` times (direct encoding)."""
    require_forward_seq(model)
    if x.dim() == 5:
        return [x[t:t + 1] for t in range(x.shape[0])]
    return [x.unsqueeze(0)] * int(model.T)


class PerModel:
    """For a method that derives something from the model's modules (a check, the layers to trace,
    the nodes to switch): ``self.per_model(model, build)`` runs ``build(model)`` on the first batch
    of a model and returns the cached result afterwards, instead of walking the modules per batch.
    (A model whose modules are swapped during training needs a new method object.)"""

    def per_model(self, model, build):
        if getattr(self, "_cached_for", None) is not model:
            self._cached, self._cached_for = build(model), model
        return self._cached


class _StepWise(PerModel, LossPlacement):
    """Shared loop: per step forward, ``loss_t / T``, backward where ``grad_steps`` says."""

    online_update = False
    single_forward = False  # calls model.forward_seq, not model(x): no DDP wrapper
    compile_entry = "forward_seq"  # train.compile compiles the (per-step) forward_seq
    loss_on_choices = ("per_step",)
    loss_on_why = STEPWISE_MEAN_WHY

    def __init__(self, loss_on: str | None = None):
        self.set_loss_on(loss_on)

    def check_model(self, model) -> None:
        require_forward_seq(model, f"train.method {self.name}")

    def grad_steps(self, T: int) -> set[int]:
        return set(range(T))

    def context(self, model):
        """A context active for the whole batch (OTTT: the traces)."""
        return nullcontext()

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        steps = step_inputs(model, x)
        T = len(steps)
        chosen = self.grad_steps(T)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=y.device)
        logits_sum = None
        with self.context(model):
            for t, x_t in enumerate(steps):
                with torch.set_grad_enabled(t in chosen), precision.autocast():
                    logits_t = model.forward_seq(x_t)[0]
                    loss_t = objective(logits_t, y, x) / T
                if t in chosen:
                    precision.backward(loss_t)
                    functional.detach_net(model)  # V[t] leaves this step's graph
                    if self.online_update:
                        precision.step(optimizer)
                        optimizer.zero_grad(set_to_none=True)
                loss_sum += loss_t.detach()
                logits_sum = logits_t.detach() if logits_sum is None else logits_sum + logits_t.detach()
        if not self.online_update:
            precision.step(optimizer)
        return loss_sum, logits_sum / T


class SLTT(_StepWise):
    """Spatial learning through time, step by step: memory independent of T (module docstring)."""

    name = "sltt"


class SLTTK(_StepWise):
    """SLTT with backward at ``k`` random time steps per batch, the rest under ``no_grad``."""

    name = "sltt_k"

    def __init__(self, k: int = 1, loss_on: str | None = None):
        super().__init__(loss_on)
        if k < 1:
            raise UserError(f"train.k must be >= 1 for sltt_k, got {k}")
        self.k = int(k)

    def grad_steps(self, T: int) -> set[int]:
        if self.k > T:
            raise UserError(f"train.k = {self.k} exceeds the {T} time steps; choose k <= T")
        return set(torch.randperm(T)[:self.k].tolist())


class OTTT(_StepWise):
    """Online training through time: SLTT plus presynaptic traces ``a_hat[t] = lambda *
    a_hat[t-1] + s[t]`` for the weight gradients (:mod:`.traces`).

    :param trace_decay: ``lambda``; ``1 - 1/tau`` for LIF neurons, ``1`` for IF.
    :param online_update: an optimizer step after every time step instead of one per batch.
    """

    name = "ottt"

    def __init__(self, trace_decay: float = 0.5, online_update: bool = False,
                 loss_on: str | None = None):
        super().__init__(loss_on)
        if not 0.0 <= trace_decay <= 1.0:
            raise UserError(f"OTTT trace decay must lie in [0, 1], got {trace_decay}")
        self.trace_decay = float(trace_decay)
        self.online_update = bool(online_update)

    def check_model(self, model) -> None:
        super().check_model(model)
        _ottt_layers(model)  # refuses hard-reset neurons

    def context(self, model):
        return presynaptic_traces(self.per_model(model, _ottt_layers), self.trace_decay)


def _ottt_layers(model) -> list:
    """The layers OTTT traces, after refusing hard-reset neurons (class docstring)."""
    hard = [(name, m.v_reset) for name, m in model.named_modules()
            if hasattr(m, "v_threshold") and getattr(m, "v_reset", None) is not None]
    if hard:
        name, v_reset = hard[0]
        raise UserError(f"train.method ottt needs soft-reset neurons (v_reset=None, as OTTT's "
                        f"code); neuron '{name}' resets to {v_reset}: set neuron.v_reset: null "
                        f"or neuron.preset: ottt")
    return traced_layers(model)


class SLTTFused(_StepWise):
    """The SLTT gradient from one multi-step forward with ``temporal_grad=False`` nodes (fast,
    memory O(T)); see the module docstring for when to prefer :class:`SLTT`. Takes
    ``loss_on: mean`` as well (all T steps' logits exist before the one backward)."""

    name = "sltt_fused"

    loss_on_choices = ("mean", "per_step")

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        require_forward_seq(model, "sltt_fused")
        self.per_model(model, _drop_temporal_grad)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits_seq = model.forward_seq(x)
            loss = sequence_loss(objective, logits_seq, y, x, self.loss_on)
        precision.backward(loss)
        precision.step(optimizer)
        return loss.detach(), logits_seq.detach().mean(0)


def _drop_temporal_grad(model) -> None:
    """``temporal_grad = False`` on every sj_bwsnn neuron of ``model`` (the forward is unchanged,
    so evaluation is unaffected); one clear error if it has none."""
    nodes = [m for m in model.modules() if hasattr(m, "temporal_grad")]
    if not nodes:
        raise UserError("train.method sltt_fused needs sj_bwsnn.neuron nodes (temporal_grad "
                        "flag); use train.method: sltt for other neurons")
    for m in nodes:
        m.temporal_grad = False
