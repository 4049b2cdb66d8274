"""Shape contracts: models and public multi-step blocks refuse [N, T, ...], a wrong rank or a
wrong channel count with one line saying what was expected, what was given and how to fix it."""

import pytest
import timm
import torch
from spikingjelly.activation_based import functional

import sj_bwsnn  # noqa: F401  (registers the models)
from sj_bwsnn.errors import ShapeError, UserError
from sj_bwsnn.layers import MultiShortcutBasicBlock, SpikingConvUnit, check_seq
from sj_bwsnn.models.bw_spikformer import BWSpikformer, BWSpikformerBlock, FFNUnit, SSAUnit
from sj_bwsnn.neuron import LIFNode

torch.set_num_threads(1)
T = 4


def _models():
    torch.manual_seed(0)
    return [timm.create_model("bw_resnet_tiny", num_classes=3, T=T),  # 1 channel, 8x8
            BWSpikformer(embed_dim=16, depth=1, num_heads=2, img_size=8, patch_size=4,
                         in_chans=1, num_classes=3, T=T)]


def _blocks():
    nk = {"backend": "torch"}
    return [SpikingConvUnit(8, 8, 1, True, LIFNode, nk), MultiShortcutBasicBlock(8, 8, 1, True, LIFNode, nk),
            FFNUnit(8, 16, True, LIFNode, nk, shortcut="free"), SSAUnit(8, 2, LIFNode, nk),
            BWSpikformerBlock(8, 2, 2.0, True, LIFNode, nk)]


def _raises(fn, *needles):
    with pytest.raises(ShapeError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


@pytest.mark.parametrize("i", [0, 1], ids=["BWResNet", "BWSpikformer"])
def test_model_refuses_batch_first_frames(i):
    model = _models()[i]
    name = type(model).__name__
    frames = torch.rand(T, 2, 1, 8, 8)
    assert model.forward_seq(frames).shape == (T, 2, 3)  # time first: accepted
    functional.reset_net(model)
    # the same data laid out [N, T, C, H, W]: refused, whether called as forward or forward_seq
    for call in (model, model.forward_seq):
        _raises(lambda: call(frames.transpose(0, 1)), name, "[T, N, C, H, W]", "(2, 4, 1, 8, 8)",
                "looks like [N, T, C, H, W]", "x.transpose(0, 1)")


@pytest.mark.parametrize("i", [0, 1], ids=["BWResNet", "BWSpikformer"])
def test_model_accepts_what_the_trainer_feeds(i):
    """Static images, T frames, and the one-step input [1, N, ...] of step-wise training, also
    when the batch size equals T; frames of another length when dimension 1 is not T."""
    model = _models()[i]
    x = torch.rand(T, 1, 8, 8)  # a batch of N = T images
    for inp, steps in ((x, T), (x.unsqueeze(0), 1), (torch.rand(6, 3, 1, 8, 8), 6)):
        assert model.forward_seq(inp).shape == (steps, inp.shape[-4], 3)
        functional.reset_net(model)


@pytest.mark.parametrize("i", [0, 1], ids=["BWResNet", "BWSpikformer"])
def test_model_refuses_wrong_rank_and_channels(i):
    model = _models()[i]
    _raises(lambda: model(torch.rand(1, 8, 8)), "got 3-D shape (1, 8, 8)", "x.unsqueeze(0)")
    _raises(lambda: model(torch.rand(1, 2, 2, 1, 8, 8)), "[N, C, H, W] images or [T, N, C, H, W]",
            "got 6-D")
    _raises(lambda: model(torch.rand(2, 8, 8, 1)), "C=1 at dimension 1", "x.permute(0, 3, 1, 2)")
    _raises(lambda: model(torch.rand(T, 2, 3, 8, 8)), "C=1 at dimension 2", "(4, 2, 3, 8, 8)")


@pytest.mark.parametrize("k", range(5), ids=["SpikingConvUnit", "MultiShortcutBasicBlock",
                                             "FFNUnit", "SSAUnit", "BWSpikformerBlock"])
def test_block_refuses_missing_time_dimension_and_wrong_channels(k):
    block = _blocks()[k]
    name = type(block).__name__
    assert block(torch.rand(2, 3, 8, 4, 4)).shape[:2] == (2, 3)
    functional.reset_net(block)
    _raises(lambda: block(torch.rand(3, 8, 4, 4)), name, "5-D [T, N, C, H, W] input (time first)",
            "got 4-D shape (3, 8, 4, 4)", "x.unsqueeze(0)")
    _raises(lambda: block(torch.rand(2, 3, 5, 4, 4)), name, "C=8 at dimension 2")
    _raises(lambda: block(torch.rand(2, 3, 4, 4, 8)), "x.permute(0, 1, 4, 2, 3)")


def test_shape_error_is_a_user_error_and_a_value_error():
    with pytest.raises(UserError):
        check_seq(torch.rand(2, 3), "X")
    with pytest.raises(ValueError):
        check_seq(torch.rand(2, 3), "X")


def test_binary_convs_in_multi_step_mode_use_the_same_contract():
    from sj_bwsnn.layers import BinaryConv1d, BinaryConv2d

    conv = BinaryConv2d(3, 4, 3, padding=1, step_mode="m")
    assert conv(torch.rand(2, 5, 3, 8, 8)).shape == (2, 5, 4, 8, 8)
    _raises(lambda: conv(torch.rand(5, 3, 8, 8)), "BinaryConv2d in step_mode='m'",
            "5-D [T, N, C, H, W]", "x.unsqueeze(0)")
    _raises(lambda: conv(torch.rand(2, 5, 8, 8, 3)), "C=3 at dimension 2", "x.permute(0, 1, 4, 2, 3)")
    _raises(lambda: BinaryConv1d(6, 4, 1, step_mode="m")(torch.rand(2, 5, 7, 9)), "C=6 at dimension 2",
            "[T, N, C, L]")


def test_binary_conv_transpose_and_linear_in_multi_step_mode_raise_shape_errors():
    from sj_bwsnn.layers import BinaryConvTranspose2d, BinaryLinear

    up = BinaryConvTranspose2d(3, 4, 3, 2, 1, 1, step_mode="m")
    assert up(torch.rand(2, 5, 3, 4, 4)).shape == (2, 5, 4, 8, 8)
    _raises(lambda: up(torch.rand(5, 3, 4, 4)), "BinaryConvTranspose2d in step_mode='m'",
            "5-D [T, N, C, H, W]", "x.unsqueeze(0)")
    _raises(lambda: up(torch.rand(2, 5, 4, 4, 3)), "C=3 at dimension 2", "x.permute(0, 1, 4, 2, 3)")
    fc = BinaryLinear(5, 3, step_mode="m")
    assert fc(torch.rand(2, 4, 7, 5)).shape == (2, 4, 7, 3)
    _raises(lambda: fc(torch.rand(4, 5)), "BinaryLinear in step_mode='m'", "[T, N, ..., 5]",
            "got 2-D shape (4, 5)", "x.unsqueeze(0)")
    _raises(lambda: fc(torch.rand(2, 4, 6)), "[T, N, ..., 5] with 5 features last", "(2, 4, 6)")


def test_binary_linear_in_multi_step_mode_traces_with_fx():
    """The check skips fx proxies (NIR export, fx passes) as check_seq does; the binarizer is a
    leaf, as in the NIR tracer."""
    from sj_bwsnn.layers import BinaryLinear, WeightBinarizer

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, WeightBinarizer) or super().is_leaf_module(m, name)

    torch.manual_seed(0)
    net = torch.nn.Sequential(BinaryLinear(5, 3, step_mode="m"))
    traced = torch.fx.GraphModule(net, Tracer().trace(net))
    x = torch.rand(2, 4, 5)
    assert torch.equal(traced(x), net(x))
