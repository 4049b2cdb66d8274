"""HLOP: Hebbian learning based orthogonal projection (Xiao et al., ICLR 2024, arXiv 2402.11984).

Checked against the official code, pkuxmq/HLOP-SNN@530b89a (file:line below).

**Lateral subspace neurons** (:class:`Subspace`; modules/hlop_module.py). Each protected layer
(every ``Linear`` / ``Conv2d``; under ``protocol: split`` not the task heads) has lateral weights
``H`` [M, D] on its presynaptic activity ``x`` [B, D] (a conv layer: every ``C*k*k`` input patch,
F.unfold, spiking_cnn_hlop.py:116-120)::

    y = H x                       lateral response (hlop_module.py:109-122); spiking lateral
                                  neurons: y <- round(clamp(y, +-s) / s * T_h) / T_h * s
    dH = y (x - H^T y)^T / B      Oja's subspace rule, Hebbian + anti-Hebbian (:79)
    dH <- clamp(dH, -10, 10);  dH[old rows] = 0                                    (:80-81)
    V <- 0.9 V + 0.1 dH (new rows);  H <- H + eta_h V                              (:83-88)

``iterations`` (5) such updates per batch on the same activity (:141-146). Task ``t`` adds new
rows (``continual.hlop.neurons``; orthogonal init, :39, :53) and learns only them while it trains;
after the task all rows merge into the old subspace (:59-63; spiking_train_pmnist.py:391).

**Projection.** While task ``t >= 1`` trains, each weight update uses the presynaptic activity
with its component in the old subspace removed, ``x - H_old^T (H_old x)``:

* ``proj_type: input`` (the official default): per sample, time step and patch, the activity
  (OTTT: the presynaptic trace) is projected and the weight gradient is ``sum delta (x - Px)^T``
  (modules/proj_linear.py:19-39, 95-105; proj_conv.py:124-162 and 185-223 for traces); the
  gradient to the layer's input still uses the true weights. Implemented as a forward hook that
  subtracts ``W (Px) - sg[W (Px)]`` from the layer's output: the value is unchanged, the input
  gradient is unchanged, the weight gradient loses ``delta (Px)^T``.
* ``proj_type: weight``: ``grad W <- grad W - (grad W H_old^T) H_old`` on the weight's gradient
  rows (proj_conv.py:165-167). For rate-based lateral neurons both are the same linear map
  (tests/test_continual_hlop.py checks it in float64); ``weight`` costs one small matmul per layer
  and works with any layer, binary or not.

With 1-bit layers the projection acts on the update of the latent weights: ``weight`` projects
the latent weight's gradient itself (after the STE), so the latent update is orthogonal to the old
subspace; ``input`` projects before the STE. A sign flip of a latent weight is still a change of
the 1-bit weight in every direction: protection then holds for the latent weights, not exactly for
the 1-bit ones (docs/continual.md).

**Hebbian input** (``hebbian_input``): ``rate`` -- per sample, the layer's input averaged over the
T steps, weighted ``w_t ~ exp(-(T - t) dt / tau)`` for DSR-LIF neurons (the weighted firing rate,
spiking_mlp_hlop.py:96-101, hlop_with_wfr; the default of the DSR scripts); ``steps`` -- every time
step's input as its own sample (the BPTT / OTTT scripts, spiking_mlp_hlop_bptt.py:89-91).

Deliberate differences (ours): the Hebbian update runs in the optimizer step, on the activity the
batch recorded, instead of inside the forward (the projection only uses the old rows and the update
only changes the new ones, so the order does not matter); with OTTT and ``steps`` one update covers
the batch's T steps together instead of one update per step (with ``train.online_update`` it is
per step again); lateral neurons beyond a layer's input width D are not added (the subspace is then
all of R^D and the layer is frozen for later tasks: a line is printed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import layer as sj_layer
from torch import nn

from ..errors import UserError
from ..layers import BinaryLayer
from .protect import Protect, Stage

ORTHONORMAL_TOL = 1.5  # largest eigenvalue of H H^T to warn above (> 1: I - H^T H reverses a direction)


class Subspace:
    """The lateral weights of one layer (module docstring): ``weight`` [M, D], its momentum,
    and ``old``, the number of merged rows that stay fixed."""

    def __init__(self, dim: int, lr: float, momentum: float = 0.9, clip: float = 10.0,
                 iterations: int = 5, spiking: tuple[float, int] | None = None,
                 device: torch.device | str = "cpu"):
        self.dim, self.lr, self.momentum, self.clip = dim, float(lr), momentum, clip
        self.iterations, self.spiking = iterations, spiking
        self.weight = torch.zeros(0, dim, device=device)
        self.velocity = torch.zeros(0, dim, device=device)
        self.old = 0

    @property
    def rows(self) -> int:
        return self.weight.shape[0]

    def add(self, n: int) -> int:
        """Add up to ``n`` new rows (orthogonal init; at most ``dim`` rows in all); returns how
        many were added."""
        n = max(0, min(int(n), self.dim - self.rows))
        if n:
            new = torch.empty(n, self.dim)
            nn.init.orthogonal_(new)
            dev = self.weight.device
            self.weight = torch.cat([self.weight, new.to(dev)])
            self.velocity = torch.cat([self.velocity, torch.zeros(n, self.dim, device=dev)])
        return n

    def merge(self) -> None:
        """Every row becomes part of the fixed old subspace."""
        self.old = self.rows

    def lateral(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """``y = x H^T`` over the first ``rows`` rows (spiking: quantised to spike counts)."""
        y = x.to(self.weight.dtype) @ self.weight[:rows].t()
        if self.spiking is not None:
            s, steps = self.spiking
            y = torch.round(y.clamp(-s, s) / s * steps) / steps * s
        return y

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The component of each row of ``x`` [B, D] in the old subspace, ``(x H_old^T) H_old``."""
        return self.lateral(x, self.old) @ self.weight[:self.old]

    @torch.no_grad()
    def hebbian(self, x: torch.Tensor) -> None:
        """``iterations`` Oja-subspace updates of the new rows on activity ``x`` [B, D]."""
        if self.rows == self.old or x.shape[0] == 0:
            return
        x = x.to(self.weight.dtype)
        o = self.old
        for _ in range(self.iterations):
            y = self.lateral(x)
            dw = (y.t() @ (x - y @ self.weight)) / x.shape[0]
            dw = dw[o:].clamp(-self.clip, self.clip)
            if self.momentum:
                self.velocity[o:] = self.momentum * self.velocity[o:] + (1 - self.momentum) * dw
                self.weight[o:] += self.lr * self.velocity[o:]
            else:
                self.weight[o:] += self.lr * dw

    def spread(self) -> float:
        """The largest eigenvalue of ``H H^T``: 1 for orthonormal rows (where Oja's rule converges;
        the projection ``x - H^T H x`` needs it), about 2 for a row that repeats another."""
        if self.rows == 0:
            return 0.0
        return float(torch.linalg.eigvalsh((self.weight @ self.weight.t()).double()).max())

    def state_dict(self) -> dict:
        return {"weight": self.weight, "velocity": self.velocity, "old": self.old}

    def load_state_dict(self, state: dict) -> None:
        dev = self.weight.device
        self.weight = state["weight"].to(dev).clone()
        self.velocity = state["velocity"].to(dev).clone()
        self.old = int(state["old"])


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d)


def _in_dim(m: nn.Module) -> int:
    if _is_conv(m):
        return m.in_channels * m.kernel_size[0] * m.kernel_size[1]
    return m.in_features


def _has_time(m: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``x`` is time-first ``[T, N, ...]`` (a 5-D conv input; a linear input of >= 3 dims)."""
    return x.dim() == 5 if _is_conv(m) else x.dim() >= 3


def _rows(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """Activity ``a`` (without time dim) as rows [B, D]: unfolded patches for a conv layer."""
    if _is_conv(m):
        patches = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding,
                           stride=m.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return a.reshape(-1, a.shape[-1])


def _weight(m: nn.Module) -> torch.Tensor:
    return m.binarized_weight() if isinstance(m, BinaryLayer) else m.weight


class HLOP(Protect):
    """``continual.protect: hlop`` (module docstring)."""

    name = "hlop"

    def __init__(self, recipe):
        super().__init__(recipe)
        self.cfg = recipe.continual.hlop
        n = recipe.neuron
        # weighted firing rate of DSR-LIF spikes (dt = 0.05, DSR's and HLOP's default)
        self.decay = math.exp(-0.05 / n.tau) if n.type == "dsr_lif" else 1.0
        self.layers: list[nn.Module] = []
        self.spaces: list[Subspace] = []
        self.learning = self.projecting = False
        self._acc: dict[int, list] = {}  # Hebbian input recorded since the last step
        self._traces: dict[int, torch.Tensor] = {}  # OTTT traces of this batch (input projection)

    # -- setup -------------------------------------------------------------------------------------

    def attach(self, run) -> None:
        model, c = run.model, self.cfg
        head = None
        if self.recipe.continual.protocol == "split" and hasattr(model, "get_classifier"):
            head = model.get_classifier()
        unsupported = [name for name, m in model.named_modules()
                       if isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d,
                                         nn.ConvTranspose2d, nn.ConvTranspose3d))]
        if unsupported:
            raise UserError(f"continual.protect hlop protects Linear and Conv2d layers; "
                            f"{type(model).__name__} has {unsupported[0]} (another type)")
        self.layers = [m for m in model.modules()
                       if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not head]
        names = {id(m): name for name, m in model.named_modules()}
        for m in self.layers:
            if _is_conv(m) and (m.groups != 1 or m.padding_mode != "zeros"
                                or isinstance(m.padding, str)):
                raise UserError(f"continual.protect hlop: conv '{names[id(m)]}' has groups, a "
                                f"string padding or padding_mode {m.padding_mode!r}; only plain "
                                f"zero-padded convs are supported")
            if c.proj_type == "input" and isinstance(m, sj_layer.WSConv2d):
                raise UserError(f"continual.hlop.proj_type input cannot project through the "
                                f"weight-standardised conv '{names[id(m)]}'; use proj_type: weight")
        L = len(self.layers)
        self.schedule = [self._per_layer(e, L, f"continual.hlop.neurons entry {i + 1}")
                         for i, e in enumerate(c.neurons)]
        lrs = self._per_layer(c.lr, L, "continual.hlop.lr")
        spiking = (c.spiking_scale, c.spiking_timesteps) if c.lateral == "spiking" else None
        self.spaces = [Subspace(_in_dim(m), lr, c.momentum, c.clip, c.iterations, spiking,
                                m.weight.device) for m, lr in zip(self.layers, lrs)]
        self.layer_names = [names[id(m)] for m in self.layers]
        from ..engine.methods import OTTT, traced_layers

        method = run.method
        self.trace_decay = method.trace_decay if isinstance(method, OTTT) else None
        self.traced = {id(m) for m in traced_layers(model)} if self.trace_decay is not None else set()
        self.epoch = lambda: run.epoch
        for i, m in enumerate(self.layers):
            m.register_forward_hook(self._hook(i))

    @staticmethod
    def _per_layer(entry, n: int, key: str) -> list:
        values = entry if isinstance(entry, list) else [entry]
        if len(values) == 1:
            return values * n
        if len(values) != n:
            raise UserError(f"{key}: {len(values)} values for {n} protected layers; give one "
                            f"value for all or one per layer (Linear/Conv2d in module order)")
        return list(values)

    def describe(self) -> str:
        c = self.cfg
        return (f"hlop ({len(self.layers)} layers, {c.lateral} lateral neurons, projection on "
                f"the {'activity' if c.proj_type == 'input' else 'weight gradient'})")

    # -- stages ------------------------------------------------------------------------------------

    def begin_stage(self, stage: Stage) -> None:
        self.learning = stage.kind == "task"
        self.projecting = stage.kind == "task" and stage.task > 0
        self._acc.clear()
        self._traces.clear()
        if stage.kind != "task":
            return
        counts = self.schedule[min(stage.task, len(self.schedule) - 1)]
        for name, space, n in zip(self.layer_names, self.spaces, counts):
            added = space.add(n)
            if added < n:
                print(f"hlop: layer '{name}' holds {space.rows} lateral neurons for its {space.dim} "
                      f"inputs, {added} of {n} added (a full subspace freezes the layer)",
                      flush=True)

    def end_stage(self, stage: Stage) -> None:
        if stage.kind == "task":
            for name, space in zip(self.layer_names, self.spaces):
                space.merge()
                top = space.spread()
                if top > ORTHONORMAL_TOL:
                    print(f"hlop: layer '{name}': the lateral weights are far from orthonormal "
                          f"after task {stage.task + 1} (largest eigenvalue of H H^T {top:.2f}, 1 "
                          f"once converged), so x - H^T H x removes old tasks' directions only in "
                          f"part: fewer continual.hlop.neurons, a larger continual.hlop.lr or more "
                          f"epochs per task help", flush=True)
        self.learning = self.projecting = False

    def batch_reset(self) -> None:
        self._traces.clear()

    # -- the hook and the step ------------------------------------------------------------------------

    def _hook(self, i: int):
        def hook(module, inputs, output):
            if not module.training:
                return None
            x = inputs[0].detach()
            if self.learning and self.epoch() >= self.cfg.start_epoch:
                self._record(i, module, x)
            if self.projecting and self.cfg.proj_type == "input":
                a = x
                if id(module) in self.traced:  # the trace OTTT computes the weight gradient from
                    prev = self._traces.get(i)
                    a = x if prev is None else prev * self.trace_decay + x
                    self._traces[i] = a
                if torch.is_grad_enabled() and module.weight.requires_grad:
                    corr = self._projected_output(i, module, a, output)
                    return output - (corr - corr.detach())
            return None

        return hook

    def _record(self, i: int, m: nn.Module, x: torch.Tensor) -> None:
        steps = x if _has_time(m, x) else x.unsqueeze(0)
        steps = steps.to(torch.promote_types(steps.dtype, torch.float32))
        if self.cfg.hebbian_input == "steps":
            self._acc.setdefault(i, []).append(steps.flatten(0, 1))
            return
        T, b = steps.shape[0], self.decay
        w = b ** torch.arange(T - 1, -1, -1, dtype=torch.float64)
        s = torch.einsum("t,t...->...", w.to(steps), steps)
        prev = self._acc.get(i)
        if prev is None:
            self._acc[i] = [s, float(w.sum())]
        else:  # a step-wise method: one call per time step
            prev[0] = prev[0] * b ** T + s
            prev[1] = prev[1] * b ** T + float(w.sum())

    def _projected_output(self, i: int, m: nn.Module, a: torch.Tensor, out: torch.Tensor):
        """``W (P a)`` without bias, shaped like the layer's output (module docstring)."""
        space, w = self.spaces[i], _weight(m)
        if not _is_conv(m):
            p = space.project(a.reshape(-1, a.shape[-1])).reshape(a.shape)
            return F.linear(p.to(w.dtype), w)
        lead = a.shape[:-3]
        flat = a.reshape(-1, *a.shape[-3:]).to(space.weight.dtype)
        patches = F.unfold(flat, m.kernel_size, dilation=m.dilation, padding=m.padding,
                           stride=m.stride)  # [B, D, L]
        B, D, L = patches.shape
        p = space.project(patches.transpose(1, 2).reshape(-1, D)).reshape(B, L, D).transpose(1, 2)
        y = torch.matmul(w.reshape(w.shape[0], -1), p.to(w.dtype))  # [B, out, L]
        return y.reshape(*lead, w.shape[0], *out.shape[-2:])

    def grad_transform(self, optimizer) -> None:
        acc, self._acc = self._acc, {}
        for i, rec in acc.items():
            m, space = self.layers[i], self.spaces[i]
            a = torch.cat(rec) if self.cfg.hebbian_input == "steps" else rec[0] / rec[1]
            space.hebbian(_rows(m, a))
        if not (self.projecting and self.cfg.proj_type == "weight"):
            return
        for m, space in zip(self.layers, self.spaces):
            g = m.weight.grad
            if g is None or space.old == 0:
                continue
            rows = g.reshape(g.shape[0], -1)
            rows -= space.project(rows).to(rows.dtype)

    # -- checkpoint --------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"spaces": [s.state_dict() for s in self.spaces]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("spaces", [])
        if len(saved) != len(self.spaces):
            raise UserError(f"the checkpoint holds HLOP subspaces for {len(saved)} layers, this "
                            f"model has {len(self.spaces)}; resume with the same recipe")
        for space, s in zip(self.spaces, saved):
            space.load_state_dict(s)
