"""Training methods: how one batch turns into gradients and optimizer steps.

A method is an object with
``train_step(model, x, y, objective, optimizer, precision=None) -> (loss, logits)``;
it owns zero_grad, forward, backward and the optimizer step (online methods step more than once
per batch), running forward and loss in ``precision.autocast()`` and going through
``precision.backward(loss)`` / ``precision.step(optimizer)`` (AMP, grad scaling, clipping: see
:mod:`sj_bwsnn.engine.precision`). ``loss`` and ``logits`` (time-averaged, ``[N, K]``) come back detached for metrics.
The trainer resets the network's neuron state after each batch. ``single_forward`` says whether
the method's only call into the model is one ``model(x)`` per batch: under torchrun such a method
trains through DDP's wrapper, the others get the same gradient average from the trainer
(:func:`sj_bwsnn.engine.distributed.data_parallel`). Objectives are called as
``objective(logits [N, K], y, x)`` with the batch's ``x`` (a distillation objective caches its
teacher's logits per ``x``, so per-step calls with the same ``x`` are cheap).

Every method takes ``loss_on`` (``train.loss_on``; ``None``: its default) through
:class:`~.base.LossPlacement`, which refuses a placement the method cannot compute with one line;
a method with all T steps' logits in hand calls
:func:`sj_bwsnn.engine.objectives.sequence_loss` (``mean``: the objective of ``mean_t logits``;
``per_step``: ``(1/T) sum_t`` of each step's objective). A new method registered in
:data:`METHODS` must accept ``loss_on`` in its constructor (:func:`build_method` passes it to
every method), declare ``default_loss_on`` / ``loss_on_choices`` and call ``set_loss_on``.

========== ============================================================== =========== ======
method     gradient                                                       loss_on     memory
========== ============================================================== =========== ======
bptt       multi-step forward, backprop through time                      **mean**,   O(T)
                                                                          per_step
sltt       step by step: V[t-1] detached, loss_t/T and backward per step, **per_step** O(1)
           gradients summed, one optimizer step (Meng et al., ICCV 2023)
sltt_fused the same gradient (up to BN batch statistics) in one multi-step **per_step**, O(T)
           forward with ``temporal_grad=False`` nodes: faster, more memory mean
sltt_k     ``sltt`` with backward at ``k`` random steps, the rest no_grad   **per_step** O(1)
ottt       ``sltt`` plus presynaptic traces for the weight gradient         **per_step** O(1)
           (Xiao et al., NeurIPS 2022); ``online_update``: a step per t
dsr        multi-step forward through DSR neurons, gradient of the         **mean**,   O(T)
           firing-rate representation (Meng et al., CVPR 2022)              per_step
ide        feedback SNNs: T steps without graph, implicit gradient at the   **mean**    O(1)
           equilibrium by Broyden (Xiao et al., NeurIPS 2021)
spide      ``ide`` with the backward linear system solved by a spiking      **mean**    O(1)
           network of ternary neurons (Xiao et al., Neural Networks 2023)
opzo       no spatial backprop: one noisy forward per step, each layer      **per_step** O(1)
           trained from ``M_l e`` with feedback ``M_l`` learned by momentum
           (Xiao et al., ICLR 2026); OTTT traces, ``online_update`` too
dfa        ``opzo``'s loop with fixed random feedback ``B_l``              **per_step** O(1)
           (direct feedback alignment, Nøkland 2016)
========== ============================================================== =========== ======

(bold: the default placement; a placement not listed is refused with one line.)

``ide`` and ``spide`` train :class:`~sj_bwsnn.models.fsnn.FeedbackSNN` models only; they expose
``epoch_stats()`` (solver residuals, backward spike rates), which the trainer adds to each epoch's
metrics.

Step-wise methods (``sltt``, ``sltt_k``, ``ottt``, ``opzo``, ``dfa``) call ``model.forward_seq(x_t)`` with a one-step
input ``[1, N, ...]`` per time step (the image itself for static ``[N, C, H, W]`` input, T =
``model.T``; frame ``t`` for ``[T, N, C, H, W]`` input) and rely on neuron state persisting
across calls until ``functional.reset_net``, as every SpikingJelly multi-step network does.
"""

from __future__ import annotations

from ...errors import UserError, closest
from ..objectives import sequence_loss
from ..precision import Precision
from .base import LossPlacement
from .dfa import DFA
from .ide import IDE
from .spide import SPIDE
from .stepwise import OTTT, SLTT, SLTTK, PerModel, SLTTFused, require_forward_seq
from .opzo import OPZO, feedback_points
from .traces import input_layers, presynaptic_traces, traced_layers


class BPTT(LossPlacement):
    """Backpropagation through time with surrogate gradients; memory grows linearly with T.

    One backward through all T steps, one optimizer step. ``loss_on='mean'`` (default):
    ``loss = objective(mean_t logits_t, y, x)`` from one ``model(x)`` (DDP's wrapper sees it);
    ``'per_step'``: ``loss = (1/T) sum_t objective(logits_t, y, x)`` from ``model.forward_seq(x)``,
    the loss of SLTT's BPTT baseline (qymeng94/SLTT train_BPTT.py:313-350: CE over the T steps'
    logits concatenated along the batch).
    """

    name = "bptt"
    default_loss_on = "mean"

    def __init__(self, loss_on: str | None = None):
        self.set_loss_on(loss_on)
        # one model(x) per batch: DDP's wrapper sees it; forward_seq bypasses the wrapper, so the
        # trainer then averages gradients itself (sj_bwsnn.engine.distributed)
        self.single_forward = self.loss_on == "mean"

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            if self.loss_on == "mean":
                logits = model(x)
                loss = objective(logits, y, x)
            else:
                require_forward_seq(model, f"{self.name} with train.loss_on: per_step")
                logits_seq = model.forward_seq(x)
                loss = sequence_loss(objective, logits_seq, y, x, self.loss_on)
                logits = logits_seq.mean(0)
        precision.backward(loss)
        precision.step(optimizer)
        return loss.detach(), logits.detach()


class DSR(BPTT, PerModel):
    """Differentiation on spike representation (Meng et al., CVPR 2022).

    The model must be built with DSR neurons (``neuron.type: dsr_if | dsr_lif``): their backward
    replaces the spike train by its (weighted) firing rate, ``d rate / d input = 1`` inside
    ``[0, V_th]`` (``0`` outside) and a gradient for the learnable threshold
    (:mod:`sj_bwsnn.neuron.dsr`). The read-out is a rate, so the step is :class:`BPTT`'s (loss on
    the mean by default, as the official code's loss on the rate): with BW-ResNet's default head
    ``mean_t fc(pool(s[t])) = fc(pool(mean_t s[t]))``; with ``model.kwargs.head: dsr`` the
    official read-out FC -> BN1d -> neuron -> (weighted) rate (qymeng94/DSR
    cifar/modules/preresnet.py:147-162; :mod:`sj_bwsnn.models.bw_resnet`).
    """

    name = "dsr"

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        self.per_model(model, _require_dsr_neurons)
        return super().train_step(model, x, y, objective, optimizer, precision)


def _require_dsr_neurons(model) -> None:
    from spikingjelly.activation_based.neuron import DSRIFNode, DSRLIFNode

    if not any(isinstance(m, (DSRIFNode, DSRLIFNode)) for m in model.modules()):
        raise UserError("train.method dsr needs a model built with DSR neurons; "
                        "set neuron.type: dsr_if or dsr_lif")


METHODS = {"bptt": BPTT, "sltt": SLTT, "sltt_fused": SLTTFused, "sltt_k": SLTTK, "ottt": OTTT,
           "dsr": DSR, "ide": IDE, "spide": SPIDE, "opzo": OPZO, "dfa": DFA}


def trace_decay_for(neuron_cfg) -> float:
    """OTTT trace decay ``lambda``: ``1 - 1/tau`` for LIF (either ``decay_input``), ``1`` for IF."""
    return 1.0 - 1.0 / neuron_cfg.tau if neuron_cfg.type == "lif" else 1.0


def build_method(spec):
    """The training method for a :class:`~sj_bwsnn.engine.recipe.Recipe` (its ``train.method``,
    ``train.loss_on``, ``train.k``, ``train.online_update``, the neuron's ``tau`` and the
    ``ide`` / ``spide`` / ``opzo`` sections, ``seed`` for ``dfa``) or for a bare method name
    (default options)."""
    name = spec if isinstance(spec, str) else spec.train.method
    if name not in METHODS:
        raise UserError(f"train.method: unknown method {name!r}{closest(name, METHODS)}; "
                        f"choose one of {', '.join(METHODS)}")
    if isinstance(spec, str):
        return METHODS[name]()
    train = spec.train
    options = {"loss_on": train.loss_on}
    if name == "sltt_k":
        options["k"] = train.k
    if name == "ottt":
        options.update(trace_decay=trace_decay_for(spec.neuron), online_update=train.online_update)
    if name == "ide":
        options.update(iters=spec.ide.iters, tol=spec.ide.tol)
    if name == "spide":
        options.update(steps=spec.spide.steps, vth_back=spec.spide.vth_back,
                       grad_scale=spec.spide.grad_scale)
    if name in ("opzo", "dfa"):
        o = spec.opzo
        decay = trace_decay_for(spec.neuron) if o.trace_decay is None else o.trace_decay
        options.update(trace_decay=decay, online_update=train.online_update)
        if name == "dfa":
            options["seed"] = spec.seed
        else:
            options.update(noise_scale=o.noise_scale, momentum=o.momentum, noise=o.noise,
                           antithetic=o.antithetic, samples=o.samples)
    return METHODS[name](**options)


__all__ = ["BPTT", "DFA", "DSR", "IDE", "LossPlacement", "METHODS", "OPZO", "OTTT", "SLTT",
           "SLTTFused", "SLTTK", "SPIDE", "build_method", "feedback_points", "input_layers",
           "presynaptic_traces", "trace_decay_for", "traced_layers"]
