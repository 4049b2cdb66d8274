"""The networks of HLOP's experiments (pkuxmq/HLOP-SNN@530b89a), registered with timm.

``spiking_mlp`` -- HLOP's PMNIST net (models/spiking_mlp_hlop.py:18-138)::

    flatten(image) -> fc1 -> SN -> fc2 -> SN -> ... -> head           (no biases, no norm)
    logits_t = head(s[t]);  logits = mean_t logits_t  (DSR-LIF: weighted by w_t, see below)

``hidden=(800, 800)`` is the paper's 784-800-800-10 (spiking_train_pmnist.py:239).

``spiking_cnn`` -- HLOP's 10-split CIFAR-100 net (models/spiking_cnn_hlop.py:17-149)::

    [conv3x3 -> BN -> SN -> avgpool2] x 3 (64, 128, 256 channels), flatten (4096 at 32x32) -> head

no conv biases, Kaiming-normal (fan_out) convs, the head ``N(0, 0.01)`` with zero bias
(spiking_cnn_hlop.py:67-78). With ``num_classes = tasks x classes_per_task`` the head's row blocks
are the per-task heads of the paper's multi-head setting (sj_bwsnn.data.continual).

Read-out: ``forward_seq`` returns ``T * w_t * logits_t`` with ``w_t = 1/T`` (so ``forward``, the
time mean, is the plain mean: rate_spikes), or, for DSR-LIF neurons, the normalised weights
``w_t ~ exp(-(T - t) dt / tau)`` (so ``forward`` is DSR's weighted firing rate of the head's output:
weight_rate_spikes, modules/neuron_dsr.py:16-20, spiking_mlp_hlop.py:134-137).

Deliberate differences (our choices): ``binary=True`` makes the hidden layers (``fc2``... and
convs 2-3) 1-bit, keeping the input layer and the head real-valued (BNN convention; HLOP's nets are
real-valued); the first conv + BN of ``spiking_cnn`` runs once on a static image and is repeated
over T (HLOP's code runs it on T copies: the same values, BN statistics included).
``img_size`` (default 28, MNIST) sets the MLP's input width ``in_chans * img_size**2``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from spikingjelly.activation_based import layer
from timm.models import register_model
from torch import nn

from ..layers import BinaryConv2d, BinaryLinear, check_model_input
from ..neuron import LIFNode
from ..neuron.dsr import DSRLIFNode
from .base import SpikingClassifier, entrypoint_kwargs


def _readout(out: torch.Tensor, last_neuron: nn.Module) -> torch.Tensor:
    """``T * w_t * out[t]`` (module docstring)."""
    T = out.shape[0]
    if isinstance(last_neuron, DSRLIFNode):
        w = last_neuron.rate_weights(T, out.device).to(out.dtype) * T
        return out * w.view(T, *([1] * (out.dim() - 1)))
    return out


def _repeat(x: torch.Tensor, T: int) -> torch.Tensor:
    return x.unsqueeze(0).repeat(T, *([1] * x.dim()))


class _HLOPNet(SpikingClassifier):
    """What both HLOP nets set up first: ``T``, the input channels, the classes, and the neuron
    keyword arguments without ``step_mode`` (the nets run multi-step)."""

    def _setup(self, T: int, in_chans: int, num_classes: int,
               neuron_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T, self.in_chans, self.num_classes = int(T), in_chans, num_classes
        kw = dict(neuron_kwargs or {})
        kw.pop("step_mode", None)
        return kw


class SpikingMLP(_HLOPNet):
    """HLOP's spiking MLP (module docstring).

    :param hidden: widths of the hidden layers.
    :param img_size: image side; the input layer has ``in_chans * img_size**2`` inputs.
    """

    def __init__(self, hidden: Sequence[int] = (800, 800), img_size: int = 28, in_chans: int = 1,
                 num_classes: int = 10, T: int = 20, binary: bool = False,
                 neuron: type = LIFNode, neuron_kwargs: dict[str, Any] | None = None,
                 scaling: str = "channel", detach_alpha: bool = True):
        super().__init__()
        kw = self._setup(T, in_chans, num_classes, neuron_kwargs)
        width = in_chans * img_size * img_size
        self.in_features = width
        fcs, sns = [], []
        for i, h in enumerate(hidden):
            if binary and i > 0:
                fcs.append(BinaryLinear(width, h, bias=False, step_mode="m", scaling=scaling,
                                        detach_alpha=detach_alpha))
            else:
                fcs.append(layer.Linear(width, h, bias=False, step_mode="m"))
            sns.append(neuron(step_mode="m", **kw))
            width = h
        self.fcs, self.sns = nn.ModuleList(fcs), nn.ModuleList(sns)
        self.num_features = width
        self.head = layer.Linear(width, num_classes, bias=False, step_mode="m")

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, N, num_classes]`` (weighted: module docstring)."""
        check_model_input(x, type(self).__name__, self.T, self.in_chans)
        x = _repeat(x, self.T) if x.dim() == 4 else x
        x = x.flatten(2)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SpikingMLP expects {self.in_features} inputs per sample "
                             f"(model.kwargs.img_size), got {x.shape[-1]}")
        for fc, sn in zip(self.fcs, self.sns):
            x = sn(fc(x))
        return _readout(self.head(x), self.sns[-1])

    def get_classifier(self) -> nn.Module:
        return self.head

    def input_layers(self) -> list[nn.Module]:
        return [self.fcs[0]]


class SpikingCNN(_HLOPNet):
    """HLOP's spiking CNN (module docstring).

    :param widths: channels of the conv stages (each followed by a 2x2 average pool).
    :param img_size: image side (the head sees ``widths[-1] * (img_size / 2**stages)**2``).
    """

    def __init__(self, widths: Sequence[int] = (64, 128, 256), img_size: int = 32,
                 in_chans: int = 3, num_classes: int = 10, T: int = 20, binary: bool = False,
                 neuron: type = LIFNode, neuron_kwargs: dict[str, Any] | None = None,
                 scaling: str = "channel", detach_alpha: bool = True):
        super().__init__()
        kw = self._setup(T, in_chans, num_classes, neuron_kwargs)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.sn1 = neuron(step_mode="m", **kw)
        stages = []
        for i in range(1, len(widths)):
            conv = (BinaryConv2d(widths[i - 1], widths[i], 3, padding=1, step_mode="m",
                                 scaling=scaling, detach_alpha=detach_alpha) if binary
                    else layer.Conv2d(widths[i - 1], widths[i], 3, padding=1, bias=False,
                                      step_mode="m"))
            stages += [layer.AvgPool2d(2, step_mode="m"), conv,
                       layer.BatchNorm2d(widths[i], step_mode="m"), neuron(step_mode="m", **kw)]
        self.stages = nn.Sequential(*stages)
        self.pool = layer.AvgPool2d(2, step_mode="m")
        self.last_sn = stages[-1] if stages else self.sn1
        side = img_size // 2 ** len(widths)
        self.num_features = widths[-1] * side * side
        self.head = layer.Linear(self.num_features, num_classes, step_mode="m")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, 0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:
        check_model_input(x, type(self).__name__, self.T, self.in_chans)
        if x.dim() == 4:  # static image: the first conv + BN would see T identical copies
            y = _repeat(self.bn1(self.conv1(x)), self.T)
        else:
            T, N = x.shape[:2]
            y = self.bn1(self.conv1(x.flatten(0, 1))).unflatten(0, (T, N))
        y = self.pool(self.stages(self.sn1(y))).flatten(2)
        if y.shape[-1] != self.num_features:
            raise ValueError(f"SpikingCNN: the head expects {self.num_features} features "
                             f"(model.kwargs.img_size), got {y.shape[-1]}")
        return _readout(self.head(y), self.last_sn)

    def get_classifier(self) -> nn.Module:
        return self.head

    def input_layers(self) -> list[nn.Module]:
        return [self.conv1]


@register_model
def spiking_mlp(pretrained: bool = False, **kwargs) -> SpikingMLP:
    """HLOP's spiking MLP (784-800-800-10 for 28x28 inputs)."""
    return SpikingMLP(**entrypoint_kwargs(pretrained, kwargs))


@register_model
def spiking_cnn(pretrained: bool = False, **kwargs) -> SpikingCNN:
    """HLOP's spiking CNN for 32x32 images (64-128-256 conv stages, 4096 features)."""
    return SpikingCNN(**entrypoint_kwargs(pretrained, kwargs))
