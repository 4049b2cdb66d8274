"""sj-bwsnn energy: firing rates, SOPs, MACs and energy on a network with known spike counts."""

from __future__ import annotations

import json

import pytest
import torch
from _analysis_util import make_checkpoint
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter
from torch import nn

from sj_bwsnn.analysis.energy import energy_report
from sj_bwsnn.cli import main
from sj_bwsnn.neuron import IFNode

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
def report():
    x = torch.full((5, 4), 2.0)
    return energy_report(Fixed(), [x, x[:3]], T=T)


def test_firing_rate_and_input_kinds(report):
    (sn,) = report["neurons"]
    assert sn["name"] == "sn" and sn["firing_rate"] == pytest.approx(10 / 18)
    fc1, fc2 = report["layers"]
    assert (fc1["input"], fc2["input"]) == ("real", "spike")
    assert fc2["input_rate"] == pytest.approx(10 / 18)


def test_sops_macs_energy_by_hand(report):
    fc1, fc2 = report["layers"]
    assert fc1["macs"] == 6 * 4 and fc1["sops"] == 0  # runs once per sample on real input
    # SOPs = FLOPs/step (6 * 2) * rate (10/18) * T (3) = 20 = 10 spikes * 2 synapses each
    assert fc2["flops_per_step"] == 12
    assert report["sops"] == pytest.approx(20) and report["macs"] == 24
    assert report["energy_pj"] == pytest.approx(4.6 * 24 + 0.9 * 20)
    assert report["energy_real_pj"] == pytest.approx(4.6 * (24 + 12 * 3))


def test_sops_agree_with_spikingjelly_synop_counter(report):
    model, x = Fixed(), torch.full((5, 4), 2.0)
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        model(x)
    functional.reset_net(model)
    assert counter.get_total() == pytest.approx(report["sops"] * 5)


def test_energy_constants_override():
    x = torch.full((2, 4), 2.0)
    rep = energy_report(Fixed(), [x], T=T, e_mac=1.0, e_ac=0.0)
    assert rep["energy_pj"] == pytest.approx(24.0)


def test_cli_energy_json_and_plot(tmp_path, capsys):
    make_checkpoint(tmp_path / "c.pt")
    png = tmp_path / "rates.png"
    rc = main(["energy", "digits_bwsnn", "--set", "T=2", "--checkpoint", str(tmp_path / "c.pt"),
               "--batches", "1", "--json", "--plot", str(png)])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["samples"] == 64 and "per time step" in rep["firing_rate_definition"]
    assert len(rep["neurons"]) == 7 and all(0 < n["firing_rate"] < 1 for n in rep["neurons"])
    assert rep["sops"] == pytest.approx(sum(x["sops"] for x in rep["layers"]))
    assert rep["energy_pj"] == pytest.approx(4.6 * rep["macs"] + 0.9 * rep["sops"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_energy_bad_input(tmp_path, capsys):  # refused before anything is loaded
    rc = main(["energy", "digits_bwsnn", "--checkpoint", str(tmp_path / "c.pt"), "--plot", "x.jpg"])
    assert rc == 2 and ".png" in capsys.readouterr().err
    rc = main(["energy", "digits_bwsnn", "--checkpoint", str(tmp_path / "c.pt"), "--batches", "0"])
    assert rc == 2 and "--batches" in capsys.readouterr().err


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
    of every block are spike-input layers (SOPs, no MACs); only the stem's first conv and the
    head do MACs."""
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
    layers = {x["name"]: x for x in json.loads(capsys.readouterr().out)["layers"]}
    block_convs = [f"blocks.{b}.{c}" for b in range(2) for c in (
        "attn.qkv_conv_bn.0", "attn.proj_conv_bn.0", "ffn.0.conv", "ffn.1.conv")]
    for name in block_convs:
        assert layers[name]["input"] == "spike" and layers[name]["macs"] == 0, name
    assert sum(layers[n]["sops"] for n in block_convs) > 0
    assert {n for n, x in layers.items() if x["input"] == "real"} == {
        "patch_embed.stages.0.conv_bn.block.0", "head"}
