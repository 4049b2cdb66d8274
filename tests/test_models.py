"""BW-ResNet family: timm names, binary layout, spikes into binary convs, reset_net."""

import pytest
import timm
import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

import sj_bwsnn  # noqa: F401  (registers the models)
from sj_bwsnn.layers import BinaryConv2d
from sj_bwsnn.neuron import IFNode


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("name,n_binary", [("bw_resnet18", 16), ("bw_resnet34", 32), ("bw_resnet_tiny", 6)])
def test_timm_names_resolve_with_binary_convs(name, n_binary):
    model = timm.create_model(name, num_classes=10, T=2)
    assert _count(model, BinaryConv2d) == n_binary
    # the stem, the downsample 1x1 convs and the classifier stay real-valued
    assert not isinstance(model.stem[0], BinaryConv2d) and type(model.fc) is nn.Linear
    twin = timm.create_model(name, num_classes=10, T=2, binary=False)
    assert _count(twin, BinaryConv2d) == 0
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in model.parameters())


def test_cifar_stem_forward_shapes_and_time_average():
    model = timm.create_model("bw_resnet18", num_classes=10, T=3, stem="cifar")
    x = torch.randn(2, 3, 32, 32)
    seq = model.forward_seq(x)
    functional.reset_net(model)
    assert seq.shape == (3, 2, 10)
    out = model(x)
    functional.reset_net(model)
    assert torch.allclose(out, seq.mean(0), atol=1e-6)


def test_binary_convs_receive_only_spikes():
    model = timm.create_model("bw_resnet_tiny", num_classes=10, T=2)
    inputs = []
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0]))
    model(torch.randn(4, 1, 8, 8) * 3)
    assert len(inputs) == 6
    for s in inputs:
        assert set(s.unique().tolist()) <= {0.0, 1.0}


def test_reset_net_leaves_no_state_and_runs_repeat_exactly():
    torch.manual_seed(0)
    model = timm.create_model("bw_resnet_tiny", num_classes=10, T=2)  # train-mode BN: batch stats
    x = torch.randn(3, 1, 8, 8) * 3
    with torch.no_grad():
        a = model(x)
        functional.reset_net(model)
        nodes = [m for m in model.modules() if isinstance(m, BaseNode)]
        assert nodes and all(isinstance(n.v, float) and n.v == 0.0 for n in nodes)
        b = model(x)
        c = model(x)  # without reset the state carries over and the output changes
    assert torch.equal(a, b)
    assert not torch.equal(b, c)


def test_frame_input_and_neuron_choice():
    model = timm.create_model("bw_resnet_tiny", num_classes=4, in_chans=2, T=2, neuron=IFNode,
                              neuron_kwargs={"v_reset": None})
    assert _count(model, IFNode) == 7
    out = model.forward_seq(torch.rand(5, 3, 2, 8, 8))  # T'=5 frames override T
    assert out.shape == (5, 3, 4)
    with pytest.raises(ValueError, match=r"got 3-D shape \(3, 8, 8\)"):
        model(torch.rand(3, 8, 8))


def test_training_step_updates_latent_weights():
    torch.manual_seed(0)
    model = timm.create_model("bw_resnet_tiny", num_classes=10, T=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    conv = next(m for m in model.modules() if isinstance(m, BinaryConv2d))
    w0 = conv.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.arange(8))
    loss.backward()
    opt.step()
    functional.reset_net(model)
    assert not torch.equal(conv.weight.detach(), w0)


def test_pretrained_is_refused():
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("bw_resnet18", pretrained=True)
