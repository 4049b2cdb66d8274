"""BW-Spikformer: a spike-driven Spikformer with a 1-bit FFN (SEI-BWSNN's Transformer variant).

One block, on the real-valued residual stream ``x`` (``[T, N, C, H, W]``, tokens = ``H*W``); every
``W`` is a 1x1 conv over tokens, every ``SN`` a multi-step spiking neuron (output in {0, 1})::

    s = SN_0(x)                                                    spikes into attention
    Q = SN_q(BN(W_q s)),  K = SN_k(BN(W_k s)),  V = SN_v(BN(W_v s))  real W, split into heads
    x = x + BN(W_p SN_a(Q K^T V * 0.125))                          SN_a fires at 0.5; real W_p
    h = P1(x) + BN(W_1 SN_1(x))                                    W_1: dim -> hidden, 1-bit
    x = P2(h) + BN(W_2 SN_2(h))                                    W_2: hidden -> dim, 1-bit

Model: SPS patch stem (real) -> ``depth`` blocks -> mean over tokens -> real linear classifier
(per step) -> mean over ``T``. Every conv of every block receives spikes: ``W_q, W_k, W_v`` those of
``SN_0``, ``W_p`` those of ``SN_a``, ``W_1, W_2`` those of ``SN_1, SN_2`` (forward hooks in
tests/test_spikformer.py check it, binary model and FP twin), so ``sj-bwsnn energy`` counts them as
synaptic operations (accumulates), not MACs. BatchNorm follows every conv: before the neuron for
Q/K/V (``BatchNorm1d`` over ``[T*N, C, tokens]``), before the shortcut addition for ``W_p``, ``W_1``
and ``W_2`` (``BatchNorm2d`` in the FFN, the same statistics); the stream itself is never normalised.

Sources, checked line by line (ZK-Zhou/spikformer at 6212689; SpikingJelly 2.0.0 as installed):

* Spiking self-attention: Spikformer's ``imagenet/model.py`` ``SSA`` (lines 41-92): Q, K, V each
  conv -> BN -> LIF (48-58), ``scale = 0.125`` for every head width (47; ``cifar10/model.py``:47 too),
  ``q @ (k^T @ v) * scale`` (85-86), the attention LIF at threshold 0.5 (59, 89), proj conv -> BN
  (91). Built here from SpikingJelly 2.0's ``layer/attention.py`` ``SpikingSelfAttention``: one fused
  qkv ``Conv1d`` + ``BatchNorm1d`` (379-385), its kernel ``_ssa_kernel_torch`` (402-408, the same
  product in channel-major layout) and the same ``scale = 0.125`` (377).
* Spike-driven input and membrane shortcut: the Spike-Driven Transformer as SpikingJelly 2.0 ships
  it, ``layer/attention.py`` ``SpikeDrivenSelfAttention.forward`` (849-865: ``identity = x``, a
  neuron on the stream first, ``proj_bn(proj_conv(.)) + identity`` with no neuron after the
  projection) and ``model/spike_driven_transformer.py`` ``_MLP.forward`` (75-82: neuron -> conv ->
  BN -> + identity). The same pre-activation layout as MS-ResNet and as the FFN units here.
* Multi-shortcut FFN: every binary layer inside its own shortcut, as the core's blocks
  (:mod:`sj_bwsnn.layers.blocks`, Bi-Real Net / ReActNet); 1-bit weights on the FFN only, as the
  SEI-BWSNN abstract says ("binarizing FFN layers in a Transformer architecture").
* SPS patch stem: SpikingJelly 2.0's ``SpikformerPatchStem`` (``model/spikformer.py``:220-348), the
  official ``SPS`` (``imagenet/model.py``:114-176) with its relative position embedding.
* Initialisation: truncated normal (std 0.02) on every conv and linear, zero biases: SpikingJelly
  2.0's ``Spikformer._init_weights`` (``model/spikformer.py``:675-683). Spikformer's own
  ``_init_weights`` (``imagenet/model.py``:219-226) touches ``nn.Linear`` only: in its CIFAR model
  every q/k/v/proj/MLP layer is a Linear, in its ImageNet model only the head is, and the convs
  keep PyTorch's default initialisation.

Deliberate differences from Spikformer's official code:

1. Spike-driven attention. Spikformer adds the attention and MLP outputs (spikes) to the stream
   (``imagenet/model.py``:108-109), so from the second block on its q/k/v convs receive sums of
   spikes (0, 1, 2, ...), not spikes; here ``SN_0`` turns the stream into spikes first (SDT).
2. Membrane shortcut. No neuron after ``W_p`` or ``W_2`` (Spikformer: ``proj_lif``, ``fc2_lif``):
   the BN output joins the real-valued stream, as in the SDT and MS-ResNet.
3. FFN as two multi-shortcut units with pre-activation neurons and 1-bit weights (Spikformer: one
   residual around conv -> BN -> LIF -> conv -> BN -> LIF, real weights).
4. No bias on the proj and FFN convs (BN follows them; SpikingJelly 2.0 drops them too) and no
   ``norm1`` / ``norm2`` LayerNorms (the official ``Block`` builds them, ``forward`` never calls
   them). Parameter counts therefore equal SpikingJelly 2.0's Spikformer of the same size:
   16.80 / 29.66 / 66.30 M for 8-384 / 8-512 / 8-768, 0.01-0.04 M below the Spikformer paper's
   16.81 / 29.68 / 66.34 M, which count some of those extras (docs/models.md).

``ffn_shortcut``: where the FFN width changes, the shortcut ``P`` is

* ``'free'`` (default): parameter-free, ``P1`` repeats every channel ``hidden/dim`` times and ``P2``
  averages the groups back, so ``P2(P1(x)) = x`` and the FFN has no real-valued weights at all
  (ReActNet widens and narrows its binary blocks by duplication in the same spirit); the model
  has exactly the parameter count of SpikingJelly's Spikformer of the same size;
* ``'proj'``: a real 1x1 conv + BN (the core's ``Downsample`` at stride 1). It costs as many real
  multiply-adds as the FFN layer it bypasses; offered for comparison.

``binary=False`` builds the full-precision twin (same graph, real 1x1 convs): the KD teacher.
Input: ``[N, C, H, W]`` images (the stem's first conv+BN runs once and is repeated over ``T``)
or time-first ``[T', N, C, H, W]`` frames (``T = T'``); anything else, ``[N, T, C, H, W]`` included,
is refused at the entry with one line (:mod:`sj_bwsnn.layers.shape`). ``forward`` -> time-averaged
logits ``[N, K]``, ``forward_seq`` -> ``[T, N, K]``.

Registered with timm: ``bw_spikformer_ti`` (256 dims, 4 blocks, 8 heads), ``bw_spikformer_8_384``,
``bw_spikformer_8_512``, ``bw_spikformer_8_768`` (224 px, patch 16) and
``bw_spikformer_4_384_cifar`` (32 px, patch 4); each entrypoint says where its size comes from.
"""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly.activation_based import layer
from spikingjelly.activation_based.layer.attention import SpikingSelfAttention
from spikingjelly.activation_based.model.spikformer import SpikformerPatchStem
from timm.models import register_model
from torch import nn

from ..layers import Downsample, SpikingConvUnit, check_model_input, check_seq
from ..neuron import LIFNode
from .base import SpikingClassifier, entrypoint_kwargs

FFN_SHORTCUTS = ("proj", "free")
SSA_SCALE = 0.125  # Spikformer imagenet/model.py:47 and SpikingJelly 2.0 attention.py:377


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


class SSAUnit(nn.Module):
    """Spike-driven spiking self-attention in a membrane shortcut, ``[T, N, C, H, W]``::

        x + BN(W_p SN_a(Q K^T V * 0.125)),   Q, K, V = SN(BN(W_{q,k,v} SN_0(x)))   (per head)

    ``sn`` is ``SN_0``; ``qkv_conv_bn``, ``qkv_lif``, ``attn_lif`` and ``proj_conv_bn`` carry
    SpikingJelly 2.0's ``SpikingSelfAttention`` names, layers and kernel (module docstring), without
    its ``proj_lif``: the projection's BN output joins the stream (membrane shortcut).
    All convs real-valued (SEI-BWSNN binarizes the FFN only).
    """

    def __init__(self, dim: int, num_heads: int, neuron: type, neuron_kwargs: dict[str, Any],
                 attn_threshold: float = 0.5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.scale = dim, num_heads, SSA_SCALE
        self.sn = neuron(step_mode="m", **neuron_kwargs)
        self.qkv_conv_bn = layer.SeqToANNContainer(nn.Conv1d(dim, 3 * dim, 1, bias=False),
                                                   nn.BatchNorm1d(3 * dim))
        self.qkv_lif = neuron(step_mode="m", **neuron_kwargs)
        # Spikformer fires the attention map at threshold 0.5 (imagenet/model.py:59)
        self.attn_lif = neuron(step_mode="m", **{**neuron_kwargs, "v_threshold": attn_threshold})
        self.proj_conv_bn = layer.SeqToANNContainer(nn.Conv1d(dim, dim, 1, bias=False),
                                                    nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_seq(x, type(self).__name__, self.dim)
        T, N, C, H, W = x.shape
        qkv = self.qkv_lif(self.qkv_conv_bn(self.sn(x).flatten(3)))  # spikes [T, N, 3C, L]
        qkv = qkv.reshape(T, N, 3, self.num_heads, C // self.num_heads, H * W)
        a = SpikingSelfAttention._ssa_kernel_torch(qkv, self.scale)  # (Q K^T V)^T * scale
        a = self.attn_lif(a).reshape(T, N, C, H * W)
        return x + self.proj_conv_bn(a).reshape(T, N, C, H, W)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, scale={self.scale}"


class BWSpikformerBlock(nn.Module):
    """:class:`SSAUnit` (real, spike-driven) followed by two :class:`FFNUnit` (binary);
    ``[T, N, C, H, W]`` in and out (equations in the module docstring)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, binary: bool, neuron: type,
                 neuron_kwargs: dict[str, Any], scaling: str = "channel",
                 detach_alpha: bool = True, attn_threshold: float = 0.5,
                 ffn_shortcut: str = "free"):
        super().__init__()
        self.dim = dim
        self.attn = SSAUnit(dim, num_heads, neuron, neuron_kwargs, attn_threshold)
        hidden = int(dim * mlp_ratio)
        common = dict(binary=binary, neuron=neuron, neuron_kwargs=neuron_kwargs, scaling=scaling,
                      detach_alpha=detach_alpha, shortcut=ffn_shortcut)
        self.ffn = nn.Sequential(FFNUnit(dim, hidden, **common), FFNUnit(hidden, dim, **common))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_seq(x, type(self).__name__, self.dim)
        return self.ffn(self.attn(x))


class BWSpikformer(SpikingClassifier):
    """Spike-driven Spikformer with binarized FFN layers (see module docstring).

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
        self.in_chans = in_chans
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
        # SpikingJelly 2.0's Spikformer._init_weights (model/spikformer.py:675-683), not the
        # official code's, which initialises nn.Linear layers only (module docstring)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        check_model_input(x, type(self).__name__, self.T, self.in_chans)
        pe = self.patch_embed
        if x.dim() == 4:
            # Static image: the first conv+BN(+pool) sees the same input at every step; run it
            # once on [N, ...] (plain nn.Sequential call: SJ's container wants [T, N, ...]).
            first = pe.stages[0]
            y = nn.Sequential.forward(first.conv_bn.block, x)
            y = first.neuron(y.unsqueeze(0).repeat(self.T, *([1] * y.dim())))
            y = pe.stages[1:](y)
            return y + pe.positional_encoding(y)  # SPS: relative position embedding as a residual
        return pe(x)  # [T', N, C, H, W] frames: SpikformerPatchStem's own forward

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
    """BW-Spikformer-Ti: 4 blocks, 256 dims, 8 heads, 224 px (SpikingJelly 2.0's ``spikformer_ti``
    size, ``model/spikformer.py``:768-780; not a size of the Spikformer paper)."""
    return _create(dict(embed_dim=256, depth=4, num_heads=8, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_8_384(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-8-384: 8 blocks, 384 dims (Spikformer paper's ImageNet table), 224 px. 12 heads
    is our choice: the official ImageNet code builds only 8-512; 384 dims have 12 heads in its
    CIFAR code (``cifar10/cifar10.yml``) and in SpikingJelly 2.0's ``spikformer_s``."""
    return _create(dict(embed_dim=384, depth=8, num_heads=12, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_8_512(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-8-512: 8 blocks, 512 dims, 8 heads, 224 px: the one size Spikformer's official
    ImageNet code builds (``imagenet/model.py``:250-253)."""
    return _create(dict(embed_dim=512, depth=8, num_heads=8, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_8_768(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-8-768: 8 blocks, 768 dims (Spikformer paper's ImageNet table), 224 px. 12 heads
    is our choice (64 channels per head, as in 8-512 and ViT-B, the width the fixed 0.125 = 1/8
    scale suits); Spikformer's official code has no 8-768 model."""
    return _create(dict(embed_dim=768, depth=8, num_heads=12, img_size=224, patch_size=16),
                   pretrained, **kwargs)


@register_model
def bw_spikformer_4_384_cifar(pretrained: bool = False, **kwargs) -> BWSpikformer:
    """BW-Spikformer-4-384 for 32x32 inputs (CIFAR): 4 blocks, 384 dims, 12 heads, patch 4, as
    Spikformer's official CIFAR-10 setting (``cifar10/cifar10.yml``:3-6)."""
    return _create(dict(embed_dim=384, depth=4, num_heads=12, img_size=32, patch_size=4),
                   pretrained, **kwargs)
