"""Feedback spiking networks trained at equilibrium (IDE, SPIDE), registered with timm.

Layers ``0..L`` of IF or LIF neurons (SpikingJelly nodes, single-step). Layer 0 receives the
input current ``x1 = drop(BN(F x))`` (real-valued encoder, constant over time: direct encoding)
plus the feedback current from layer ``L``; layer ``l`` receives ``H_{l-1} s_{l-1}``. Feedforward
within a step, feedback one step late (I:m/snn_modules.py:279-353)::

    I_0[t] = x1 + c * W_fb s_L[t-1]          (s_L[-1] = 0; c: feedback-norm scale)
    I_l[t] = H_{l-1} s_{l-1}[t]              (l = 1..L)
    u_l += I_l;  s_l = [u_l >= V_th];  u_l -= V_th s_l;  (LIF: u_l *= lambda = 1 - 1/tau)

Rates ``a_l = sum_t lambda^(T-1-t) s_l[t] / sum_k lambda^k`` (lambda = 1 for IF; I:...:84-194) and
logits ``classifier(a_L)``. The equilibrium map whose fixed point ``a_L* = f(a_L*)`` IDE and SPIDE
differentiate (I:m/snn_modules.py:24-27, 217-226)::

    f(a_L) = a_L'  with  a_0 = clamp((c W_fb a_L + x1) / V_th, 0, 1),  a_l = clamp(H_{l-1} a_{l-1} / V_th, 0, 1)

``forward(x)`` runs the SNN (with surrogate gradients when autograd is on, so ``bptt`` trains the
same network); :mod:`sj_bwsnn.engine.methods.ide` / ``.spide`` call :meth:`FeedbackSNN.begin`,
:meth:`~FeedbackSNN.simulate` (no graph), :meth:`~FeedbackSNN.fixed_point` /
:meth:`~FeedbackSNN.pre_activations` and :meth:`~FeedbackSNN.readout`.

``binary=True``: the feedback and hidden synapses ``W_fb, H_l`` are 1-bit (``alpha * sign(w)``);
the encoder ``F`` (it sees real pixels) and the classifier stay real, by BNN convention.
Feedback constraint: ``fb_norm='spectral'`` (IDE): ``c = clamp(g, -r, r) / sigma(W_fb)``, sigma by
one power iteration per training forward (I:m/optimizations.py:180-226); ``'frobenius'`` (SPIDE):
``c = min(||W_fb||_F, r) / ||W_fb||_F`` without gradient (S:m/optimizations.py:96-110).
Dropout: one mask per forward and layer, shared by every time step and by the equilibrium map
(I:m/optimizations.py:10-38). SPIDE's modified reset (subtract ``V_th - u_rest = 2 V_th``,
S:m/snn_modules.py:26-33,70-96) is an IF neuron with threshold ``2 V_th`` started at half its
threshold: ``neuron.v_threshold: 2 * V_th`` and ``v_init=0.5``.

Deliberate differences: the Frobenius norm is exact (the SPIDE code estimates it from 64 Gaussian
probes); the power-iteration vectors start converged (10 iterations) and are updated in training
mode only; a conv followed by BN has no bias (the group code has both).

Registered: ``fsnn_fc`` (IDE Fashion-MNIST, 784-400 + F400), ``fsnn_conv`` (IDE MNIST, 64C5s +
F64C5), ``fsnn_alexnet_f`` / ``fsnn_cifarnet_f`` (IDE CIFAR, I:cifar_alexnetf.py:136-157,
cifar_cifarnetf.py:136-157), ``fsnn_convnet_f`` (SPIDE MNIST, S:models/snn_spide_mnist.py:28-44).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from spikingjelly.activation_based import neuron as sj_neuron
from timm.models import register_model
from torch import nn

from ..errors import ShapeError, UserError, closest
from ..layers import (BinaryConv2d, BinaryConvTranspose2d, BinaryLayer, BinaryLinear,
                      check_model_input)
from ..neuron import IFNode
from .base import entrypoint_kwargs

FB_NORMS = ("spectral", "frobenius", "none")
INITS = ("ide", "kaiming")


class FeedbackPass:
    """What one forward shares across time steps and the equilibrium map: the input current
    ``x1``, the feedback scale ``c`` and the dropout masks (drawn on first use)."""

    __slots__ = ("x1", "scale", "masks")

    def __init__(self, x1: torch.Tensor, scale: torch.Tensor, masks: dict):
        self.x1, self.scale, self.masks = x1, scale, masks

    def detached(self) -> "FeedbackPass":
        return FeedbackPass(self.x1.detach(), self.scale.detach(), self.masks)


class SpectralScale(nn.Module):
    """``c = clamp(g, -r, r) / sigma(W)``: IDE's spectral restriction of the feedback weight
    (I:m/optimizations.py:180-226). ``W`` is the weight as ``[out, in * k * k]`` (dim 0 first);
    ``g`` starts at ``sigma(W_0)``; ``sigma = u^T W v`` with ``u, v`` from one power iteration per
    training forward (gradient flows through ``W`` in ``sigma``, not through ``u, v``)."""

    def __init__(self, weight: torch.Tensor, norm_range: float = 1.0):
        super().__init__()
        self.norm_range = float(norm_range)
        w = weight.detach().reshape(weight.shape[0], -1).float()
        u, v = F.normalize(torch.randn(w.shape[0]), dim=0), F.normalize(torch.randn(w.shape[1]), dim=0)
        for _ in range(10):
            v = F.normalize(w.t() @ u, dim=0)
            u = F.normalize(w @ v, dim=0)
        self.g = nn.Parameter(torch.dot(u, w @ v).reshape(()))
        self.register_buffer("u", u)
        self.register_buffer("v", v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            w = weight.reshape(weight.shape[0], -1).to(self.u.dtype)
            if self.training:
                with torch.no_grad():
                    self.v.copy_(F.normalize(w.t() @ self.u, dim=0))
                    self.u.copy_(F.normalize(w @ self.v, dim=0))
            sigma = torch.dot(self.u, w @ self.v)
            return self.g.clamp(-self.norm_range, self.norm_range) / sigma


class FrobeniusCap(nn.Module):
    """``c = min(||W||_F, r) / ||W||_F`` without gradient: SPIDE's restriction of the feedback
    weight (S:m/optimizations.py:96-110, exact norm instead of a 64-probe estimate)."""

    def __init__(self, weight: torch.Tensor, norm_range: float = 2.0):
        super().__init__()
        self.norm_range = float(norm_range)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # ||W||_F = 0: c = 0, not NaN (c W is zero either way)
            f = weight.float().norm()
            return (f.clamp(max=self.norm_range) / f.clamp(min=1e-12)).to(weight.dtype)


def _init(m: nn.Module, how: str, transpose_scale: float = 1.0) -> None:
    """``'ide'``: U(-1, 1), each output unit's weights scaled to unit L2 norm (conv-transpose: per
    output channel; I:m/snn_modules.py:509-520,587-598,653-664); ``'kaiming'``: Kaiming normal,
    fan-in (S:m/snn_modules.py:403-412). Conv-transposes then x ``transpose_scale`` (SPIDE: 0.1,
    S:m/snn_modules.py:567). Biases zero."""
    if how not in INITS:
        raise UserError(f"model.kwargs.init must be one of {', '.join(INITS)}, got {how!r}")
    w = m.weight.data
    if how == "ide":
        w.uniform_(-1, 1)
        dim = 1 if isinstance(m, nn.ConvTranspose2d) else 0
        w.div_(w.transpose(0, dim).reshape(w.shape[dim], -1).norm(dim=1)
               .reshape([-1 if d == dim else 1 for d in range(w.dim())]))
    else:
        nn.init.kaiming_normal_(w, a=0, mode="fan_in")
    if isinstance(m, nn.ConvTranspose2d):
        w.mul_(transpose_scale)
    if m.bias is not None:
        m.bias.data.zero_()


class FeedbackSNN(nn.Module):
    """A feedback SNN (module docstring). Build it through the timm entrypoints or directly:

    :param encoder: ``x -> x1``, the input current of layer 0 (real-valued; conv/linear + BN).
    :param hidden: ``H_0..H_{L-1}``, layer ``l`` spikes -> layer ``l+1`` current.
    :param feedback: ``W_fb``, layer ``L`` spikes -> layer 0 current (no bias).
    :param head_in: features of the flattened ``a_L``; ``num_classes``: logits.
    :param T: time steps of the forward simulation.
    :param neuron, neuron_kwargs: IF or LIF (soft reset, ``decay_input=False``: the defaults here,
        and anything else is refused with one line).
    :param dropout: per-forward mask on every layer's current (0: off).
    :param fb_norm, fb_norm_range: ``'spectral'`` (IDE), ``'frobenius'`` (SPIDE) or ``'none'``.
    :param v_init: initial membrane potential in units of ``V_th`` (0.5: SPIDE's modified reset).
    :param flatten: flatten the input to ``[N, -1]`` before the encoder (fully connected nets).
    :param in_chans: input channels; when given, inputs are checked to be ``[N, C, H, W]``
        (:func:`~sj_bwsnn.layers.check_model_input`; the timm entrypoints give it).
    """

    def __init__(self, encoder: nn.Module, hidden: Sequence[nn.Module], feedback: nn.Module,
                 head_in: int, num_classes: int, T: int = 30, neuron: type = IFNode,
                 neuron_kwargs: dict[str, Any] | None = None, dropout: float = 0.0,
                 fb_norm: str = "spectral", fb_norm_range: float = 1.0, v_init: float = 0.0,
                 flatten: bool = False, binary: bool = False, in_chans: int | None = None):
        super().__init__()
        if int(T) < 1:
            raise UserError(f"T must be >= 1, got {T}")
        if fb_norm not in FB_NORMS:
            raise UserError(f"model.kwargs.fb_norm must be one of {', '.join(FB_NORMS)}, got {fb_norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.kwargs.dropout must lie in [0, 1), got {dropout}")
        if fb_norm != "none" and not float(fb_norm_range) > 0:
            raise UserError(f"model.kwargs.fb_norm_range must be > 0 (the bound r on the feedback "
                            f"scale), got {fb_norm_range}")
        kw = dict(neuron_kwargs or {}, step_mode="s")
        if not (isinstance(neuron, type) and issubclass(neuron, (sj_neuron.IFNode, sj_neuron.LIFNode))):
            raise UserError(f"feedback SNNs take IF or LIF neurons (neuron.type: if | lif), "
                            f"got {neuron.__name__}")
        kw.setdefault("v_reset", None)  # unless told otherwise, IDE's soft reset ...
        if issubclass(neuron, sj_neuron.LIFNode):
            kw.setdefault("decay_input", False)  # ... and leak (SpikingJelly's defaults differ)
        if kw["v_reset"] is not None:
            raise UserError("feedback SNNs need the soft reset of IDE/SPIDE: set neuron.v_reset: null")
        if issubclass(neuron, sj_neuron.LIFNode) and kw["decay_input"]:
            raise UserError("feedback SNNs with LIF neurons need neuron.decay_input: false "
                            "(IDE's leak does not scale the input)")
        self.encoder, self.hidden, self.feedback = encoder, nn.ModuleList(hidden), feedback
        self.neurons = nn.ModuleList(neuron(**kw) for _ in range(len(self.hidden) + 1))
        self.classifier = nn.Linear(head_in, num_classes)
        self.T, self.num_classes, self.binary = int(T), num_classes, bool(binary)
        self.dropout, self.v_init, self.flatten = float(dropout), float(v_init), bool(flatten)
        self.in_chans = in_chans
        self.v_threshold = float(self.neurons[0].v_threshold)
        tau = getattr(self.neurons[0], "tau", None)
        self.leak = 1.0 - 1.0 / float(tau) if tau is not None else 1.0  # lambda
        w = self._fb_weight()
        self.fb_norm = (SpectralScale(w, fb_norm_range) if fb_norm == "spectral" else
                        FrobeniusCap(w, fb_norm_range) if fb_norm == "frobenius" else None)

    # -- pieces the training methods call ---------------------------------------------------------

    def _fb_weight(self) -> torch.Tensor:
        fb = self.feedback
        return fb.binarized_weight() if isinstance(fb, BinaryLayer) else fb.weight

    def _drop(self, p: FeedbackPass, key, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout == 0:
            return h
        m = p.masks.get(key)
        if m is None:
            m = p.masks[key] = torch.empty_like(h).bernoulli_(1 - self.dropout) / (1 - self.dropout)
        return h * m

    def check_input(self, x: torch.Tensor) -> None:
        """:class:`~sj_bwsnn.errors.ShapeError` unless ``x`` is a static batch ``[N, C, H, W]``
        (rank and channels checked when ``in_chans`` is known; event frames always refused)."""
        if isinstance(x, torch.fx.Proxy):
            return
        name, got = type(self).__name__, f"{x.dim()}-D shape {tuple(x.shape)}"
        if x.dim() == 5:
            raise ShapeError(f"{name} takes static images [N, C, H, W] (a constant input current), "
                             f"got {got}: feedback SNNs do not support event frames")
        if self.in_chans is not None and x.dim() != 4:
            hint = ("; grey images [N, H, W] need x.unsqueeze(1), one image [C, H, W] "
                    "x.unsqueeze(0)" if x.dim() == 3 else "")
            raise ShapeError(f"{name} expects [N, C, H, W] images, got {got}{hint}")
        if self.in_chans is not None:
            check_model_input(x, name, self.T, self.in_chans)  # channels (channels-last hint)

    def begin(self, x: torch.Tensor) -> FeedbackPass:
        """The input current ``x1`` and feedback scale ``c`` (with autograd's graph when it is on)."""
        self.check_input(x)
        if self.flatten:
            x = x.flatten(1)
        p = FeedbackPass(x, x.new_ones(()), {})
        p.x1 = self._drop(p, "x", self.encoder(x))
        if self.fb_norm is not None:
            p.scale = self.fb_norm(self._fb_weight())
        return p

    def current(self, p: FeedbackPass, layer: int, s: torch.Tensor) -> torch.Tensor:
        """Synaptic current into ``layer`` from its source's spikes or rates ``s``: ``c W_fb s``
        (layer 0, from layer L; ``x1`` not included) or ``H_{l-1} s`` (with bias, BN, dropout)."""
        if layer == 0:
            return self._drop(p, "fb", self.feedback(s) * p.scale.to(s.dtype))
        return self._drop(p, layer, self.hidden[layer - 1](s))

    def simulate(self, p: FeedbackPass, T: int | None = None) -> list[torch.Tensor]:
        """Run the SNN for ``T`` steps from rest; the (weighted) firing rates of every layer."""
        T = self.T if T is None else int(T)
        functional.reset_net(self.neurons)
        for n in self.neurons:
            n.v = self.v_init * self.v_threshold
        L = len(self.hidden)
        spikes: list[torch.Tensor] = [None] * (L + 1)
        acc: list[torch.Tensor] = [None] * (L + 1)
        for t in range(T):
            cur = p.x1 if t == 0 else p.x1 + self.current(p, 0, spikes[L])
            for l in range(L + 1):
                if l:
                    cur = self.current(p, l, spikes[l - 1])
                spikes[l] = self.neurons[l](cur)
                acc[l] = spikes[l] if t == 0 else acc[l] * self.leak + spikes[l]
        norm = T if self.leak == 1.0 else (1 - self.leak ** T) / (1 - self.leak)
        return [a / norm for a in acc]

    def pre_activations(self, p: FeedbackPass, rates: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each layer's current computed from the given rates: ``x1 + c W_fb a_L`` and
        ``H_{l-1} a_{l-1}`` (SPIDE's local weight gradients, S:m/snn_modules.py:171-173)."""
        L = len(self.hidden)
        return [p.x1 + self.current(p, 0, rates[L])] + [self.current(p, l, rates[l - 1])
                                                        for l in range(1, L + 1)]

    def fixed_point(self, p: FeedbackPass, a_last: torch.Tensor) -> torch.Tensor:
        """``f(a_L)`` (module docstring): one differentiable application of the equilibrium map."""
        V = self.v_threshold
        a = torch.clamp((p.x1 + self.current(p, 0, a_last)) / V, 0, 1)
        for l in range(1, len(self.hidden) + 1):
            a = torch.clamp(self.current(p, l, a) / V, 0, 1)
        return a

    def readout(self, a_last: torch.Tensor) -> torch.Tensor:
        return self.classifier(a_last.flatten(1))

    @contextmanager
    def hidden_bn_eval(self):
        """Hidden BatchNorms use their running statistics inside the block (the group code runs
        the simulation and the backward Jacobian so; I:m/snnide_module.py:47-56,74-75)."""
        bns = [m for m in self.hidden.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and m.training]
        for m in bns:
            m.eval()
        try:
            yield
        finally:
            for m in bns:
                m.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` from the rates of layer L after ``T`` steps."""
        return self.readout(self.simulate(self.begin(x))[-1])

    def get_classifier(self) -> nn.Module:
        return self.classifier


# ---------------------------------------------------------------------------------------------
# the papers' architectures


def _linear(binary, cin, cout, bias, scaling, detach_alpha):
    if binary:
        return BinaryLinear(cin, cout, bias=bias, scaling=scaling, detach_alpha=detach_alpha)
    return nn.Linear(cin, cout, bias=bias)


def _conv(binary, cin, cout, k, stride, bias, scaling, detach_alpha, transpose=False):
    if transpose:  # 2x upsampling, as AlexNet-F's feedback (I:d/snn_ide_conv_multilayer.py:35)
        if binary:
            return BinaryConvTranspose2d(cin, cout, k, stride, (k - 1) // 2, stride - 1, bias=bias,
                                         scaling=scaling, detach_alpha=detach_alpha)
        return nn.ConvTranspose2d(cin, cout, k, stride, (k - 1) // 2, stride - 1, bias=bias)
    if binary:
        return BinaryConv2d(cin, cout, k, stride, (k - 1) // 2, bias=bias, scaling=scaling,
                            detach_alpha=detach_alpha)
    return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=bias)


def _bn_after(conv: nn.Module, out: int, bn: bool, fc: bool = False) -> nn.Module:
    if not bn:
        return conv
    return nn.Sequential(conv, nn.BatchNorm1d(out) if fc else nn.BatchNorm2d(out))


_NET_KEYS = ("T", "neuron", "neuron_kwargs")  # from the recipe's own keys, not model.kwargs


def _arch(kind: str, kw: dict) -> dict:
    """``ARCHS[kind]`` updated by (and without) the architecture keys of ``kw``, checked: a key
    of another architecture or a bad stride list is one :class:`UserError` line naming it."""
    base = ARCHS[kind]
    for key in kw:
        if key not in base and key not in _NET_KEYS:
            other = next((k for k, a in ARCHS.items() if key in a), None)
            why = (f" (an option of {other}: left from another model.name?)" if other
                   else closest(key, base))
            raise UserError(f"model.kwargs.{key}: {kind} has no such option{why}; it takes "
                            f"{', '.join(base)}")
    arch = dict(base, **{k: kw.pop(k) for k in list(kw) if k in base})
    if "widths" in arch:
        widths, strides = arch["widths"], arch["hidden_strides"]
        if not (isinstance(widths, (list, tuple)) and widths and all(_count(w) for w in widths)):
            raise UserError(f"model.kwargs.widths must be a list of channel counts (integers "
                            f">= 1), got {widths!r}")
        if not (isinstance(strides, (list, tuple)) and len(strides) == len(widths) - 1
                and all(_count(s) for s in strides)):
            raise UserError(f"model.kwargs.hidden_strides must give one stride (an integer >= 1) "
                            f"per hidden layer, {len(widths) - 1} for widths {list(widths)}, "
                            f"got {strides!r}")
    return arch


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _create(kind: str, pretrained: bool, kwargs: dict) -> FeedbackSNN:
    kw = entrypoint_kwargs(pretrained, kwargs)
    binary, scaling = bool(kw.pop("binary", False)), kw.pop("scaling", "channel")
    detach = kw.pop("detach_alpha", True)
    in_chans, num_classes = int(kw.pop("in_chans", 1)), int(kw.pop("num_classes", 10))
    arch = _arch(kind, kw)
    init, bn, size = arch["init"], arch["bn"], int(arch["img_size"])
    if kind == "fsnn_fc":
        h = int(arch["hidden"])
        encoder = _bn_after(nn.Linear(in_chans * size * size, h), h, bn, fc=True)
        hidden, fb, head = [], _linear(binary, h, h, False, scaling, detach), h
    else:
        k, s = int(arch["kernel"]), int(arch["stride"])
        widths = list(arch["widths"])
        if size % s:
            raise UserError(f"model.kwargs.img_size {size} must be divisible by the stride {s}")
        encoder = _bn_after(nn.Conv2d(in_chans, widths[0], arch["kernel_x"], s,
                                      (arch["kernel_x"] - 1) // 2, bias=not bn), widths[0], bn)
        hidden, side = [], size // s
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            stride = arch["hidden_strides"][i]
            if side % stride:
                raise UserError(f"model.kwargs.hidden_strides: layer {i + 1}'s {side}x{side} "
                                f"maps (img_size {size}) do not divide by its stride {stride}")
            hidden.append(_bn_after(_conv(binary, cin, cout, k, stride, not bn, scaling, detach),
                                    cout, bn))
            side //= stride
        up = size // s // side  # the feedback maps layer L back to layer 0's resolution
        fb = _conv(binary, widths[-1], widths[0], arch["kernel_fb"], up, False, scaling, detach,
                   transpose=up > 1)
        head = widths[-1] * side * side
    for m in [encoder, fb, *hidden]:
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                _init(mod, init, float(arch["fb_init_scale"]))
    defaults = dict(dropout=arch["dropout"], fb_norm=arch["fb_norm"],
                    fb_norm_range=arch["fb_norm_range"], v_init=arch["v_init"])
    defaults.update(kw)
    return FeedbackSNN(encoder, hidden, fb, head, num_classes, flatten=kind == "fsnn_fc",
                       binary=binary, in_chans=in_chans, **defaults)


_IDE = dict(init="ide", bn=True, dropout=0.2, fb_norm="spectral", fb_norm_range=1.0, v_init=0.0,
            fb_init_scale=1.0)
ARCHS = {
    # I:fashionmnist_fc.py:122-133, I:models/snn_ide_fc.py:28-44
    "fsnn_fc": dict(_IDE, img_size=28, hidden=400),
    # I:mnist_conv.py:123-141, I:models/snn_ide_conv.py:28-44
    "fsnn_conv": dict(_IDE, img_size=28, widths=(64,), kernel=5, kernel_x=5, kernel_fb=5,
                      stride=2, hidden_strides=()),
    # I:cifar_alexnetf.py:136-157, I:models/snn_ide_conv_multilayer.py:28-50
    "fsnn_alexnet_f": dict(_IDE, img_size=32, widths=(96, 256, 384, 384, 256), kernel=3, kernel_x=3,
                           kernel_fb=3, stride=2, hidden_strides=(1, 2, 1, 1)),
    # I:cifar_cifarnetf.py:136-157 (same network class, wider)
    "fsnn_cifarnet_f": dict(_IDE, img_size=32, widths=(128, 256, 512, 1024, 512), kernel=3,
                            kernel_x=3, kernel_fb=3, stride=2, hidden_strides=(1, 2, 1, 1)),
    # S:mnist_convnetf.py:124-139, S:models/snn_spide_mnist.py:28-44 (no BN, Kaiming, Frobenius 2)
    "fsnn_convnet_f": dict(init="kaiming", bn=False, dropout=0.2, fb_norm="frobenius",
                           fb_norm_range=2.0, v_init=0.5, fb_init_scale=0.1, img_size=28,
                           widths=(64, 64, 64),
                           kernel=5, kernel_x=5, kernel_fb=3, stride=2, hidden_strides=(2, 1)),
}


@register_model
def fsnn_fc(pretrained: bool = False, **kwargs) -> FeedbackSNN:
    """IDE's fully connected feedback SNN: input -> 400 (BN) with a 400x400 feedback, readout."""
    return _create("fsnn_fc", pretrained, kwargs)


@register_model
def fsnn_conv(pretrained: bool = False, **kwargs) -> FeedbackSNN:
    """IDE's MNIST net 64C5s (F64C5): conv5/2 (BN) -> 64 maps with a 5x5 conv feedback, readout."""
    return _create("fsnn_conv", pretrained, kwargs)


@register_model
def fsnn_alexnet_f(pretrained: bool = False, **kwargs) -> FeedbackSNN:
    """IDE's AlexNet-F: 96C3s-256C3-384C3s-384C3-256C3 (BN) with a ConvT 256->96 feedback."""
    return _create("fsnn_alexnet_f", pretrained, kwargs)


@register_model
def fsnn_cifarnet_f(pretrained: bool = False, **kwargs) -> FeedbackSNN:
    """IDE's CIFARNet-F: 128C3s-256C3-512C3s-1024C3-512C3 (BN) with a ConvT 512->128 feedback."""
    return _create("fsnn_cifarnet_f", pretrained, kwargs)


@register_model
def fsnn_convnet_f(pretrained: bool = False, **kwargs) -> FeedbackSNN:
    """SPIDE's MNIST ConvNet-F: 64C5s-64C5s-64C5 (no BN) with a ConvT 64->64 feedback."""
    return _create("fsnn_convnet_f", pretrained, kwargs)
