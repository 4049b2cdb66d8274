"""binarize(): selection, weight/step-mode preservation, and one training step on SJ/timm models."""

import pytest
import timm
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.model import qkformer, spiking_resnet, spikformer
from torch import nn

import sj_bwsnn
from sj_bwsnn import BinaryConv1d, BinaryConv2d, BinaryLinear, binarize
from sj_bwsnn.errors import UserError
from sj_bwsnn.layers import binarize_weight
from sj_bwsnn.neuron import LIFNode


def train_one_step(model, x, y, out_fn=lambda o: o):
    """One SGD step: gradients reach the latent weights of the binary layers and move them.

    Not every layer needs a nonzero gradient: a deep spiking layer may be silent on tiny random
    input (no spikes in, no weight gradient), so at least half must have one."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bins = [m for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryConv1d, BinaryLinear))]
    before = [m.weight.detach().clone() for m in bins]
    loss = F.cross_entropy(out_fn(model(x)), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert bins and all(m.weight.grad is not None and torch.isfinite(m.weight.grad).all() for m in bins)
    assert sum(bool(m.weight.grad.abs().sum() > 0) for m in bins) >= len(bins) / 2
    opt.step()
    functional.reset_net(model)
    assert any(not torch.equal(b, m.weight) for b, m in zip(before, bins))


def test_plain_torch_layers_keep_weights_and_single_step_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1, bias=False),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 6), nn.Linear(6, 4))
    old = net[2].weight.detach().clone(), net[4].weight.detach().clone(), net[4].bias.detach().clone()
    report = binarize(net)
    assert report.names == ["2", "4"]  # first conv "0" and classifier "5" (last linear) stay real
    assert {n for n, _ in report.kept} == {"0", "5"}
    assert type(net[0]) is nn.Conv2d and type(net[5]) is nn.Linear
    conv, fc = net[2], net[4]
    assert isinstance(conv, BinaryConv2d) and conv.step_mode == "s" and conv.bias is None
    assert conv.stride == (2, 2) and conv.padding == (1, 1)
    assert torch.equal(conv.weight, old[0]) and torch.equal(fc.weight, old[1])
    assert torch.equal(fc.bias, old[2])
    x = torch.randn(2, 3, 8, 8)
    h = F.relu(net[0](x))
    expect = F.conv2d(h, binarize_weight(old[0]), None, 2, 1)
    torch.testing.assert_close(net[2](h), expect)  # 4-D input works: built with step_mode='s'
    assert net(x).shape == (2, 4)
    assert report.binary_weights == old[0].numel() + old[1].numel()
    assert "binarized 2 layers" in str(report) and "kept real: first conv" in str(report)
    again = binarize(net)
    assert len(again) == 0  # already binary: nothing more to do
    # ... and the second report still counts every weight and the 1-bit ones
    assert (again.total_weights, again.binary_weights) == (report.total_weights, report.binary_weights)


def test_patterns_and_keep_first_last():
    net = spiking_resnet.spiking_resnet18(spiking_neuron=LIFNode, num_classes=4)
    r = binarize(net, include="layer1.*", exclude=["*.conv2"])
    assert r.names == ["layer1.0.conv1", "layer1.1.conv1"]
    assert ("layer1.0.conv2", "excluded by pattern") in r.kept
    r = binarize(net, exclude="*downsample*", keep_first_last=False)
    assert "conv1" in r.names and "fc" in r.names
    assert not any("downsample" in n for n in r.names)
    with pytest.raises(UserError, match="include pattern 'layer9.*' matches no"):
        binarize(net, include="layer9.*")
    with pytest.raises(UserError, match="exclude pattern 'nope'"):
        binarize(net, exclude="nope")


def test_subclasses_are_left_alone():
    net = nn.Sequential(layer.WSConv2d(1, 2, 3), nn.Conv3d(2, 2, 1), nn.Conv2d(2, 2, 3),
                        nn.Conv2d(2, 2, 3), nn.Linear(2, 2))
    r = binarize(net)
    assert r.names == ["2", "3"]  # the WSConv2d is the first conv: "2" is not protected
    assert type(net[0]) is layer.WSConv2d and type(net[1]) is nn.Conv3d
    kept = dict(r.kept)
    assert kept["0"] == "WSConv2d has no binary twin" and kept["1"] == "Conv3d has no binary twin"


def test_sj_spiking_resnet18_trains_one_step(monkeypatch):
    calls = []
    real = functional.invalidate_reset_cache
    monkeypatch.setattr(functional, "invalidate_reset_cache", lambda n: (calls.append(n), real(n)))
    torch.manual_seed(0)
    net = spiking_resnet.spiking_resnet18(spiking_neuron=LIFNode, num_classes=4)
    functional.set_step_mode(net, "m")
    r = binarize(net)
    assert calls == [net]
    assert len(r) == 19 and "conv1" not in r.names and "fc" not in r.names
    assert all(rep.step_mode == "m" for rep in r)  # SJ layers keep their own step mode
    x = torch.randn(2, 2, 3, 16, 16)  # [T, N, C, H, W]
    train_one_step(net, x, torch.tensor([0, 3]), out_fn=lambda o: o.mean(0))


def test_sj_spikformer_binary_ffn_trains_one_step():
    """SEI-BWSNN's recipe on SJ's own Spikformer: 1-bit MLP (1x1 Conv1d), attention left real."""
    torch.manual_seed(0)
    net = spikformer.spikformer_ti(T=1, img_size_h=32, img_size_w=32, num_classes=4,
                                   spiking_neuron=LIFNode)
    r = binarize(net, include="*mlp*")
    assert r.names == [f"blocks.{b}.mlp.fc{i}.0" for b in range(4) for i in (1, 2)]
    assert all(isinstance(net.get_submodule(n), BinaryConv1d) for n in r.names)
    assert type(net.blocks[0].attn.qkv_conv_bn[0]) is nn.Conv1d  # attention untouched
    fc1 = net.blocks[0].mlp.fc1[0]
    x = (torch.rand(2, fc1.in_channels, 5) > 0.5).float()
    assert torch.equal(fc1(x), nn.functional.conv1d(x, fc1.binarized_weight()))
    train_one_step(net, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), out_fn=lambda o: o.mean(0))
    # without include, the SPS stem convs and every Conv1d (attention too) become binary
    net = spikformer.spikformer_ti(T=1, img_size_h=32, img_size_w=32, num_classes=4,
                                   spiking_neuron=LIFNode)
    r = binarize(net)
    assert "blocks.0.attn.qkv_conv_bn.0" in r.names and "patch_embed.stages.1.conv_bn.block.0" in r.names
    assert ("head", "classifier (keep_first_last=True)") in r.kept


def test_sj_qkformer_trains_one_step():
    torch.manual_seed(0)
    net = qkformer.QKFormer(T=2, num_classes=4, embed_dims=16, num_heads=(1, 1, 1),
                            depths=(1, 1, 1), spiking_neuron=LIFNode)
    r = binarize(net)
    assert "patch_embed1.conv1" not in r.names
    assert all(isinstance(net.get_submodule(n), (BinaryConv2d, BinaryConv1d)) for n in r.names)
    assert any(isinstance(net.get_submodule(n), BinaryConv1d) for n in r.names)
    train_one_step(net, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))


def test_timm_model_and_our_own():
    torch.manual_seed(0)
    # zero_init_last=False: timm zero-inits each block's last BN gamma, which would zero the
    # gradient of both convs in every block on the first step
    net = timm.create_model("resnet10t", num_classes=3, zero_init_last=False)
    r = binarize(net)
    assert ("fc", "classifier (keep_first_last=True)") in r.kept  # found via get_classifier()
    assert r.names[0] == "conv1.3"  # resnet10t's deep stem: only its first conv stays real
    train_one_step(net, torch.randn(2, 3, 32, 32), torch.tensor([0, 2]))
    # the FP BW-Spikformer twin turns into a network with every Conv2d/Linear binary but stem/head
    fp = sj_bwsnn.models.BWSpikformer(embed_dim=16, depth=1, num_heads=2, img_size=16,
                                      patch_size=4, num_classes=3, T=1, binary=False)
    r = binarize(fp, include="blocks.*.ffn.*.conv")
    assert r.names == ["blocks.0.ffn.0.conv", "blocks.0.ffn.1.conv"]
    assert all(rep.step_mode == "m" for rep in r)


def test_binarize_keeps_the_parameter_objects_so_an_existing_optimizer_still_trains_them():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(1, 3, 8, 8))
    weight = net[2].weight
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    binarize(net)
    assert isinstance(net[2], BinaryConv2d) and net[2].weight is weight
    before = weight.detach().clone()
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    assert not torch.equal(weight, before)
