"""BW-Spikformer: a Spikformer with a 1-bit FFN and real-valued spiking self-attention.

Layout (SEI-BWSNN's Transformer variant: binarize the FFN, keep attention real)::

    SPS patch stem (real; SpikingJelly 2.0's SpikformerPatchStem)
    -> depth x block:
         x = x + SSA(x)                        real q/k/v/proj (SJ's SpikingSelfAttention)
         h = P1(x) + BN(W1 * SN(x))            W1: 1x1 conv dim -> hidden, 1-bit
         x = P2(h) + BN(W2 * SN(h))            W2: 1x1 conv hidden -> dim, 1-bit
    -> mean over tokens -> real linear classifier (per step) -> mean over T

Every binary layer sits inside its own shortcut, as in the core's multi-shortcut blocks
(:class:`~sj_bwsnn.layers.SpikingConvUnit`): spikes {0, 1} meet the 1-bit weights, the residual
stream stays real-valued. The two FFN shortcuts replace Spikformer's single MLP residual.
Where the width changes, the shortcut ``P`` is (``ffn_shortcut``):

* ``'free'`` (default): parameter-free, ``P1`` repeats every channel ``hidden/dim`` times and ``P2``
  averages the groups back, so ``P2(P1(x)) = x`` and the FFN has no real-valued weights at all
  (ReActNet widens and narrows its binary blocks by duplication in the same spirit). The model
  then has exactly the parameter count of SpikingJelly's Spikformer of the same size.
* ``'proj'``: a real 1x1 conv + BN (the core's ``Downsample`` at stride 1). This costs as many
  real multiply-adds as the FFN layer it bypasses, so the "binarized" FFN would do no less
  real-valued work than the full-precision one; offered for comparison.

``binary=False`` builds the full-precision twin (same graph, real 1x1 convs): the KD teacher.
Input: ``[N, C, H, W]`` images (the stem's first conv+BN runs once and is repeated over ``T``)
or ``[T', N, C, H, W]`` frames (``T = T'``). ``forward`` -> time-averaged logits ``[N, K]``,
``forward_seq`` -> ``[T, N, K]``.

Registered with timm: ``bw_spikformer_ti`` (256 dims, 4 blocks, 8 heads), ``bw_spikformer_8_384``,
``bw_spikformer_8_512``, ``bw_spikformer_8_768`` (224 px, patch 16) and
``bw_spikformer_4_384_cifar`` (32 px, patch 4).
"""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly.activation_based.layer.attention import SpikingSelfAttention
from spikingjelly.activation_based.model.spikformer import SpikformerPatchStem
from timm.models import register_model
from torch import nn

from ..layers import Downsample, SpikingConvUnit
from ..neuron import LIFNode
from .base import SpikingClassifier, entrypoint_kwargs

FFN_SHORTCUTS = ("proj", "free")


class ChannelRepeat(nn.Module):
    """Parameter-free widening shortcut ``[T, N, C, H, W] -> [T, N, k*C, H, W]``: channel ``c``
    is copied to ``c*k .. c*k+k-1`` (``repeat_interleave``)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.k, dim=2)


class ChannelGroupMean(nn.Module):
    """Parameter-free narrowing shortcut: mean over consecutive groups of ``k`` channels
    (the inverse of :class:`ChannelRepeat`)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, N, C, H, W = x.shape
        return x.view(T, N, C // self.k, self.k, H, W).mean(3)


def _ffn_shortcut(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    if in_ch == out_ch:
        return nn.Identity()
    if kind == "proj":
        return Downsample(in_ch, out_ch, 1)
    big, small = max(in_ch, out_ch), min(in_ch, out_ch)
    if big % small:
        raise ValueError(f"ffn_shortcut='free' needs widths that divide each other, "
                         f"got {in_ch} -> {out_ch}")
    return ChannelRepeat(big // small) if out_ch > in_ch else ChannelGroupMean(big // small)


class FFNUnit(SpikingConvUnit):
    """``x -> SN -> 1x1 Conv -> BN -> + shortcut(x)``: one (binary) FFN layer in its own shortcut.

    :class:`~sj_bwsnn.layers.SpikingConvUnit` with a 1x1 kernel and the FFN shortcut (``'proj'``
    or ``'free'``, see :func:`_ffn_shortcut`); works on ``[T, N, C, H, W]`` in SpikingJelly's
    multi-step mode.
    """

    def __init__(self, in_ch: int, out_ch: int, binary: bool, neuron: type,
                 neuron_kwargs: dict[str, Any], scaling: str = "channel",
                 detach_alpha: bool = True, shortcut: str = "proj"):
        super().__init__(in_ch, out_ch, 1, binary, neuron, neuron_kwargs, scaling, detach_alpha,
                         kernel_size=1, shortcut=_ffn_shortcut(shortcut, in_ch, out_ch))


class BWSpikformerBlock(nn.Module):
    """``x + SSA(x)`` (real) followed by two :class:`FFNUnit` (binary); ``[T, N, C, H, W]``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, binary: bool, neuron: type,
                 neuron_kwargs: dict[str, Any], scaling: str = "channel",
                 detach_alpha: bool = True, attn_threshold: float = 0.5,
                 ffn_shortcut: str = "free"):
        super().__init__()
        self.attn = SpikingSelfAttention(dim, num_heads, spiking_neuron=neuron, **neuron_kwargs)
        # Spikformer fires the attention map at threshold 0.5; SJ applies that only to its own
        # default neuron, so set it explicitly for ours.
        self.attn.attn_lif = neuron(step_mode="m", **{**neuron_kwargs,
                                                      "v_threshold": attn_threshold})
        hidden = int(dim * mlp_ratio)
        common = dict(binary=binary, neuron=neuron, neuron_kwargs=neuron_kwargs, scaling=scaling,
                      detach_alpha=detach_alpha, shortcut=ffn_shortcut)
        self.ffn = nn.Sequential(FFNUnit(dim, hidden, **common), FFNUnit(hidden, dim, **common))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, N, C, H, W = x.shape
        x = x + self.attn(x.flatten(3)).reshape(T, N, C, H, W)
        return self.ffn(x)


class BWSpikformer(SpikingClassifier):
    """Spikformer with binarized FFN layers (see module docstring).

    :param embed_dim, depth, num_heads, mlp_ratio: Transformer size (Spikformer's naming
        ``depth-embed_dim``, e.g. 8-384).
    :param img_size, patch_size: input side and SPS patch size (16 for 224 px, 4 for 32 px).
    :param T: time steps for static input.
    :param binary: 1-bit FFN layers (True) or the real-valued twin (False).
    :param neuron: neuron class (:class:`sj_bwsnn.neuron.LIFNode` default) used everywhere.
    :param neuron_kwargs: its keyword arguments (``step_mode`` is set to 'm' here).
    :param scaling, detach_alpha: weight-binarizer options (:mod:`sj_bwsnn.layers.binarize`).
    :param attn_threshold: firing threshold of the attention-map neuron (Spikformer: 0.5).
    :param ffn_shortcut: ``'proj'`` or ``'free'`` shortcut where the FFN width changes.
    """

    def __init__(self, embed_dim: int = 256, depth: int = 4, num_heads: int = 8,
                 mlp_ratio: float = 4.0, img_size: int = 224, patch_size: int = 16,
                 in_chans: int = 3, num_classes: int = 1000, T: int = 4, binary: bool = True,
                 neuron: type = LIFNode, neuron_kwargs: dict[str, Any] | None = None,
                 scaling: str = "channel", detach_alpha: bool = True,
                 attn_threshold: float = 0.5, ffn_shortcut: str = "free"):
        super().__init__()
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if ffn_shortcut not in FFN_SHORTCUTS:
            raise ValueError(f"ffn_shortcut must be one of {FFN_SHORTCUTS}, got {ffn_shortcut!r}")
        self.T, self.binary, self.num_classes = int(T), bool(binary), num_classes
        neuron_kwargs = dict(neuron_kwargs or {})
        neuron_kwargs.pop("step_mode", None)
        self.patch_embed = SpikformerPatchStem(img_size, img_size, patch_size, in_chans,
                                               embed_dim, spiking_neuron=neuron, **neuron_kwargs)
        self.blocks = nn.Sequential(*[
            BWSpikformerBlock(embed_dim, num_heads, mlp_ratio, binary, neuron, neuron_kwargs,
                              scaling, detach_alpha, attn_threshold, ffn_shortcut)
            for _ in range(depth)])
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        for m in self.modules():  # Spikformer's initialisation (SJ 2.0 Spikformer._init_weights)
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        pe = self.patch_embed
        if x.dim() == 4:
            # Static image: the first conv+BN(+pool) sees the same input at every step; run it
            # once on [N, ...] (plain nn.Sequential call: SJ's container wants [T, N, ...]).
            first = pe.stages[0]
            y = nn.Sequential.forward(first.conv_bn.block, x)
            y = first.neuron(y.unsqueeze(0).repeat(self.T, *([1] * y.dim())))
            y = pe.stages[1:](y)
            return y + pe.positional_encoding(y)  # SPS: relative position embedding as a residual
        if x.dim() == 5:
            return pe(x)  # SpikformerPatchStem's own forward on frames
        raise ValueError(f"expected [N, C, H, W] or [T, N, C, H, W] input, got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, embed_dim]``: the residual stream averaged over tokens."""
        return self.blocks(self._embed(x)).flatten(3).mean(-1)

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, N, num_classes]``."""
        return self.head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head


def _create(sizes: dict[str, int], pretrained: bool = False, **kwargs) -> BWSpikformer:
    kwargs = entrypoint_kwargs(pretrained, kwargs)
    # Sizes are defaults, so a recipe's model.kwargs (or a test) can shrink a registered model.
    for key, value in sizes.items():
        kwargs.setdefault(key, value)
    return BWSpikformer(**kwargs)


@register_model
def bw_spikformer_ti(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-Ti: 4 blocks, 256 dims, 8 heads (SJ 2.0's spikformer_ti size), 224 px."""
    return _create(dict(embed_dim=256, depth=4, num_heads=8, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_8_384(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-8-384: 8 blocks, 384 dims, 12 heads (our choice), 224 px."""
    return _create(dict(embed_dim=384, depth=8, num_heads=12, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_8_512(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-8-512: 8 blocks, 512 dims, 8 heads (Spikformer's ImageNet code), 224 px."""
    return _create(dict(embed_dim=512, depth=8, num_heads=8, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_8_768(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-8-768: 8 blocks, 768 dims, 12 heads (Spikformer's ImageNet code), 224 px."""
    return _create(dict(embed_dim=768, depth=8, num_heads=12, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_4_384_cifar(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-4-384 for 32x32 inputs (CIFAR): 4 blocks, 384 dims, 12 heads, patch 4."""
    return _create(dict(embed_dim=384, depth=4, num_heads=12, img_size=32, patch_size=4),
                   pretrained, **kwargs)
