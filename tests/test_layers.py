"""BinaryConv2d / BinaryLinear in both step modes, and as drop-ins in a SpikingJelly network."""

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron

from sj_bwsnn.layers import BinaryConv2d, BinaryLinear, MultiShortcutBasicBlock
from sj_bwsnn.neuron import LIFNode


def test_conv_forward_uses_exactly_binarized_weight_in_both_modes():
    torch.manual_seed(0)
    conv = BinaryConv2d(3, 8, 3, padding=1, step_mode="s")
    x = (torch.rand(4, 2, 3, 6, 6) > 0.5).float()
    wb = conv.binarized_weight()
    single = torch.stack([conv(x[t]) for t in range(4)])
    assert torch.allclose(single[0], F.conv2d(x[0], wb, padding=1))
    conv.step_mode = "m"
    multi = conv(x)
    assert multi.shape == (4, 2, 8, 6, 6)
    assert torch.allclose(multi, single, atol=1e-6)
    # only +-alpha values per channel
    for c in range(8):
        assert len(set(wb[c].detach().abs().flatten().tolist())) == 1


def test_linear_forward_and_shapes():
    torch.manual_seed(0)
    fc = BinaryLinear(5, 3, step_mode="m")
    x = torch.rand(2, 4, 5)
    y = fc(x)
    assert torch.allclose(y, x @ fc.binarized_weight().T + fc.bias)
    with pytest.raises(ValueError, match=r"\[T, N"):
        fc(torch.rand(4, 5))


def test_conv_multistep_rejects_4d_input():
    conv = BinaryConv2d(3, 4, 3, step_mode="m")
    with pytest.raises(ValueError, match="5-D"):
        conv(torch.rand(2, 3, 8, 8))


def test_latent_weights_stay_real_and_get_gradients():
    conv = BinaryConv2d(2, 4, 3, step_mode="s")
    w0 = conv.weight.detach().clone()
    conv(torch.rand(1, 2, 5, 5)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert torch.equal(conv.weight.detach(), w0)
    assert len(set(conv.weight.detach().abs().flatten().tolist())) > 2


def test_drop_in_to_spikingjelly_network():
    """The docs/models.md example: our layers inside a plain SpikingJelly multi-step network."""
    net = torch.nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1, bias=False), layer.BatchNorm2d(8), neuron.LIFNode(),
        BinaryConv2d(8, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.LIFNode(),
        layer.Flatten(), BinaryLinear(8 * 8 * 8, 10),
    )
    functional.set_step_mode(net, "m")
    x = torch.rand(4, 2, 1, 8, 8)
    out = net(x)
    assert out.shape == (4, 2, 10)
    out.mean(0).sum().backward()
    assert net[3].weight.grad is not None
    functional.reset_net(net)


def test_multi_shortcut_block_multistep_and_spike_inputs():
    torch.manual_seed(0)
    block = MultiShortcutBasicBlock(8, 16, 2, True, LIFNode, {})
    seen = []
    for m in block.modules():
        if isinstance(m, BinaryConv2d):
            m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.randn(3, 2, 8, 8, 8) * 2
    y = block(x)
    assert y.shape == (3, 2, 16, 4, 4)
    assert len(seen) == 2 and all(set(s.unique().tolist()) <= {0.0, 1.0} for s in seen)
    y.sum().backward()
    functional.reset_net(block)


def test_conv1d_both_modes_match_binarized_weight():
    from sj_bwsnn.layers import BinaryConv1d

    torch.manual_seed(0)
    conv = BinaryConv1d(6, 4, 1, step_mode="m")
    x = (torch.rand(3, 2, 6, 5) > 0.5).float()
    y = conv(x)
    assert y.shape == (3, 2, 4, 5)
    assert torch.allclose(y[1], F.conv1d(x[1], conv.binarized_weight()), atol=1e-6)
    with pytest.raises(ValueError, match=r"4-D \[T, N, C, L\]"):
        conv(x[0])
