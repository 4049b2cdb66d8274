"""BW-Spikformer: which layers are binary, spike-driven convs, the SSA equations, shapes,
gradients, static/frame equivalence, parameter counts, registry."""

import pytest
import timm
import torch
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.model.spikformer import Spikformer, spikformer_ti
from torch import nn

import sj_bwsnn  # noqa: F401  (registers the models)
from sj_bwsnn.analysis.energy import energy_report
from sj_bwsnn.analysis.profile import is_spike_tensor
from sj_bwsnn.layers import BinaryConv2d, BinaryLinear, binary_sign
from sj_bwsnn.models.bw_spikformer import BWSpikformer, ChannelGroupMean, ChannelRepeat, SSAUnit
from sj_bwsnn.neuron import LIFNode

TINY = dict(embed_dim=16, depth=2, num_heads=2, img_size=16, patch_size=4, num_classes=5, T=2)


def tiny(**kw) -> BWSpikformer:
    torch.manual_seed(0)
    return BWSpikformer(**{**TINY, **kw})


@pytest.mark.parametrize("shortcut", ["proj", "free"])
def test_exactly_the_ffn_layers_are_binary(shortcut):
    m = tiny(ffn_shortcut=shortcut)
    binary = {n for n, mod in m.named_modules() if isinstance(mod, (BinaryConv2d, BinaryLinear))}
    assert binary == {f"blocks.{b}.ffn.{u}.conv" for b in range(2) for u in range(2)}
    for b in range(2):  # attention projections stay real-valued torch convs
        attn = m.blocks[b].attn
        assert type(attn.qkv_conv_bn[0]) is nn.Conv1d and type(attn.proj_conv_bn[0]) is nn.Conv1d
        assert attn.attn_lif.v_threshold == 0.5 and attn.qkv_lif.v_threshold == 1.0
        assert attn.scale == 0.125  # Spikformer imagenet/model.py:47, for every head width
        assert not hasattr(attn, "proj_lif")  # membrane shortcut: BN output joins the stream
    assert type(m.head) is nn.Linear
    # every neuron is ours (so the CuPy backend can apply), in multi-step mode
    neurons = [mod for mod in m.modules() if hasattr(mod, "v_threshold")]
    assert neurons and all(isinstance(n, LIFNode) and n.step_mode == "m" for n in neurons)
    twin = tiny(ffn_shortcut=shortcut, binary=False)
    assert not any(isinstance(mod, (BinaryConv2d, BinaryLinear)) for mod in twin.modules())
    # same state-dict keys and shapes: an FP checkpoint initialises the binary student (init_from)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in m.state_dict().items()}
    m.load_state_dict(twin.state_dict())


def test_binary_ffn_weight_is_alpha_sign():
    conv = tiny().blocks[0].ffn[0].conv
    w_b = conv.binarized_weight()
    alpha = conv.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(w_b, alpha * binary_sign(conv.weight))


@pytest.mark.parametrize("shortcut", ["proj", "free"])
def test_forward_backward_multi_step(shortcut):
    m = tiny(ffn_shortcut=shortcut).train()
    x = torch.randn(3, 3, 16, 16)
    out = m(x)
    assert out.shape == (3, 5)
    functional.reset_net(m)
    seq = m.forward_seq(x)
    assert seq.shape == (2, 3, 5)
    torch.testing.assert_close(seq.mean(0), out)  # same input, fresh state: same logits
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    for name in ("blocks.0.ffn.0.conv.weight", "blocks.1.ffn.1.conv.weight",
                 "blocks.0.attn.qkv_conv_bn.0.weight", "patch_embed.stages.0.conv_bn.block.0.weight",
                 "head.weight"):
        g = m.get_parameter(name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_static_input_equals_repeated_frames():
    m = tiny().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = m.forward_seq(x)
        functional.reset_net(m)
        b = m.forward_seq(x.unsqueeze(0).repeat(2, 1, 1, 1, 1))
        functional.reset_net(m)
        c = m.forward_seq(x[:1].unsqueeze(0).repeat(3, 1, 1, 1, 1))  # frames set T
        functional.reset_net(m)
        frames = x.unsqueeze(0).repeat(3, 1, 1, 1, 1)  # [3, 2, ...]: could be [N=3, T=2, ...]
        with pytest.raises(ValueError, match=r"looks like \[N, T, C, H, W\].*model.T = 3"):
            m.forward_seq(frames)
        m.T = 3  # as the message says: dimension 0 really is time
        d = m.forward_seq(frames)
    torch.testing.assert_close(a, b)
    assert c.shape == (3, 1, 5) and d.shape == (3, 2, 5)


def test_free_shortcut_round_trip_is_identity():
    x = torch.randn(2, 3, 4, 5, 5)
    y = ChannelRepeat(4)(x)
    assert y.shape == (2, 3, 16, 5, 5) and torch.equal(y[:, :, 4:8], x[:, :, 1:2].expand_as(y[:, :, 4:8]))
    torch.testing.assert_close(ChannelGroupMean(4)(y), x)
    m = tiny(ffn_shortcut="free")
    assert not any(type(mod) in (nn.Conv2d, layer.Conv2d) for mod in m.blocks.modules())


def test_bad_arguments():
    with pytest.raises(ValueError, match="ffn_shortcut"):
        tiny(ffn_shortcut="nope")
    with pytest.raises(ValueError, match="T must be"):
        tiny(T=0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        tiny()(torch.randn(3, 16, 16))


def test_registered_sizes():
    names = set(timm.list_models("bw_spikformer*"))
    assert names == {"bw_spikformer_ti", "bw_spikformer_8_384", "bw_spikformer_8_512",
                     "bw_spikformer_8_768", "bw_spikformer_4_384_cifar"}
    m = timm.create_model("bw_spikformer_ti", ffn_shortcut="free", T=1)
    # with a parameter-free FFN shortcut the model has exactly the weights of SJ's spikformer_ti
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in spikformer_ti().parameters())
    c = timm.create_model("bw_spikformer_4_384_cifar", num_classes=10, embed_dim=24, depth=1,
                          num_heads=2, T=1)
    assert c.patch_embed.patch_size == 4 and c.patch_embed.grid_size == (8, 8)
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("bw_spikformer_ti", pretrained=True)


def spiking_tiny(binary: bool = True, **kw) -> BWSpikformer:
    """A tiny BW-Spikformer (16x16 input, 16 tokens, 3 blocks) in eval mode whose every neuron,
    attention included, fires: larger conv weights, random BN statistics and shifts."""
    m = tiny(binary=binary, depth=3, **kw).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_var.uniform_(0.5, 2.0)
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.bias.uniform_(0.0, 1.5)
            if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                mod.weight.normal_(0, 2 / mod.weight[0].numel() ** 0.5)
        for b in m.blocks:  # dense Q, K, V so that the attention map crosses 0.5
            b.attn.qkv_conv_bn[1].bias.uniform_(1.0, 2.0)
    return m


BLOCK_CONVS = ("attn.qkv_conv_bn.0", "attn.proj_conv_bn.0", "ffn.0.conv", "ffn.1.conv")


@pytest.mark.parametrize("binary", [True, False])
def test_every_block_conv_receives_only_spikes(binary):
    """q/k/v (one fused conv), proj and both FFN convs of every block see {0, 1} only, in the
    binary model and its FP twin, although the residual stream they read is real-valued."""
    torch.manual_seed(0)
    m = spiking_tiny(binary)
    names = {f"blocks.{b}.{c}" for b in range(3) for c in BLOCK_CONVS}
    seen, stream = {}, []
    for name, mod in m.named_modules():
        if name in names:
            mod.register_forward_hook(lambda mod, inp, out, name=name: seen.update({name: inp[0]}))
        if name.startswith("blocks.") and name.count(".") == 1:
            mod.register_forward_hook(lambda mod, inp, out: stream.append(inp[0]))
    with torch.no_grad():
        m(torch.rand(4, 3, 16, 16))
    assert set(seen) == names
    for name, x in seen.items():
        assert is_spike_tensor(x), name
        assert 0 < x.mean() < 1, name  # spikes do flow, including the attention map into proj
    assert not any(is_spike_tensor(x) for x in stream[1:])  # the stream into blocks 1, 2 is real
    assert len([mod for mod in m.modules() if isinstance(mod, (nn.Conv1d, nn.Conv2d))
                and mod not in [m.get_submodule(n) for n in names]]) == 5  # the SPS stem's convs


def test_energy_counts_every_block_conv_as_sops():
    """``sj-bwsnn energy``'s report: every block conv is a spike-input layer (SOPs, no MACs); the
    only MAC layers are the stem's first conv (pixels) and the head (token mean of the stream)."""
    torch.manual_seed(0)
    rep = energy_report(spiking_tiny(), [torch.rand(4, 3, 16, 16)], T=2)
    kinds = {x["name"]: x for x in rep["layers"]}
    for b in range(3):
        for c in BLOCK_CONVS:
            layer_ = kinds[f"blocks.{b}.{c}"]
            assert layer_["input"] == "spike" and layer_["macs"] == 0 and layer_["sops"] > 0
    assert {n for n, x in kinds.items() if x["input"] == "real"} == {
        "patch_embed.stages.0.conv_bn.block.0", "head"}


def _lif(x: torch.Tensor, tau: float = 2.0, v_th: float = 1.0) -> torch.Tensor:
    """Multi-step LIF written out (decay_input, hard reset to 0, spike when v >= v_th)."""
    v, out = torch.zeros_like(x[0]), []
    for x_t in x:
        v = v + (x_t - v) / tau
        s = (v >= v_th).to(x.dtype)
        v = v * (1 - s)
        out.append(s)
    return torch.stack(out)


def _bn(y: torch.Tensor, bn: nn.Module) -> torch.Tensor:  # eval-mode BN over dim 2
    shape = (1, 1, -1, 1)
    return ((y - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def test_ssa_unit_equals_spikformer_equations_float64():
    """SSAUnit against Spikformer's SSA written out per head (imagenet/model.py:65-92) plus the
    input neuron and the membrane shortcut: x + BN(W_p SN_a(Q K^T V * 0.125))."""
    torch.manual_seed(0)
    T, N, C, H, W, heads = 3, 2, 8, 4, 4, 2
    unit = SSAUnit(C, heads, LIFNode, {"tau": 2.0, "backend": "torch"}).double().eval()
    with torch.no_grad():
        for bn in (unit.qkv_conv_bn[1], unit.proj_conv_bn[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(0.5, 1.5)
        for conv in (unit.qkv_conv_bn[0], unit.proj_conv_bn[0]):
            conv.weight.normal_(0, 0.5)
    x = torch.randn(T, N, C, H, W, dtype=torch.float64) * 2
    with torch.no_grad():
        got = unit(x)
    functional.reset_net(unit)

    s = _lif(x).flatten(3)  # [T, N, C, L]: SN_0
    qkv = _bn(torch.einsum("oc,tncl->tnol", unit.qkv_conv_bn[0].weight[:, :, 0], s),
              unit.qkv_conv_bn[1])
    q, k, v = _lif(qkv).chunk(3, dim=2)  # the fused conv's channels are [W_q; W_k; W_v]
    d = C // heads
    a = torch.cat([  # per head, tokens as rows as in Spikformer: (Q K^T V) * 0.125
        ((q[:, :, h * d:(h + 1) * d].transpose(-1, -2) @ k[:, :, h * d:(h + 1) * d])
         @ v[:, :, h * d:(h + 1) * d].transpose(-1, -2)).transpose(-1, -2) * 0.125
        for h in range(heads)], dim=2)
    a = _lif(a, v_th=0.5)
    assert 0 < a.mean() < 1 and 0 < s.mean() < 1  # the reference is not trivially zero
    y = _bn(torch.einsum("oc,tncl->tnol", unit.proj_conv_bn[0].weight[:, :, 0], a),
            unit.proj_conv_bn[1])
    torch.testing.assert_close(got, x + y.reshape(T, N, C, H, W), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,dim,heads,paper_m,extras_m", [
    ("bw_spikformer_8_384", 384, 12, 16.81, (16.82, 16.81, 16.83)),
    ("bw_spikformer_8_512", 512, 8, 29.68, (29.69, 29.68, 29.71)),
    ("bw_spikformer_8_768", 768, 12, 66.34, (66.34, 66.33, 66.36))])
def test_parameter_counts_equal_spikformer(name, dim, heads, paper_m, extras_m):
    """Exactly SpikingJelly 2.0's Spikformer of the same size (built on the meta device: no
    memory); within 0.05 M of the Spikformer paper's table. The official code (imagenet/model.py)
    also builds biases on proj_conv, fc1_conv, fc2_conv and two unused LayerNorms per block; the
    counts with them (docs/models.md) do not reproduce the table either."""
    with torch.device("meta"):
        ours = sum(p.numel() for p in timm.create_model(name, T=1).parameters())
        sj = sum(p.numel() for p in Spikformer(embed_dims=dim, num_heads=heads, depths=8).parameters())
    assert ours == sj
    assert abs(ours / 1e6 - paper_m) < 0.05
    biases, norms = 8 * (dim + 4 * dim + dim), 8 * 2 * (2 * dim)
    assert tuple(round((ours + e) / 1e6, 2) for e in (biases, norms, biases + norms)) == extras_m
