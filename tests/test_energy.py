"""sj-bwsnn energy: both conventions on networks counted by hand, SpikingJelly's counters run
directly on the same samples, the energy models and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _analysis_util import make_checkpoint
from _energy_util import (FC_MACS, NEURON_ACS, OUTPUTS, PAPER_CONV_SOPS, PAPER_FC_SOPS, POOL_ACS,
                          SJ_SOPS, SPIKES, HandNet, hand_input)
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.op_counter import (ACCounter, DispatchCounterMode, MACCounter,
                                                      SimpleEnergyConfig, SimpleEnergyCostConfig,
                                                      SynOpCounter, estimate_lemaire_energy,
                                                      estimate_simple_energy, LemaireEnergyConfig)
from torch import nn

from sj_bwsnn.analysis.energy import energy_report
from sj_bwsnn.analysis.energy_models import PRECISIONS
from sj_bwsnn.cli import main
from sj_bwsnn.layers import BinaryConv2d, WeightBinarizer
from sj_bwsnn.neuron import IFNode

pytestmark = pytest.mark.usefixtures("one_thread")
T = 3


class Fixed(nn.Module):
    """Real input [N, 4] -> fc1 (once) -> repeat T -> IF -> fc2 (every step) -> mean over T.

    With x = 2 and fc1 rows of 0.125 / 0.05, neurons 0-1 get 1.0 per step (IF, threshold 1:
    spike at every step) and neurons 2-5 get 0.4 (spike once, at t = 2): 2*3 + 4*1 = 10 spikes
    of 6 neurons * 3 steps per sample.
    """

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6, bias=False)
        self.sn = IFNode(step_mode="m", v_threshold=1.0, backend="torch")
        self.fc2 = nn.Linear(6, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[0.125] * 4] * 2 + [[0.05] * 4] * 4))
            self.fc2.weight.normal_()

    def forward(self, x):
        h = self.fc1(x).unsqueeze(0).repeat(T, 1, 1)
        return self.fc2(self.sn(h)).mean(0)


@pytest.fixture(scope="module")
def paper():
    x = torch.full((5, 4), 2.0)
    return energy_report(Fixed(), [x, x[:3]], T=T, convention="paper")


def test_paper_convention_by_hand(paper):
    (sn,) = paper["neurons"]
    assert sn["name"] == "sn" and sn["firing_rate"] == pytest.approx(10 / 18)
    fc1, fc2 = paper["layers"]
    assert (fc1["input"], fc2["input"]) == ("real", "spike")
    assert fc2["input_rate"] == pytest.approx(10 / 18)
    assert fc1["macs"] == 6 * 4 and fc1["sops"] == 0  # runs once per sample on real input
    # SOPs = FLOPs/step (6 * 2) * rate (10/18) * T (3) = 20 = 10 spikes * 2 synapses each
    assert fc2["flops_per_step"] == 12
    assert paper["sops"] == pytest.approx(20) and paper["macs"] == 24
    assert paper["energy"]["total_pj"] == pytest.approx(4.6 * 24 + 0.9 * 20)
    assert paper["energy"]["ann_twin_pj"] == pytest.approx(4.6 * (24 + 12 * 3))


def test_sj_convention_by_hand(paper):
    """No borders in a linear layer: SpikingJelly's synaptic ACs equal the paper's SOPs (20 per
    sample). Its ACs add the IF updates, hard reset: v + x, v - 1 (fire), 1 - s and
    (1 - s) v + s * 0, one AC per neuron each (4 x 6 x 3), except the last addition at t = 3: every
    neuron spiked, both terms are 0, binary, and ACCounter counts their non-zeros (none) instead
    (ac.py _ac_element_wise): 72 - 6. And the mean over T: 3 -> 1 for 2 logits."""
    sj = paper["sj"]
    by = {x["name"]: x for x in sj["layers"]}
    assert by["fc1"]["macs"] == 24 and by["fc2"]["sops"] == pytest.approx(20)
    assert by["sn"]["acs"] == 4 * 6 * T - 6 and by["(top level)"]["acs"] == 2 * (T - 1)
    assert sj["acs"] == pytest.approx(20 + 4 * 6 * T - 6 + 2 * (T - 1))
    assert paper["difference"]["border_sops"] == pytest.approx(0, abs=1e-9)


@pytest.fixture(scope="module")
def hand():
    return energy_report(HandNet(), [hand_input()], T=2, neurobench=True)


def test_both_conventions_reconcile_by_hand(hand):
    """tests/_energy_util.py works the counts out: the corner spike reaches 4 of its 9 outputs."""
    by = {x["name"]: x for x in hand["layers"]}
    assert (hand["convention"], hand["samples"]) == ("sj", 1)
    assert hand["neurons"][0]["firing_rate"] == pytest.approx(SPIKES / OUTPUTS)
    assert by["conv"]["sops"] == by["conv"]["acs"] == SJ_SOPS and by["conv"]["macs"] == 0
    assert by["sn"]["acs"] == NEURON_ACS and by["pool"]["acs"] == POOL_ACS
    assert by["fc"]["macs"] == FC_MACS and by["fc"]["acs"] == 0  # pooled spikes: not binary
    assert (hand["macs"], hand["acs"], hand["sops"]) == (FC_MACS, SJ_SOPS + NEURON_ACS + POOL_ACS,
                                                         SJ_SOPS)
    p = {x["name"]: x for x in hand["paper"]["layers"]}
    assert p["conv"]["sops"] == pytest.approx(PAPER_CONV_SOPS)
    assert p["fc"]["input"] == "spike" and p["fc"]["sops"] == pytest.approx(PAPER_FC_SOPS)
    d = hand["difference"]
    assert d["border_sops"] == pytest.approx(PAPER_CONV_SOPS - SJ_SOPS)  # 72 - 52 = 20
    assert d["other_acs"] == NEURON_ACS + POOL_ACS and d["extra_macs"] == 0
    assert (d["pooled_classifier_sops"], d["pooled_classifier_macs"]) == (
        pytest.approx(PAPER_FC_SOPS), FC_MACS)
    # the two conventions add up: paper SOPs - border - pooled SOPs = SpikingJelly's synaptic ACs
    assert hand["paper"]["sops"] - d["border_sops"] - d["pooled_classifier_sops"] == \
        pytest.approx(hand["sops"])
    assert "border" in d["text"] and "not binary" in d["text"]
    assert hand["energy"]["total_pj"] == pytest.approx(4.6 * FC_MACS + 0.9 * hand["acs"])


def _direct(model, batches, ac: ACCounter):
    mac, syn = MACCounter(), SynOpCounter()
    with torch.no_grad():
        for x in batches:
            functional.reset_net(model)
            with DispatchCounterMode([ac, mac, syn]):
                model(x)
    functional.reset_net(model)
    return ac.get_total(), mac.get_total(), syn.get_total()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "c.pt"
    make_checkpoint(path)
    from sj_bwsnn.analysis.source import sample_batches, source_from_checkpoint

    src = source_from_checkpoint(path)
    return path, src, [x[:16] for x in sample_batches(src, 2)]


def test_counts_equal_spikingjelly_counters_run_directly(digits):
    """The exact counts are SpikingJelly's: ACCounter (binarizer ignored), MACCounter and
    SynOpCounter on the same samples give the same totals, and the rows add up to them."""
    _, src, batches = digits
    rep = energy_report(src.model, batches, T=2)
    n = rep["samples"]
    ac, mac, syn = _direct(src.model, batches, ACCounter(extra_ignore_modules=[WeightBinarizer]))
    assert (rep["acs"] * n, rep["macs"] * n, rep["sops"] * n) == (
        pytest.approx(ac, rel=1e-12), pytest.approx(mac, rel=1e-12), pytest.approx(syn, rel=1e-12))
    assert syn > 0 and mac > 0
    # the one deliberate setting: plain ACCounter adds alpha = mean|w| of every binary layer,
    # (weights - output channels) ACs per call, two calls (batches) here
    plain, _, _ = _direct(src.model, batches, ACCounter())
    binary = [m for m in src.model.modules() if isinstance(m, BinaryConv2d)]
    assert plain - ac == 2 * sum(m.weight.numel() - m.out_channels for m in binary)


def test_cli_energy_json_reports_spikingjelly_counts_beside_paper(digits, capsys):
    """The issue's bar: on a digits checkpoint, ``--json`` holds ACCounter / MACCounter's counts
    on the same samples (the model and batch built as the command builds them)."""
    from sj_bwsnn.analysis.source import build_source, sample_batches
    from sj_bwsnn.cli import find_recipe
    from sj_bwsnn.engine import load_checkpoint, load_recipe

    path, _, _ = digits
    rc = main(["energy", "digits_bwsnn", "--set", "T=2", "--checkpoint", str(path),
               "--batches", "1", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    src = build_source(load_recipe(find_recipe("digits_bwsnn"), ["T=2"]),
                       load_checkpoint(path)["model"], path)
    x = next(sample_batches(src, 1))
    ac, mac, syn = _direct(src.model, [x], ACCounter(extra_ignore_modules=[WeightBinarizer]))
    assert rep["samples"] == 64 and rep["convention"] == "sj"
    assert (rep["acs"] * 64, rep["macs"] * 64, rep["sops"] * 64) == (
        pytest.approx(ac), pytest.approx(mac), pytest.approx(syn))
    assert rep["paper"]["sops"] > rep["sops"] and "fan-out" in rep["difference"]["text"]
    assert len(rep["neurons"]) == 7 and all(0 < n["firing_rate"] < 1 for n in rep["neurons"])
    assert rep["energy"]["total_pj"] == pytest.approx(4.6 * rep["macs"] + 0.9 * rep["acs"])


def test_simple_model_is_spikingjellys(digits):
    """``simple``: SpikingJelly's estimate_simple_energy terms on our counts. Memory and MACs are
    identical; its ACs exceed the dispatch count by the occupancy sums its memory counter leaks
    into ACCounter (SpikingJelly 2.0.0 neuromorphic_memory_access.py:55), which we hide."""
    _, src, batches = digits
    x = batches[0]
    rep = energy_report(src.model, [x], T=2, energy_model="simple")
    functional.reset_net(src.model)
    ref = estimate_simple_energy(src.model, x, config=SimpleEnergyConfig(
        extra_ignore_modules=[WeightBinarizer]))
    functional.reset_net(src.model)
    n, b = rep["samples"], rep["energy"]["breakdown_pj"]
    assert b["parameter_memory_pj"] * n == pytest.approx(ref.breakdown_pj["parameter_memory_pj"])
    assert b["neuron_state_memory_pj"] * n == pytest.approx(
        ref.breakdown_pj["neuron_state_memory_pj"])
    assert b["mac_pj"] * n == pytest.approx(ref.breakdown_pj["mac_pj"])
    assert rep["acs"] * n < ref.counts["ac"]
    ac, _, _ = _direct(src.model, [x], ACCounter(extra_ignore_modules=[WeightBinarizer]))
    assert rep["acs"] * n == pytest.approx(ac)


def test_precision_presets_are_spikingjellys():
    for name in ("fp32", "fp16", "int8"):
        ref = getattr(SimpleEnergyCostConfig, name)()
        assert (PRECISIONS[name].e_mac, PRECISIONS[name].e_add) == (ref.e_mac_pj, ref.e_ac_pj)


@pytest.mark.filterwarnings("ignore:Lemaire formulas do not support")
def test_lemaire_model_is_spikingjellys_per_sample():
    x = torch.cat([hand_input(), torch.zeros_like(hand_input())], dim=1)  # 2 samples
    rep = energy_report(HandNet(), [x], T=2, energy_model="lemaire")
    ref = [estimate_lemaire_energy(HandNet(), x[:, i:i + 1],
                                   config=LemaireEnergyConfig(strict=False)) for i in range(2)]
    assert rep["energy"]["total_pj"] == pytest.approx(sum(r.total_pj for r in ref) / 2)
    assert rep["energy"]["omitted_modules"] == ["AdaptiveAvgPool2d"]


class BinaryNet(nn.Module):
    """Spikes -> BinaryConv2d 1 -> 2 (3x3, pad 1) -> BN -> IF; a second BinaryConv2d without BN."""

    def __init__(self):
        super().__init__()
        self.conv = BinaryConv2d(1, 2, 3, padding=1, step_mode="m")
        self.bn = nn.BatchNorm2d(2)
        self.conv2 = BinaryConv2d(1, 2, 3, padding=1, step_mode="m")

    def forward(self, x):
        return self.bn(self.conv(x).flatten(0, 1)).sum() + self.conv2(x).sum()


def test_binary_weights_option_by_hand():
    """A spike on a +-1 weight: one 32-bit integer add (0.1 pJ); alpha folded into the BN that
    follows ``conv`` and one fp32 multiply per output of ``conv2`` (2 x 3x3 per step)."""
    x = hand_input()
    plain = energy_report(BinaryNet(), [x], T=2)
    rep = energy_report(BinaryNet(), [x], T=2, binary_weights=True)
    by = {r["name"]: r for r in rep["layers"]}
    assert by["conv"]["sops"] == by["conv2"]["sops"] == SJ_SOPS
    b = rep["energy"]["breakdown_pj"]
    assert b["binary_ac_pj"] == pytest.approx(0.1 * 2 * SJ_SOPS)
    assert b["alpha_pj"] == pytest.approx(3.7 * 2 * 9 * 2)  # conv2 only: 18 outputs x 2 steps
    assert plain["energy"]["total_pj"] - rep["energy"]["total_pj"] == pytest.approx(
        (0.9 - 0.1) * 2 * SJ_SOPS - 3.7 * 36)
    mem = energy_report(BinaryNet(), [x], T=2, energy_model="simple", binary_weights=True)
    ref = energy_report(BinaryNet(), [x], T=2, energy_model="simple")
    # weights read per synaptic op: 4 bytes -> 1 bit
    assert mem["energy"]["breakdown_pj"]["parameter_memory_pj"] == pytest.approx(
        ref["energy"]["breakdown_pj"]["parameter_memory_pj"] / 32)


def test_cli_energy_table_paper_neurobench_and_plot(digits, tmp_path, capsys):
    path, _, _ = digits
    png = tmp_path / "rates.png"
    rc = main(["energy", "digits_bwsnn", "--set", "T=2", "--checkpoint", str(path), "--batches",
               "1", "--convention", "paper", "--neurobench", "--precision", "int8", "--plot",
               str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "paper convention per image" in out and "SpikingJelly (exact)" in out
    assert "where they differ" in out and "connection sparsity" in out
    assert "0.23 pJ x MACs + 0.03 pJ x SOPs" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, words", [
    (["--plot", "x.jpg"], ".png"), (["--batches", "0"], "--batches"),
    (["--convention", "papers"], "--convention"), (["--model", "x"], "--model"),
    (["--model", "simple", "--convention", "paper"], "--convention sj"),
    (["--model", "lemaire", "--precision", "fp16"], "own constants"),
    (["--precision", "fp64"], "--precision"), (["--e-ac", "-1"], "--e-ac"),
])
def test_cli_energy_bad_input(tmp_path, capsys, args, words):  # refused before anything is loaded
    rc = main(["energy", "digits_bwsnn", "--checkpoint", str(tmp_path / "c.pt"), *args])
    assert rc == 2 and words in capsys.readouterr().err


def test_event_frames_count_samples_along_their_batch_dimension():
    """Time-first frames [T, N, ...] hold N samples, not T: per-sample ops of the blocks equal
    those of the same images fed as one static batch (the stem, run once for a static image,
    differs by design), and every sample is counted once."""
    from sj_bwsnn.analysis.profile import profile_forward
    from sj_bwsnn.models.bw_resnet import bw_resnet_tiny

    torch.manual_seed(0)
    model = bw_resnet_tiny(num_classes=10, T=4)
    x = torch.randn(2, 1, 8, 8)
    static, n_static = profile_forward(model, [x, x[:1]])
    frames, n_frames = profile_forward(model, [x.expand(4, *x.shape).contiguous(),
                                               x[:1].expand(4, 1, 1, 8, 8).contiguous()])
    assert n_static == n_frames == 3
    blocks = {r.name: r.ops for r in static if r.ops and not r.name.startswith("stem")}
    assert blocks and blocks == {r.name: r.ops for r in frames if r.name in blocks}


def test_cli_energy_counts_bw_spikformer_block_convs_as_sops(tmp_path, capsys):
    """The real command on a BW-Spikformer (digits, 2x2 tokens): the q/k/v, proj and FFN convs
    of every block are spike-input layers, SOPs and no MACs in both conventions; only the stem's
    first conv and the head do MACs; the attention products are spike-driven ACs that only
    SpikingJelly counts."""
    import yaml
    from _analysis_util import RECIPE

    from sj_bwsnn.data import build_loaders
    from sj_bwsnn.engine.build import build_model
    from sj_bwsnn.engine.checkpoint import save_checkpoint
    from sj_bwsnn.engine.recipe import recipe_from_dict

    tree = {**RECIPE, "model": {"name": "bw_spikformer_4_384_cifar", "kwargs": {
        "embed_dim": 16, "depth": 2, "num_heads": 2, "img_size": 8, "attn_threshold": 0.1}}}
    r = recipe_from_dict(tree)
    torch.manual_seed(0)
    model = build_model(r, build_loaders(r.data, r.seed)[2])
    with torch.no_grad():  # make every neuron fire: random BN statistics and shifts
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "c.pt", {"recipe": r.to_dict(), "model": model.state_dict(), "epoch": 0})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r.to_dict()))
    rc = main(["energy", str(tmp_path / "r.yaml"), "--checkpoint", str(tmp_path / "c.pt"),
               "--batches", "1", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    block_convs = [f"blocks.{b}.{c}" for b in range(2) for c in (
        "attn.qkv_conv_bn.0", "attn.proj_conv_bn.0", "ffn.0.conv", "ffn.1.conv")]
    for layers in (rep["layers"], rep["paper"]["layers"]):
        by = {x["name"]: x for x in layers}
        for name in block_convs:
            assert by[name]["input"] == "spike" and by[name]["macs"] == 0, name
        assert sum(by[n]["sops"] for n in block_convs) > 0
        assert {n for n, x in by.items() if x["input"] == "real"} == {
            "patch_embed.stages.0.conv_bn.block.0", "head"}
    by = {x["name"]: x for x in rep["layers"]}
    assert by["blocks.0.attn"]["sops"] > 0  # Q K^T V on spikes, in the unit's own forward
    assert rep["difference"]["outside_layer_sops"] == pytest.approx(
        sum(by[f"blocks.{b}.attn"]["sops"] for b in range(2)))
