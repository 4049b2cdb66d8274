"""BW-Spikformer: which layers are binary, shapes, gradients, static/frame equivalence, registry."""

import pytest
import timm
import torch
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.model.spikformer import spikformer_ti
from torch import nn

import sj_bwsnn  # noqa: F401  (registers the models)
from sj_bwsnn.layers import BinaryConv2d, BinaryLinear, binary_sign
from sj_bwsnn.models.bw_spikformer import BWSpikformer, ChannelGroupMean, ChannelRepeat
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
        c = m.forward_seq(x.unsqueeze(0).repeat(3, 1, 1, 1, 1))  # frames set T
    torch.testing.assert_close(a, b)
    assert c.shape == (3, 2, 5)


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
