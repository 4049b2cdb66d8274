"""NIR export (sj_bwsnn.to_nir, sj-bwsnn export --format nir): every mapped layer type, the
refusals, the CLI, and round trips through SpikingJelly's importer and snnTorch."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from _analysis_util import RECIPE, make_checkpoint
from spikingjelly.activation_based import layer
from torch import nn

import sj_bwsnn
from sj_bwsnn.cli import main
from sj_bwsnn.deploy.nir import NEEDS_NIR, to_nir, write_nir
from sj_bwsnn.deploy.packed import unpack_signs
from sj_bwsnn.errors import UserError
from sj_bwsnn.layers import BinaryConv1d, BinaryLinear
from sj_bwsnn.neuron import IFNode, LIFNode

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")
from sj_bwsnn.deploy import nir_check  # noqa: E402  (needs nir)

DT = 1e-4


def _spiking_bn(model: nn.Module) -> nn.Module:
    """Random BN statistics and shifts so that every layer fires (as _analysis_util does)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(0.0, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def resnet():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = _spiking_bn(timm.create_model("bw_resnet_tiny", num_classes=10, T=2))
    x = torch.rand(16, 1, 8, 8) * 2
    return model, x, to_nir(model, x)


def _sj_round_trip(model, x, graph):
    return nir_check.agreement(nir_check.run_ours(model, x),
                               nir_check.run_sj(graph, nir_check.input_sequence(model, x), DT))


def test_resnet_graph_has_every_layer_and_the_shortcut_sums(resnet):
    _, _, g = resnet
    kinds = [type(n).__name__ for n in g.nodes.values()]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "Input": 1, "Conv2d": 9, "LIF": 7, "AvgPool2d": 3, "Flatten": 1, "Affine": 1, "Output": 1}
    into = lambda n: sorted(a for a, b in g.edges if b == n)  # noqa: E731
    # multi-shortcut: the second unit's neuron sees stem + first conv, the head sees the whole stream
    assert into("blocks_0_1_sn") == ["blocks_0_0_conv", "stem_0"]
    assert into("head_sn") == ["blocks_2_0_conv", "blocks_2_0_shortcut_1", "blocks_2_1_conv"]
    assert g.metadata["dt"] == DT and g.metadata["time_steps"] == 2
    pool = g.nodes["pool"]  # AdaptiveAvgPool2d(1) on 2x2 -> AvgPool2d(2)
    assert list(pool.kernel_size) == [2, 2] and list(pool.stride) == [2, 2]


def test_binary_conv_with_folded_bn_is_the_bn_equation(resnet):
    model, _, g = resnet
    unit = model.blocks[1][0]
    node = g.nodes["blocks_1_0_conv"]
    w_b = unit.conv.binarized_weight().detach()
    s = (torch.rand(4, 32, 8, 8) < 0.3).double()  # spikes
    bn = unit.bn
    ref = F.batch_norm(F.conv2d(s, w_b.double(), stride=2, padding=1), bn.running_mean.double(),
                       bn.running_var.double(), bn.weight.double(), bn.bias.double(), False, 0.0,
                       bn.eps)
    got = F.conv2d(s, torch.from_numpy(node.weight).double(), torch.from_numpy(node.bias).double(),
                   stride=2, padding=1)
    assert (got - ref).abs().max() < 1e-5
    meta = node.metadata  # the 1-bit structure survives: signs and alphas, exactly
    bits, alpha = torch.from_numpy(meta["binary_signs"]), torch.from_numpy(meta["binary_alpha"])
    assert torch.equal(unpack_signs(bits, alpha, list(w_b.shape)), w_b)
    signs = unpack_signs(bits, torch.ones_like(alpha), list(w_b.shape)).numpy()
    assert np.array_equal(node.weight, meta["channel_scale"][:, None, None, None] * signs)
    assert meta["sj_bwsnn_layer"] == "blocks.1.0.conv + blocks.1.0.bn"


def test_lif_node_follows_spikingjelly(resnet):
    _, _, g = resnet
    n = g.nodes["blocks_0_0_sn"]
    assert n.tau.shape == (32, 8, 8)
    for field, value in (("tau", 2.0 * DT), ("r", 1.0), ("v_leak", 0.0), ("v_reset", 0.0),
                         ("v_threshold", 1.0)):
        assert np.all(getattr(n, field) == value), field
    assert n.metadata["spike_condition"] == "v >= v_threshold"


def test_resnet_round_trip_through_spikingjelly_file(resnet, tmp_path):
    model, x, g = resnet
    write_nir(g, tmp_path / "m.nir")
    back = nir.read(tmp_path / "m.nir")
    assert back.nodes["blocks_0_0_conv"].metadata["binary_alpha"].shape == (32,)
    rep = _sj_round_trip(model, x, back)
    assert rep["layers_compared"] == 7 and rep["same_prediction"] == 1.0
    assert rep["spikes_identical_all"] >= 0.999
    # the comparison can fail: flip the signs of one output channel of a binary conv
    back.nodes["blocks_0_0_conv"].weight[:4] *= -1
    assert _sj_round_trip(model, x, back)["spikes_identical"]["blocks.0.1.sn"] < 0.99


def test_threshold_spec_writes_the_float32_below(resnet):
    model, x, _ = resnet
    g = to_nir(model, x, threshold="spec")
    n = g.nodes["head_sn"]
    assert np.all(n.v_threshold == float(np.nextafter(np.float32(1), np.float32(0))))
    assert n.metadata["spike_condition"] == "v > v_threshold"


def test_resnet_round_trip_through_snntorch(resnet):
    pytest.importorskip("snntorch")
    model, x, _ = resnet
    g = to_nir(model, x, threshold="spec")
    ours, xs = nir_check.run_ours(model, x), nir_check.input_sequence(model, x)
    rep = nir_check.agreement(ours, nir_check.run_snntorch(g, xs))
    assert rep["layers_compared"] == 7 and rep["same_prediction"] == 1.0
    assert rep["spikes_identical_all"] >= 0.999
    g.nodes["blocks_0_0_conv"].weight[:4] *= -1  # and the comparison can fail
    assert nir_check.agreement(ours, nir_check.run_snntorch(g, xs))["spikes_identical"][
        "blocks.0.1.sn"] < 0.99


def pm1_net() -> nn.Module:
    """+-1 weights, no bias, binary input: LIF membranes land exactly on the threshold."""
    torch.manual_seed(3)
    kw = dict(bias=False, scaling="none", step_mode="m")
    return nn.Sequential(BinaryLinear(16, 32, **kw), LIFNode(step_mode="m"),
                         BinaryLinear(32, 8, **kw), LIFNode(step_mode="m")).eval()


def test_threshold_convention_decides_spikes_exactly_at_threshold():
    """SpikingJelly fires at v >= v_th, snnTorch (like the NIR spec) at v > v_th: 'sj' serves the
    first exactly, 'spec' the second."""
    pytest.importorskip("snntorch")
    net = pm1_net()
    x = (torch.rand(4, 64, 16) < 0.5).float()
    ours = nir_check.run_ours(net, x)
    g_sj, g_spec = to_nir(net, x, threshold="sj"), to_nir(net, x, threshold="spec")
    same = lambda g, run: nir_check.agreement(ours, run(g, x))["spikes_identical_all"]  # noqa: E731
    snn = nir_check.run_snntorch
    sj = lambda g, x: nir_check.run_sj(g, x, DT)  # noqa: E731
    assert same(g_sj, sj) == 1.0 and same(g_spec, snn) == 1.0
    assert same(g_sj, snn) < 0.95  # H = X / 2 = 1.0 for two input spikes: fires only with >=


def test_fc_net_binary_linear_if_and_lif_without_input_decay():
    torch.manual_seed(1)
    net = nn.Sequential(layer.Flatten(step_mode="m"), BinaryLinear(64, 48, step_mode="m"),
                        IFNode(step_mode="m"), BinaryLinear(48, 10, step_mode="m"),
                        LIFNode(tau=4.0, decay_input=False, step_mode="m")).eval()
    x = torch.rand(3, 8, 1, 8, 8) * 3  # [T, N, ...]
    g = to_nir(net, x)
    assert [type(g.nodes[k]).__name__ for k in ("_0", "_1", "_2", "_3", "_4")] == [
        "Flatten", "Affine", "IF", "Affine", "LIF"]
    assert np.all(g.nodes["_2"].r == 1 / DT) and np.all(g.nodes["_4"].r == 4.0)
    assert np.all(g.nodes["_4"].tau == 4.0 * DT)
    w_b = net[1].binarized_weight().detach()
    assert np.array_equal(g.nodes["_1"].weight, w_b.numpy())
    meta = g.nodes["_1"].metadata
    assert torch.equal(unpack_signs(torch.from_numpy(meta["binary_signs"]),
                                    torch.from_numpy(meta["binary_alpha"]), [48, 64]), w_b)
    rep = nir_check.agreement(nir_check.run_ours(net, x), nir_check.run_sj(g, x, DT))
    assert rep["layers_compared"] == 2 and rep["spikes_identical_all"] == 1.0
    assert rep["max_logit_diff"] == 0.0  # output spikes of the LIF


def test_binary_conv1d_and_bn_with_no_conv_before():
    torch.manual_seed(2)
    net = nn.Sequential(layer.BatchNorm1d(4, step_mode="m"), LIFNode(step_mode="m"),
                        BinaryConv1d(4, 6, 3, padding=1, step_mode="m"), LIFNode(step_mode="m"),
                        layer.Flatten(step_mode="m"), layer.Linear(6 * 10, 5, step_mode="m")).eval()
    with torch.no_grad():
        net[0].running_mean.uniform_(-1, 1)
        net[0].weight.uniform_(0.5, 2)
    x = torch.randn(2, 4, 4, 10) * 2
    g = to_nir(net, x)
    bn = g.nodes["_0"]  # BN on the input: a diagonal 1x1 conv, x * k + shift
    assert type(bn).__name__ == "Conv1d" and bn.metadata["bn_as_affine"] == 1
    assert np.array_equal(bn.weight[:, :, 0], np.diag(np.diag(bn.weight[:, :, 0])))
    assert type(g.nodes["_2"]).__name__ == "Conv1d" and "binary_signs" in g.nodes["_2"].metadata
    rep = nir_check.agreement(nir_check.run_ours(net, x), nir_check.run_sj(g, x, DT))
    assert rep["layers_compared"] == 2 and rep["spikes_identical_all"] >= 0.99
    assert rep["max_logit_diff"] < 1e-4


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.sn = LIFNode()

    def forward(self, x):
        return self.sn(x * 2)


@pytest.mark.parametrize("build, match", [
    (lambda: timm.create_model("bw_resnet_tiny", neuron_kwargs={"v_reset": None}),
     r"layer 'blocks.0.0.sn' \(LIFNode\) resets by subtraction .* use the packed export .* "
     r"\(train.method ottt does not\); of the bundled recipes only digits_bwsnn"),
    (lambda: __import__("sj_bwsnn.models.bw_spikformer", fromlist=["x"]).BWSpikformer(
        embed_dim=16, depth=1, num_heads=2, img_size=16, patch_size=4, num_classes=5, T=2),
     r"layer 'blocks.0.attn' \(SSAUnit\) is spiking self-attention"),
    (lambda: timm.create_model("bw_resnet_tiny",
                               neuron=sj_bwsnn.neuron.resolve_neuron("dsr_if")),
     r"layer 'blocks.0.0.sn' \(DSRIFNode\) is a neuron with no NIR node"),
    (lambda: timm.create_model("bw_resnet18", num_classes=10),
     r"layer 'stem.2' \(MaxPool2d\): NIR has no max pooling"),
    (lambda: _Scaled(), r"the model's own forward computes `mul`"),
    (lambda: timm.create_model("fsnn_fc", img_size=2, neuron_kwargs={"v_reset": None}),
     r"the model \(FeedbackSNN\) is a feedback SNN \(fsnn_\*\).* use the packed export"),
    (lambda: timm.create_model("bw_resnet_tiny", norm="ws"),
     r"the model \(BWResNet\) has model.kwargs.norm: ws .* \(norm: bn only\); use the packed"),
    (lambda: timm.create_model("bw_resnet_tiny", head="dsr"),
     r"the model \(BWResNet\) has model.kwargs.head: dsr .* \(head: linear only\); use the packed"),
])
def test_what_nir_cannot_express_is_one_line_naming_the_layer(build, match):
    torch.manual_seed(0)
    with pytest.raises(UserError, match=match) as e:  # refused before the input is looked at
        to_nir(build(), torch.rand(2, 4))
    assert "\n" not in str(e.value)


def test_grouped_conv_is_refused_naming_the_layer():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), LIFNode())
    with pytest.raises(UserError, match=r"layer '0' \(Conv2d\): Grouped convolutions are not"):
        to_nir(net, torch.rand(2, 4, 6, 6))


def test_bad_arguments_and_missing_nir(resnet, monkeypatch):
    model, x, _ = resnet
    with pytest.raises(UserError, match="threshold must be one of sj, spec"):
        to_nir(model, x, threshold="ge")
    with pytest.raises(UserError, match="expected"):
        to_nir(model, torch.rand(8, 8))
    monkeypatch.setitem(sys.modules, "nir", None)
    with pytest.raises(UserError, match=NEEDS_NIR.replace("[", r"\[").replace("]", r"\]")):
        to_nir(model, x)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nir")
    make_checkpoint(tmp / "lif.pt")
    make_checkpoint(tmp / "soft.pt", {**RECIPE, "neuron": {"v_reset": None}})
    return tmp


def test_cli_export_nir(checkpoints, capsys):
    out = checkpoints / "m.nir"
    assert main(["export", str(checkpoints / "lif.pt"), "--format", "nir", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out}") and "7 LIF" in lines[0]
    assert lines[1].startswith("6 binary layers as alpha * sign(w)") and "9 BatchNorms folded" in lines[1]
    assert "predictions on 32 test inputs 100.00% identical" in lines[2]
    assert type(nir.read(out).nodes["head_sn"]).__name__ == "LIF"


def test_cli_export_nir_errors_write_nothing(checkpoints, capsys, monkeypatch):
    out = checkpoints / "soft.nir"
    assert main(["export", str(checkpoints / "soft.pt"), "--format", "nir", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot export to NIR: the checkpoint's neurons reset by "
                          "subtraction (neuron.v_reset: null), but NIR's LIF/IF reset to v_reset: "
                          "use the packed export")
    assert "--set neuron.v_reset=0.0; of the bundled recipes only digits_bwsnn" in err
    assert "\n" not in err and not out.exists()
    assert main(["export", str(checkpoints / "lif.pt"), "--nir-threshold", "spec",
                 "--out", str(out)]) == 2
    assert "--format nir only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "nir", None)
    assert main(["export", str(checkpoints / "lif.pt"), "--format", "nir", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {NEEDS_NIR}" and not out.exists()


@pytest.mark.parametrize("stored,match", [
    ({"neuron": {"preset": "sltt"}}, r"the checkpoint's neurons reset by subtraction "
                                     r"\(neuron.v_reset: null, from neuron.preset sltt\).* "
                                     r"retrain with --set neuron.v_reset=0.0; of the bundled"),
    ({"neuron": {"preset": "ottt"}, "train": {"method": "ottt"}},
     r"trained with train.method ottt, whose neurons must reset by subtraction .* use the packed"),
    ({"model": {"name": "fsnn_fc", "kwargs": {"img_size": 8, "hidden": 8}},
      "neuron": {"type": "if", "v_reset": None}, "train": {"method": "ide"}},
     r"fsnn_fc is a feedback SNN: its last layer feeds layer 0 one step later"),
])
def test_cli_export_nir_refusal_is_worded_for_the_runs_case(tmp_path, capsys, stored, match):
    """The soft-reset advice depends on the run: OTTT cannot retrain with a hard reset, feedback
    SNNs are refused as such (they require soft reset); nothing is written."""
    from _analysis_util import make_foreign_checkpoint

    make_foreign_checkpoint(tmp_path / "c.pt", {**RECIPE, **stored})
    out = tmp_path / "m.nir"
    assert main(["export", str(tmp_path / "c.pt"), "--format", "nir", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.match("error: cannot export to NIR: " + match, err) and "\n" not in err
    assert not out.exists()
