"""``binarize(model)``: turn the convs and linears of any SpikingJelly or timm model into 1-bit twins.

Each selected ``nn.Conv2d`` / ``nn.Conv1d`` / ``nn.Linear`` (or SpikingJelly's ``layer.`` versions) is
replaced in place by :class:`~sj_bwsnn.layers.BinaryConv2d` / ``BinaryConv1d`` / ``BinaryLinear``
with the same hyper-parameters; its weight (and bias) become the latent initialisation, so
``w_b = alpha * sign(w_old)`` from the first forward on (the ReActNet two-step schedule: train real,
then binarize). Step mode is kept: plain torch layers see ``[N, ...]`` tensors, so their twin is
built with ``step_mode='s'``; SpikingJelly layers keep their own ``step_mode``.

Selection, in order:

1. candidates: modules whose type is *exactly* one of the four above. Subclasses (timm's
   ``StdConv2d``, ``Conv2dSame``, SJ's ``WSConv2d``...) change the op, so swapping them would change
   the model silently; they are left real and listed. Other weight layers (``Conv3d``,
   transposed convs) have no binary twin yet and are listed too. Spiking Transformers keep their
   attention projections and MLPs in 1x1 ``Conv1d``: to binarize only the FFN, as SEI-BWSNN does,
   select it with ``include`` (e.g. ``'*mlp*'`` for SpikingJelly's Spikformer).
2. ``include`` (fnmatch patterns on module names, e.g. ``'layer*.conv*'``): if given, only matches.
3. ``exclude`` (patterns): matches stay real.
4. ``keep_first_last=True``: the first conv (the stem, which sees the raw image) and the classifier
   (``model.get_classifier()`` if the model has it, else the last linear) stay real, as is
   convention in binary networks (Bi-Real Net, ReActNet).

A pattern that matches no candidate raises :class:`~sj_bwsnn.errors.UserError` (a typo would
otherwise binarize nothing, or everything, without a word). After swapping, SpikingJelly's
``reset_net`` module cache is invalidated (``functional.invalidate_reset_cache``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

from .errors import UserError
from .layers import BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear

_REPLACEABLE = (nn.Conv2d, nn.Conv1d, nn.Linear, layer.Conv2d, layer.Conv1d, layer.Linear)
_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class BinarizedLayer:
    """One replaced layer: its module name, old and new type, weight shape and step mode."""

    name: str
    old: str
    new: str
    shape: tuple[int, ...]
    step_mode: str


@dataclass
class BinarizeReport:
    """What :func:`binarize` did: ``replaced`` layers and ``kept`` ``(name, reason)`` pairs."""

    replaced: list[BinarizedLayer] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    binary_weights: int = 0  # elements of the 1-bit weights afterwards: replaced or already binary
    total_weights: int = 0  # elements of every conv/linear weight in the model

    def __len__(self) -> int:
        return len(self.replaced)

    def __iter__(self):
        return iter(self.replaced)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.replaced]

    def __str__(self) -> str:
        share = 100.0 * self.binary_weights / max(self.total_weights, 1)
        lines = [f"binarized {len(self.replaced)} layers: {self.binary_weights:,} of "
                 f"{self.total_weights:,} conv/linear weights ({share:.1f}%) are now 1-bit"]
        width = max([len(r.name) for r in self.replaced] + [len(n) for n, _ in self.kept] + [4])
        for r in self.replaced:
            lines.append(f"  {r.name:<{width}}  {r.old} -> {r.new}  {list(r.shape)}  "
                         f"step_mode={r.step_mode}")
        for name, why in self.kept:
            lines.append(f"  {name:<{width}}  kept real: {why}")
        return "\n".join(lines)


def _classifier_name(model: nn.Module, linears: list[str]) -> str | None:
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        for name, m in model.named_modules():
            if m is head:
                return name
    return linears[-1] if linears else None


def _twin(m: nn.Module, scaling: str, detach_alpha: bool) -> nn.Module:
    """The binary twin of ``m`` with the same hyper-parameters, step mode and weight/bias Parameters."""
    step_mode = getattr(m, "step_mode", "s")  # plain torch layers only ever see [N, ...] input
    if isinstance(m, (nn.Conv2d, nn.Conv1d)):
        cls = BinaryConv2d if isinstance(m, nn.Conv2d) else BinaryConv1d
        new = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                  m.groups, m.bias is not None, m.padding_mode, step_mode, scaling, detach_alpha)
    else:
        new = BinaryLinear(m.in_features, m.out_features, m.bias is not None, step_mode,
                           scaling, detach_alpha)
    # the very Parameter objects move over (device, dtype, requires_grad and any optimizer built
    # before the swap included); the twin has no other parameters or buffers
    new.weight, new.bias = m.weight, m.bias
    new.train(m.training)
    return new


def _check_patterns(kind: str, patterns: list[str], names: list[str]) -> None:
    for p in patterns:
        if not any(fnmatchcase(n, p) for n in names):
            example = ", ".join(repr(n) for n in names[:3])
            raise UserError(f"binarize: {kind} pattern {p!r} matches no Conv2d/Conv1d/Linear layer "
                            f"(names look like {example})")


def binarize(model: nn.Module, include: list[str] | str | None = None,
             exclude: list[str] | str | None = None, keep_first_last: bool = True,
             scaling: str = "channel", detach_alpha: bool = True) -> BinarizeReport:
    """Replace the model's Conv2d/Linear layers by 1-bit twins in place (see module docstring).

    :param model: any ``nn.Module`` (a SpikingJelly model, a timm model, an sj_bwsnn model).
    :param include: fnmatch pattern(s) on module names; if given, only matching layers are replaced.
    :param exclude: pattern(s) of layers to keep real.
    :param keep_first_last: keep the first conv and the classifier real (default, BNN convention).
    :param scaling, detach_alpha: options of the weight binarizer (:mod:`sj_bwsnn.layers.binarize`).
    :return: a :class:`BinarizeReport` (``print(report)`` shows one line per layer).
    """
    include = [include] if isinstance(include, str) else list(include or [])
    exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
    report = BinarizeReport()
    candidates: list[tuple[str, nn.Module]] = []
    convs: list[str] = []  # every Conv2d / Linear, subclasses included: "first" and "last" are
    linears: list[str] = []  # positions in the model, whether or not the layer can be swapped
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            convs.append(name)
        elif isinstance(m, nn.Linear):
            linears.append(name)
        if isinstance(m, _WEIGHT_LAYERS) and isinstance(getattr(m, "weight", None), torch.Tensor):
            report.total_weights += m.weight.numel()
        if isinstance(m, BinaryLayer):  # already binary: binarize twice is a no-op for them
            report.binary_weights += m.weight.numel()
        elif not name and isinstance(m, _WEIGHT_LAYERS):
            report.kept.append(("<model>", "the model itself is one layer: wrap it to swap it"))
        elif type(m) in _REPLACEABLE:
            candidates.append((name, m))
        elif isinstance(m, _WEIGHT_LAYERS):
            report.kept.append((name, f"{type(m).__name__} has no binary twin"))

    names = [n for n, _ in candidates]
    _check_patterns("include", include, names)
    _check_patterns("exclude", exclude, names)
    protected: dict[str, str] = {}
    if keep_first_last:
        head = _classifier_name(model, linears)
        if convs:
            protected[convs[0]] = "first conv (keep_first_last=True)"
        if head is not None:
            protected[head] = "classifier (keep_first_last=True)"

    for name, m in candidates:
        if include and not any(fnmatchcase(name, p) for p in include):
            continue  # not asked for: not worth a report line
        if any(fnmatchcase(name, p) for p in exclude):
            report.kept.append((name, "excluded by pattern"))
            continue
        if name in protected:
            report.kept.append((name, protected[name]))
            continue
        new = _twin(m, scaling, detach_alpha)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
        report.replaced.append(BinarizedLayer(name, type(m).__name__, type(new).__name__,
                                              tuple(m.weight.shape), new.step_mode))
        report.binary_weights += m.weight.numel()
    # reset_net caches the list of stateful modules per network; a stale cache after a swap
    # could skip new modules (SpikingJelly 2.0 pitfall).
    functional.invalidate_reset_cache(model)
    return report
