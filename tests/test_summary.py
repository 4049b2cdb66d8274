"""sj-bwsnn summary: counts on a small model against hand-computed values, and the same counts as
sj-bwsnn energy."""

from __future__ import annotations

import json

import pytest
import torch
from _analysis_util import RECIPE, make_checkpoint, make_foreign_checkpoint

from sj_bwsnn.analysis.energy import energy_report
from sj_bwsnn.analysis.summary import deployed_bytes, packed_bytes, summarize
from sj_bwsnn.cli import main
from sj_bwsnn.models.bw_resnet import BWResNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _small():
    """Stem 3x3 conv 1->8, one block of two binary 3x3 convs 8->8, classifier 8->3, T=2."""
    torch.manual_seed(0)
    return BWResNet((1,), (8,), stem="cifar", in_chans=1, num_classes=3, T=2)


@pytest.fixture(scope="module")
def small():
    return summarize(_small(), 10 * torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1)),
                     T=2)


def _row(s, name):
    return next(r for r in s["layers"] if r["name"] == name)


def test_packed_bytes():
    assert [packed_bytes(n) for n in (0, 1, 8, 9, 576)] == [0, 1, 1, 2, 72]


def test_per_layer_counts_by_hand(small):
    stem = _row(small, "stem.0")
    # 8 filters of 1x3x3, real input: 8 * 4*4 outputs * 9 MACs, run once for T=2 steps -> /2
    assert (stem["params_1bit"], stem["params_32bit"], stem["input"]) == (0, 72, "real")
    assert stem["macs_per_step"] == 8 * 16 * 9 // 2 and stem["acs_per_step"] == 0
    assert stem["bytes_trained"] == stem["bytes_deployed"] == 72 * 4
    conv = _row(small, "blocks.0.0.conv")
    assert (conv["kind"], conv["params_1bit"], conv["params_32bit"]) == ("BinaryConv2d", 576, 0)
    assert conv["input"] == "spike" and conv["out_shape"] == [2, 8, 4, 4]
    assert conv["flops_per_step"] == 8 * 16 * 72 and conv["macs_per_step"] == 0
    # SpikingJelly's ACs: the synapses this sample's spikes reached, at most every one
    assert 0 < conv["acs_per_step"] == conv["sops_per_step"] <= conv["flops_per_step"]
    assert conv["bytes_trained"] == 576 * 4
    assert conv["bytes_deployed"] == 576 // 8 + 8 * 4  # packed signs + fp32 alpha per channel
    bn = _row(small, "blocks.0.0.bn")  # gamma, beta + running mean, var (num_batches_tracked: int)
    assert (bn["params_32bit"], bn["bytes_trained"]) == (16, 32 * 4)
    # SpikingJelly's eval BN on [T*N, 8, 4, 4]: n MACs (affine), n + C ACs (x - mean, var + eps)
    assert (bn["macs_per_step"], bn["acs_per_step"]) == (128, (256 + 8) / 2)
    fc = _row(small, "fc")  # after head neuron + global pool: fed by pooled spikes (not binary)
    assert (fc["params_32bit"], fc["input"], fc["flops_per_step"]) == (27, "spike", 24)
    assert (fc["macs_per_step"], fc["acs_per_step"]) == (24, 0)  # bias: addmm, MACs only
    assert fc["out_shape"] == [2, 3]
    unit = _row(small, "blocks.0.0")  # the residual addition of the unit's own forward
    assert (unit["kind"], unit["acs_per_step"], unit["bytes_trained"]) == (
        "SpikingConvUnit", 8 * 16, 0)
    sn = _row(small, "blocks.0.1.sn")
    assert sn["kind"] == "LIFNode" and sn["params_32bit"] == 0 and sn["out_shape"] == [2, 8, 4, 4]


def test_totals_and_compression(small):
    t = small["totals"]
    assert t["params_1bit"] == 2 * 576
    assert t["params_32bit"] == 72 + 3 * 16 + 27
    trained = 72 * 4 + 3 * 32 * 4 + 2 * 576 * 4 + 27 * 4
    deployed = 72 * 4 + 3 * 32 * 4 + 2 * (72 + 32) + 27 * 4
    assert (t["bytes_trained"], t["bytes_deployed"]) == (trained, deployed)
    assert small["compression"]["vs_fp32"] == pytest.approx(trained / deployed)
    assert small["compression"]["vs_fp16"] == pytest.approx(trained / 2 / deployed)
    assert t["flops_per_step"] == 8 * 16 * 9 / 2 + 2 * 8 * 16 * 72 + 24  # stem: once for 2 steps
    assert t["acs_per_step"] == pytest.approx(sum(r["acs_per_step"] for r in small["layers"]))
    assert deployed_bytes(_small()) == deployed


def test_summary_and_energy_never_disagree():
    """The same counters and rows: summary's per-step counts x T are energy's per-sample counts."""
    model, x = _small(), 10 * torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    s, e = summarize(model, x, T=2), energy_report(model, [x], T=2)
    rows = {r["name"]: r for r in s["layers"]}
    assert e["layers"] and {x["name"] for x in e["layers"]} <= set(rows)
    for r in e["layers"]:
        got = rows[r["name"]]
        assert (got["macs_per_step"] * 2, got["acs_per_step"] * 2, got["sops_per_step"] * 2) == (
            pytest.approx(r["macs"]), pytest.approx(r["acs"]), pytest.approx(r["sops"])), r["name"]
    assert s["totals"]["acs_per_step"] * 2 == pytest.approx(e["acs"]) and e["acs"] > 0
    assert s["totals"]["macs_per_step"] * 2 == pytest.approx(e["macs"])


def test_cli_summary_checkpoint_json_matches_table(tmp_path, capsys):
    make_checkpoint(tmp_path / "c.pt")
    assert main(["summary", str(tmp_path / "c.pt"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["model"] == "bw_resnet_tiny" and s["T"] == 2
    assert s["totals"]["params_1bit"] == 9 * (32 * 32 * 2 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128)
    assert main(["summary", str(tmp_path / "c.pt")]) == 0
    table = capsys.readouterr().out
    assert "blocks.2.1.conv" in table and "BinaryConv2d" in table
    assert f"{s['compression']['vs_fp32']:.2f}x" in table


def test_cli_summary_bad_input(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["summary", "no_such_recipe"]) == 2
    assert "recipe not found" in capsys.readouterr().err


def test_feedback_scale_is_listed_as_a_scalar_not_unused():
    """fsnn's fb_norm (SpectralScale) runs every forward and returns the 0-d scale c."""
    import timm

    from sj_bwsnn.analysis.summary import format_summary
    from sj_bwsnn.neuron import IFNode

    torch.manual_seed(0)
    net = timm.create_model("fsnn_fc", img_size=4, hidden=6, num_classes=3, T=3, neuron=IFNode,
                            neuron_kwargs={"v_reset": None})
    s = summarize(net, torch.randn(1, 1, 4, 4), T=3)
    assert _row(s, "fb_norm")["out_shape"] == []
    line = next(x for x in format_summary(s).splitlines() if x.startswith("fb_norm"))
    assert "scalar" in line and "(unused)" not in line


def test_cli_summary_of_a_checkpoint_without_its_data_set(tmp_path, capsys):
    """The model is rebuilt from the stored recipe alone; a synthetic input of the data set's
    shape stands in for the absent test set, and the output says so."""
    absent = tmp_path / "absent"
    make_foreign_checkpoint(tmp_path / "c.pt", {**RECIPE, "data": {"name": "mnist", "root": str(absent)}})
    assert main(["summary", str(tmp_path / "c.pt"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["input_shape"] == [1, 1, 28, 28]
    assert s["input"].startswith("synthetic inputs (no test set here: mnist not found")
    assert not absent.exists()
    assert main(["summary", str(tmp_path / "c.pt")]) == 0
    assert "counted on one sample of the synthetic inputs" in capsys.readouterr().out


@pytest.mark.parametrize("stored", [
    {"train": {"method": "ottt"}},  # hard reset: refused for training since OTTT's traces need soft
    {"train": {"method": "dsr"}},  # DSR with LIF neurons: refused for training
])
def test_cli_summary_of_a_checkpoint_whose_training_rules_changed(tmp_path, capsys, stored):
    make_foreign_checkpoint(tmp_path / "c.pt", {**RECIPE, **stored})
    assert main(["summary", str(tmp_path / "c.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == "test inputs"  # digits is always here
