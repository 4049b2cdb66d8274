"""The feedback SNNs of the IDE and SPIDE papers, built from :class:`~.fsnn.FeedbackSNN` and
registered with timm: ``fsnn_fc`` (IDE Fashion-MNIST, 784-400 + F400), ``fsnn_conv`` (IDE MNIST,
64C5s + F64C5), ``fsnn_alexnet_f`` / ``fsnn_cifarnet_f`` (IDE CIFAR, I:cifar_alexnetf.py:136-157,
cifar_cifarnetf.py:136-157), ``fsnn_convnet_f`` (SPIDE MNIST, S:models/snn_spide_mnist.py:28-44).
``I:`` is pkuxmq/IDE-FSNN, ``S:`` pkuxmq/SPIDE-FSNN; every architecture key of :data:`ARCHS` can be
changed through ``model.kwargs`` (a key of another architecture is one line naming it).
"""

from __future__ import annotations

from timm.models import register_model
from torch import nn

from ..errors import UserError, closest
from ..layers import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear
from .base import entrypoint_kwargs
from .fsnn import FeedbackSNN, _init

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
