"""OPZO: online pseudo-zeroth-order training (Xiao, Meng, Zhang, He, Lin, ICLR 2026, arXiv 2407.12516).

No spatial backpropagation: every layer learns from one noisy forward pass and a direct top-down
signal. The network is cut at its *feedback points* (the layers' outputs: ``model.feedback_points()``
when the model defines it, else every spiking neuron); each cut passes a detached copy on, so no
autograd graph connects two layers. Per time step ``t`` and layer ``l`` (``n_l`` units, ``K``
classes, ``b`` a sample of the batch), as implemented; the source of each line in brackets
(*paper*: its abstract, the only primary text that could be read; *2nd*: a secondary summary, the
papernotes.org ICLR 2026 note, see docs/opzo.md; *code*: OTTT's official code, pkuxmq/OTTT-SNN;
*ours*: our choice)::

    s~_l  = sg(s_l) + alpha z_l                  noise injected on the layer's output     [paper, 2nd]
    z_l   ~ N(0, I)  (rademacher: +-1; sphere: uniform on the sphere of radius sqrt(n_l)) [2nd, ours]
            antithetic: z at even t, -z (the same draw) at odd t                         [2nd]
    e     = dL_t / do~                           closed-form loss gradient at the noisy
                                                 logits o~ (autograd of the loss alone)   [2nd]
    M_l  <- lambda M_l + (1 - lambda) mean_b z_lb o~_b^T / alpha   (n_l x K)               [2nd]
    g_l   = M_l e / (1 - lambda^k)               k updates so far, M_0 = 0               [2nd; ours: M_0, 1/(1-lambda^k)]
    dL/dW_l += (psi(u_l) * g_l) a_hat_{l-1}^T    local backward of layer l from g_l       [2nd; traces: code]
    a_hat[t] = decay * a_hat[t-1] + x[t]         presynaptic trace (:mod:`.traces`)       [code: OTTT]

The last segment (from the last cut to the logits: the classifier) gets its exact gradient from
``L_t``, as OTTT's; each other segment ``W_l -> BN -> SN`` is differentiated locally from its own
``g_l`` (``psi`` is the surrogate derivative, BN's Jacobian is local to the layer). Gradients
accumulate over the ``T`` steps and the optimizer steps once per batch, or after every step with
``train.online_update`` (OPZO's online form, as OTTT_O: pkuxmq/OTTT-SNN train_cifar.py:196-248).
Checked against OTTT's code for the base: the neuron (modules/neuron.py:62-118: ``V[t-1]``
detached every step, the trace ``rate_tracking * (1 - 1/tau) + spike`` at :114) and the weight
gradient from the trace (models/spiking_vgg.py:59-89, ``Replace``/``WrapedSNNOp``), which
:mod:`.traces` reproduces; the layer that sees the raw input keeps its plain input, no trace, as
OTTT's first conv (models/spiking_vgg.py:224-231; :func:`.traces.traced_layers`).
``E_z[z o~^T / alpha]`` is the transposed Jacobian of the Gaussian-smoothed network (Stein's lemma;
exact for a linear read-out), so ``M_l`` tracks ``E_x[J_l^T]`` over the data: a learned DFA matrix.

Deliberate choices (not confirmed by the paper's text; see docs/opzo.md): ``M_0 = 0`` with the bias
correction ``1/(1 - lambda^k)``; the ``1/alpha`` is kept (reviewers report the paper drops it in
practice, which only rescales the step); the batch mean over ``z_b o~_b^T`` (one noise draw per
sample and step); ``samples`` noisy copies of every input in one forward (more noise draws per
step); noise only on the layer outputs (the membrane-potential variant is not implemented); the
next layer's trace sees the noisy input; ``M`` has no weight sharing for convs (``n_l = C*H*W``);
under torchrun the ranks average their ``M`` increments, so every rank holds the same ``M``.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from ...errors import UserError
from ..distributed import world
from ..precision import Precision
from .base import LossPlacement
from .stepwise import PerModel, step_inputs
from .traces import presynaptic_traces, traced_layers

NOISES = ("gaussian", "rademacher", "sphere")


def feedback_points(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the cuts: ``model.feedback_points()`` if defined, else every spiking
    neuron (SpikingJelly ``BaseNode``), in module order."""
    names = {id(m): n for n, m in model.named_modules()}
    if hasattr(model, "feedback_points"):
        points = list(model.feedback_points())
    else:
        points = [m for m in model.modules() if isinstance(m, BaseNode)]
    if not points:
        raise UserError(f"{type(model).__name__} has no spiking neurons to cut at; direct-feedback "
                        f"methods (opzo, dfa) need an SNN or a model with feedback_points()")
    return [(names.get(id(m), type(m).__name__), m) for m in points]


def reached_parameters(root: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (parameter) the autograd graph of ``root`` reaches."""
    found, seen, stack = set(), set(), [root.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)  # AccumulateGrad: a leaf
        if var is not None:
            found.add(id(var))
        stack.extend(f for f, _ in fn.next_functions)
    return found


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for a float64 model, else float32 (noise, feedback matrices, signals)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _per_sample(out, batch: int) -> bool:
    """Whether ``out`` is ``[N, ...]`` or ``[1, N, ...]`` for a batch of ``N``."""
    return (isinstance(out, torch.Tensor) and out.dim() >= 2
            and (out.shape[0] == batch or (out.shape[0] == 1 and out.shape[1] == batch)))


class _Cuts:
    """Forward hooks on the feedback points for one batch: record each point's output (with its
    graph), return ``detach(out) + alpha * z`` to the rest of the network."""

    def __init__(self, points, alpha: float, noise: str, antithetic: bool, batch: int):
        self.points, self.alpha, self.noise, self.antithetic = points, alpha, noise, antithetic
        self.batch, self.t = batch, 0
        self.outputs: list = [None] * len(points)
        self.z: list = [None] * len(points)  # [N, n_l] float32, this step's draws
        self.handles = []

    def __enter__(self):
        for i, (_, module) in enumerate(self.points):
            self.handles.append(module.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def start(self, t: int) -> None:
        self.t, self.outputs = t, [None] * len(self.points)

    def _draw(self, i: int, n: int, device, dtype) -> torch.Tensor:
        if self.antithetic and self.t % 2 == 1 and self.z[i] is not None:
            return -self.z[i]
        shape = (self.batch, n)
        if self.noise == "rademacher":
            return torch.randint(0, 2, shape, device=device).to(dtype) * 2 - 1
        z = torch.randn(shape, device=device, dtype=dtype)
        if self.noise == "sphere":
            z = z * (math.sqrt(n) / z.norm(dim=1, keepdim=True).clamp_min(1e-12))
        return z

    def _hook(self, i: int):
        def hook(module, inputs, out):
            name = self.points[i][0]
            if not _per_sample(out, self.batch):
                raise UserError(f"feedback point {name} gives {getattr(out, 'shape', type(out))} "
                                f"for a batch of {self.batch}; opzo/dfa need [N, ...] or [1, N, ...] "
                                f"outputs per time step")
            if self.outputs[i] is not None:
                raise UserError(f"feedback point {name} runs twice in one time step; opzo/dfa need "
                                f"each cut module to be called once per step")
            self.outputs[i] = out
            base = out.detach()
            if self.alpha == 0.0:
                return base
            z = self._draw(i, out.numel() // self.batch, out.device, _work_dtype(out))
            self.z[i] = z
            return base + (self.alpha * z).view_as(base).to(base.dtype)

        return hook


class DirectFeedback(PerModel, LossPlacement):
    """Shared loop of :class:`OPZO` and :class:`~.dfa.DFA`: a step-wise (OTTT-style) forward with
    the network cut at its feedback points, each layer trained from ``g_l = B_l e``; a subclass
    says what ``B_l`` is (``_learn``, ``_matrix``) and how much noise the cuts inject."""

    name = "direct_feedback"
    single_forward = False  # calls model.forward_seq: the trainer all-reduces the gradients
    alpha = 0.0
    loss_on_choices = ("per_step",)
    loss_on_why = ("every layer is updated from each step's loss gradient e_t before the later "
                   "steps run, so there is no loss on the mean logits; use loss_on: per_step")

    def __init__(self, trace_decay: float = 0.5, online_update: bool = False, samples: int = 1,
                 loss_on: str | None = None):
        self.set_loss_on(loss_on)
        if not 0.0 <= trace_decay <= 1.0:
            raise UserError(f"{self.name}: the trace decay must lie in [0, 1], got {trace_decay}")
        if samples < 1:
            raise UserError(f"{self.name}: samples must be >= 1, got {samples}")
        self.trace_decay, self.online_update = float(trace_decay), bool(online_update)
        self.samples = int(samples)
        self.matrices: list[torch.Tensor] = []  # B_l, [n_l, K] float32, built on the first batch
        self._pending: dict | None = None  # a checkpoint's state, applied when the shapes are known
        self.noise, self.antithetic = "gaussian", False

    # -- what a subclass defines ---------------------------------------------------------------

    def _init_matrix(self, i: int, n: int, k: int, device) -> torch.Tensor:
        raise NotImplementedError

    def _learn(self, cuts: _Cuts, logits: torch.Tensor) -> None:
        """Update the feedback matrices from this step's noise and (noisy) logits."""

    def _matrix(self, i: int) -> torch.Tensor:
        return self.matrices[i]

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The feedback matrices (and a subclass's counters): saved in every checkpoint."""
        if not self.matrices and self._pending is not None:  # resumed, not trained since
            return self._pending
        return {"method": self.name, "feedback": [m.cpu() for m in self.matrices]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.name:
            raise UserError(f"--resume: the checkpoint holds {state.get('method')!r} feedback, "
                            f"not {self.name!r}; resume with the same train.method")
        self._pending = state
        self.matrices = []

    def _build_matrices(self, cuts: _Cuts, k: int, device, dtype) -> None:
        sizes = [out.numel() // cuts.batch for out in cuts.outputs]
        pending, self._pending = self._pending, None
        if pending is None:
            self.matrices = [self._init_matrix(i, n, k, device).to(dtype)
                             for i, n in enumerate(sizes)]
            return
        saved = pending["feedback"]
        if [tuple(m.shape) for m in saved] != [(n, k) for n in sizes]:
            raise UserError(f"--resume: the checkpoint's {self.name} feedback matrices "
                            f"{[tuple(m.shape) for m in saved]} do not fit this model's layers "
                            f"{[(n, k) for n in sizes]}")
        self.matrices = [m.to(device=device, dtype=dtype) for m in saved]
        self._restore(pending)

    def _restore(self, state: dict) -> None:
        """A subclass's extra state from a checkpoint."""

    # -- the step ------------------------------------------------------------------------------

    def _plan(self, model: nn.Module) -> dict:
        return {"points": feedback_points(model), "traced": traced_layers(model), "checked": False}

    def _check_partition(self, model, plan: dict, loss: torch.Tensor, cuts: _Cuts) -> None:
        """One parameter, one layer: refuse a model with paths around its cuts (residuals)."""
        owner: dict[int, str] = {}
        roots = [("the classifier", loss)] + [(n, o) for (n, _), o in zip(plan["points"],
                                                                          cuts.outputs)]
        for name, root in roots:
            if root is None:
                raise UserError(f"feedback point {name} of {type(model).__name__} did not run in "
                                f"the forward pass; {self.name} cuts only modules that run")
            for p in reached_parameters(root):
                if p in owner and owner[p] != name:
                    raise UserError(
                        f"train.method {self.name}: {type(model).__name__} has paths around its "
                        f"feedback points (a parameter feeds both {owner[p]} and {name}, e.g. "
                        f"through a residual shortcut), so training it would need spatial "
                        f"backprop; use bw_snn_mlp, bw_snn_cnn or bw_resnet_*, or give the model a "
                        f"feedback_points() method that cuts every path")
                owner[p] = name
        plan["checked"] = True

    def _replicate(self, x: torch.Tensor, y: torch.Tensor):
        k = self.samples
        if k == 1:
            return x, y
        x = x.repeat(1, k, *[1] * (x.dim() - 2)) if x.dim() == 5 else x.repeat(k, *[1] * (x.dim() - 1))
        return x, y.repeat(k, *[1] * (y.dim() - 1))

    def train_step(self, model, x, y, objective, optimizer, precision: Precision | None = None):
        precision = precision or Precision()
        plan = self.per_model(model, self._plan)
        n = len(y)
        x, y = self._replicate(x, y)
        steps = step_inputs(model, x)
        T = len(steps)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=y.device)
        logits_sum = None
        cuts = _Cuts(plan["points"], self.alpha, self.noise, self.antithetic, len(y))
        with presynaptic_traces(plan["traced"], self.trace_decay), cuts:
            for t, x_t in enumerate(steps):
                cuts.start(t)
                with precision.autocast():
                    logits = model.forward_seq(x_t)[0]
                    loss = objective(logits, y, x) / T
                if not plan["checked"]:
                    self._check_partition(model, plan, loss, cuts)
                (e,) = torch.autograd.grad(loss, logits, retain_graph=True)
                dtype = _work_dtype(logits)
                with torch.no_grad():
                    if not self.matrices:
                        self._build_matrices(cuts, logits.shape[-1], logits.device, dtype)
                    self._learn(cuts, logits.detach().to(dtype))
                    signals = [e.to(dtype) @ self._matrix(i).T for i in range(len(cuts.outputs))]
                # sum_l <s_l, g_l>: backward sends exactly g_l into layer l's own graph
                total = loss + sum((out.to(g.dtype) * g.view(out.shape)).sum()
                                   for out, g in zip(cuts.outputs, signals) if out.requires_grad)
                precision.backward(total)
                functional.detach_net(model)
                if self.online_update:
                    precision.step(optimizer)
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                logits = logits.detach()
                logits_sum = logits if logits_sum is None else logits_sum + logits
        if not self.online_update:
            precision.step(optimizer)
        logits_mean = logits_sum / T
        if self.samples > 1:  # the noisy copies of each input: report their mean logits
            logits_mean = logits_mean.view(self.samples, n, -1).mean(0)
        return loss_sum, logits_mean


class OPZO(DirectFeedback):
    """Online pseudo-zeroth-order training (module docstring).

    :param noise_scale: ``alpha``, the standard deviation of the injected noise.
    :param momentum: ``lambda`` of the feedback connections ``M_l``.
    :param noise: ``'gaussian'``, ``'rademacher'`` or ``'sphere'``.
    :param antithetic: dual noise, ``z`` at even steps and ``-z`` at odd steps.
    :param samples: noisy copies of every input in the one forward pass (noise draws per step).
    :param trace_decay, online_update: as :class:`~.stepwise.OTTT`.
    """

    name = "opzo"

    def __init__(self, noise_scale: float = 0.3, momentum: float = 0.99, noise: str = "gaussian",
                 antithetic: bool = True, samples: int = 1, trace_decay: float = 0.5,
                 online_update: bool = False, loss_on: str | None = None):
        super().__init__(trace_decay, online_update, samples, loss_on)
        if noise_scale <= 0:
            raise UserError(f"opzo.noise_scale must be > 0, got {noise_scale}")
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"opzo.momentum must lie in [0, 1), got {momentum}")
        if noise not in NOISES:
            raise UserError(f"opzo.noise must be one of {', '.join(NOISES)}, got {noise!r}")
        self.alpha, self.momentum = float(noise_scale), float(momentum)
        self.noise, self.antithetic = noise, bool(antithetic)
        self.updates = 0  # k: momentum updates of M so far (bias correction 1 - lambda^k)

    def _init_matrix(self, i, n, k, device):
        return torch.zeros(n, k, device=device)

    def _learn(self, cuts: _Cuts, logits: torch.Tensor) -> None:
        # X_l = mean_b z_lb o~_b^T / alpha, averaged over ranks under torchrun
        xs = [z.to(logits.dtype).T @ logits / (len(logits) * self.alpha) for z in cuts.z]
        ranks = world()[1]
        if ranks > 1:
            flat = torch.cat([x.flatten() for x in xs])
            dist.all_reduce(flat)
            xs = [f.view_as(x) / ranks for f, x in zip(flat.split([x.numel() for x in xs]), xs)]
        lam = self.momentum
        for m, x in zip(self.matrices, xs):
            m.mul_(lam).add_(x, alpha=1.0 - lam)
        self.updates += 1

    def _matrix(self, i: int) -> torch.Tensor:
        return self.matrices[i] / (1.0 - self.momentum ** self.updates)

    def state_dict(self) -> dict:
        return {"updates": self.updates, **super().state_dict()}

    def _restore(self, state: dict) -> None:
        self.updates = int(state["updates"])
