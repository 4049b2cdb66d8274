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

========== =============================================================== =============
method     gradient                                                        memory in T
========== =============================================================== =============
bptt       multi-step forward, loss on mean_t logits, backprop through time O(T)
sltt       step by step: V[t-1] detached, loss_t/T and backward per step,   O(1)
           gradients summed, one optimizer step (Meng et al., ICCV 2023)
sltt_fused the same gradient (up to BN batch statistics) in one multi-step  O(T)
           forward with ``temporal_grad=False`` nodes: faster, more memory
sltt_k     ``sltt`` with backward at ``k`` random steps, the rest no_grad    O(1)
ottt       ``sltt`` plus presynaptic traces for the weight gradient          O(1)
           (Xiao et al., NeurIPS 2022); ``online_update``: a step per t
dsr        multi-step forward through DSR neurons, gradient of the          O(T)
           firing-rate representation (Meng et al., CVPR 2022)
opzo       no spatial backprop: one noisy forward per step, each layer      O(1)
           trained from ``M_l e`` with feedback ``M_l`` learned by momentum
           (Xiao et al., ICLR 2026); OTTT traces, ``online_update`` too
dfa        ``opzo``'s loop with fixed random feedback ``B_l`` (Nøkland 2016) O(1)
========== =============================================================== =============

Step-wise methods (``sltt``, ``sltt_k``, ``ottt``, ``opzo``, ``dfa``) call ``model.forward_seq(x_t)`` with a one-step
input ``[1, N, ...]`` per time step (the image itself for static ``[N, C, H, W]`` input, T =
``model.T``; frame ``t`` for ``[T, N, C, H, W]`` input) and rely on neuron state persisting
across calls until ``functional.reset_net``, as every SpikingJelly multi-step network does.
"""

from __future__ import annotations

from ...errors import UserError, closest
from ..precision import Precision
from .dfa import DFA
from .opzo import OPZO, feedback_points
from .stepwise import OTTT, SLTT, SLTTK, PerModel, SLTTFused
from .traces import presynaptic_traces, traced_layers


class BPTT:
    """Backpropagation through time with surrogate gradients; memory grows linearly with T.

    ``loss = objective(mean_t logits_t, y, x)``, one backward through all T steps, one step.
    """

    name = "bptt"
    single_forward = True  # one model(x) per batch: DDP's wrapper sees it

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(x)
            loss = objective(logits, y, x)
        precision.backward(loss)
        precision.step(optimizer)
        return loss.detach(), logits.detach()


class DSR(BPTT, PerModel):
    """Differentiation on spike representation (Meng et al., CVPR 2022).

    The model must be built with DSR neurons (``neuron.type: dsr_if | dsr_lif``): their backward
    replaces the spike train by its (weighted) firing rate, ``d rate / d input = 1`` inside
    ``[0, V_th]`` (``0`` outside) and a gradient for the learnable threshold. The read-out is the
    rate: ``mean_t fc(pool(s[t])) = fc(pool(mean_t s[t]))``, so the step is :class:`BPTT`'s.
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
           "dsr": DSR, "opzo": OPZO, "dfa": DFA}


def trace_decay_for(neuron_cfg) -> float:
    """OTTT trace decay ``lambda``: ``1 - 1/tau`` for LIF (either ``decay_input``), ``1`` for IF."""
    return 1.0 - 1.0 / neuron_cfg.tau if neuron_cfg.type == "lif" else 1.0


def build_method(spec):
    """The training method for a :class:`~sj_bwsnn.engine.recipe.Recipe` (its ``train.method``,
    ``train.k``, ``train.online_update``, the neuron's ``tau``, the ``opzo`` section and ``seed``)
    or for a bare method name (default options)."""
    name = spec if isinstance(spec, str) else spec.train.method
    if name not in METHODS:
        raise UserError(f"train.method: unknown method {name!r}{closest(name, METHODS)}; "
                        f"choose one of {', '.join(METHODS)}")
    if isinstance(spec, str):
        return METHODS[name]()
    train = spec.train
    if name == "sltt_k":
        return SLTTK(k=train.k)
    if name == "ottt":
        return OTTT(trace_decay=trace_decay_for(spec.neuron), online_update=train.online_update)
    if name in ("opzo", "dfa"):
        o = spec.opzo
        decay = trace_decay_for(spec.neuron) if o.trace_decay is None else o.trace_decay
        if name == "dfa":
            return DFA(trace_decay=decay, online_update=train.online_update, seed=spec.seed)
        return OPZO(noise_scale=o.noise_scale, momentum=o.momentum, noise=o.noise,
                    antithetic=o.antithetic, samples=o.samples, trace_decay=decay,
                    online_update=train.online_update)
    return METHODS[name]()


__all__ = ["BPTT", "DFA", "DSR", "METHODS", "OPZO", "OTTT", "SLTT", "SLTTFused", "SLTTK",
           "build_method", "feedback_points", "presynaptic_traces", "trace_decay_for",
           "traced_layers"]
