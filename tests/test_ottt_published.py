"""OTTT as published: no traces on the layer that sees the raw input (every model family), hard
resets refused, and the normalizer-free BW-ResNet of OTTT's nets (model.kwargs.norm: ws)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

import sj_bwsnn
from sj_bwsnn.deploy.packed import export_model
from sj_bwsnn.data import DataInfo
from sj_bwsnn.engine.methods import OTTT, input_layers, traced_layers
from sj_bwsnn.engine.recipe import recipe_from_dict
from sj_bwsnn.errors import UserError
from sj_bwsnn.layers import BinaryConv2d, binary_sign
from sj_bwsnn.layers.ws import BinaryWSConv2d, WSSpikingConvUnit, standardize_weight
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.models.bw_spikformer import BWSpikformer

pytestmark = pytest.mark.usefixtures("one_thread")

SOFT = {"v_reset": None, "decay_input": False, "detach_reset": True}


def models():
    torch.manual_seed(0)
    yield "bw_resnet", BWResNet((1, 1), (8, 16), stem="cifar", in_chans=2, num_classes=4, T=2,
                                neuron_kwargs=SOFT)
    yield "bw_resnet_ws", BWResNet((1, 1), (8, 16), stem="imagenet", in_chans=2, num_classes=4,
                                   T=2, neuron_kwargs=SOFT, norm="ws")
    yield "bw_spikformer", BWSpikformer(embed_dim=16, depth=1, num_heads=2, img_size=16,
                                        patch_size=4, num_classes=4, T=2, in_chans=2,
                                        neuron_kwargs=SOFT)


@pytest.mark.parametrize("frames", [False, True])
def test_the_skipped_layer_is_the_one_that_sees_the_raw_input(frames):
    x = torch.randn(2, 3, 2, 16, 16) if frames else torch.randn(3, 2, 16, 16)
    for name, model in models():
        raw = []

        def hook(m, inputs, out, m_id=None):
            if inputs[0].numel() == x.numel() and torch.equal(inputs[0].reshape(-1), x.reshape(-1)):
                raw.append(m)

        weighted = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
        handles = [m.register_forward_hook(hook) for m in weighted]
        model(x)
        for h in handles:
            h.remove()
        assert raw and {id(m) for m in raw} == {id(m) for m in input_layers(model)}, name
        traced = traced_layers(model)
        assert len(traced) == len(weighted) - 1 and all(id(m) != id(raw[0]) for m in traced), name


def test_ottt_refuses_hard_reset_neurons():
    model = BWResNet((1,), (8,), stem="cifar", in_chans=1, num_classes=4, T=2)  # SJ: hard reset
    with pytest.raises(UserError, match="soft-reset neurons.*'blocks.0.0.sn' resets to 0.0"):
        OTTT().train_step(model, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]),
                          lambda z, y, x: z.sum(), torch.optim.SGD(model.parameters(), lr=0.1))


def test_ws_conv_is_ottts_scaled_ws_and_the_binary_one_uses_the_one_binarizer():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    sj = layer.WSConv2d(3, 6, 3, gain=False).double()
    with torch.no_grad():
        sj.weight.copy_(w)
    fan_in = 27  # OTTT spiking_vgg.py:23-30, written out
    mean, var = w.mean((1, 2, 3), keepdim=True), w.var((1, 2, 3), keepdim=True)
    want = (w - mean) / (var * fan_in + 1e-4) ** 0.5
    torch.testing.assert_close(standardize_weight(w), want)
    torch.testing.assert_close(sj.get_weight(), want)
    conv = BinaryWSConv2d(3, 6, 3, step_mode="m").double()
    with torch.no_grad():
        conv.weight.copy_(w)
    wb = conv.binarized_weight()
    alpha = want.abs().mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(wb, alpha * binary_sign(want))
    # STE: |standardised w| < 1 everywhere, so the latent gradient is the identity through the
    # sign, then the standardisation's own Jacobian (alpha detached by default)
    g = torch.randn_like(wb)
    (got,) = torch.autograd.grad(wb, conv.weight, g)
    (ref,) = torch.autograd.grad(want, w, g)
    torch.testing.assert_close(got, ref)


def ws_model(binary=True):
    torch.manual_seed(0)
    return timm.create_model("bw_resnet_tiny", num_classes=10, T=2, norm="ws", binary=binary,
                             neuron_kwargs=SOFT)


def test_ws_model_has_no_bn_spikes_into_every_block_conv_and_nf_scaling():
    model = ws_model()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    units = [m for m in model.modules() if isinstance(m, WSSpikingConvUnit)]
    assert len(units) == 6 and all(isinstance(u.conv, BinaryWSConv2d) for u in units)
    var = 1.0  # OTTT spiking_resnet_imagenet.py:374-387, per unit: restart after a downsample
    for u in units:
        assert u.beta == pytest.approx(math.sqrt(var))
        var = (1.0 if not isinstance(u.shortcut, nn.Identity) else var) + 0.2 ** 2
    assert model.head_scale == pytest.approx(1 / math.sqrt(var))
    seen = []
    for u in units:
        u.conv.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        with torch.no_grad():
            u.scale.skip.fill_(1.0)  # skipinit starts at 0; open the branches
    model(torch.randn(4, 1, 8, 8))
    assert len(seen) == 6 and all(((s == 0) | (s == 1)).all() for s in seen)
    assert any(s.sum() > 0 for s in seen)
    # the two-stage schedule loads the real twin's weights into the 1-bit model
    assert ws_model(binary=False).state_dict().keys() == model.state_dict().keys()
    assert not any(isinstance(m, BinaryConv2d) for m in ws_model(binary=False).modules())


def test_ws_model_exports_and_reloads_bit_identically(tmp_path):
    model = ws_model()
    for m in model.modules():
        if isinstance(m, WSSpikingConvUnit):
            with torch.no_grad():
                m.scale.skip.fill_(0.7)
    model.eval()
    recipe = recipe_from_dict({"T": 2, "neuron": {"preset": "ottt"},
                               "model": {"name": "bw_resnet_tiny", "kwargs": {"norm": "ws"}}})
    export_model(model, recipe.to_dict(), DataInfo(10, 1, (8, 8)), tmp_path / "m.bwsnn")
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        a = model(x)
        functional.reset_net(model)
        b = sj_bwsnn.load_exported(tmp_path / "m.bwsnn")(x)
    assert torch.equal(a, b)


def test_bad_norm_and_head_are_one_line():
    for kw, match in (({"norm": "gn"}, "model.kwargs.norm must be one of bn, ws"),
                      ({"head": "mlp"}, "model.kwargs.head must be one of linear, dsr")):
        with pytest.raises(UserError, match=match):
            timm.create_model("bw_resnet_tiny", **kw)
