"""sj-bwsnn export / load_exported: packed 1-bit weights, exact reload, no pickled code."""

from __future__ import annotations

import pytest
import torch
from _analysis_util import RECIPE, make_checkpoint, make_foreign_checkpoint
from spikingjelly.activation_based import functional

import sj_bwsnn
from sj_bwsnn.deploy.packed import export_model, pack_signs, unpack_signs
from sj_bwsnn.analysis.profile import profile_forward
from sj_bwsnn.cli import main
from sj_bwsnn.data import DataInfo
from sj_bwsnn.errors import UserError
from sj_bwsnn.layers import binarize_weight


@pytest.mark.parametrize("scaling", ["channel", "tensor", "none"])
@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (7, 13), (4, 1)])
def test_pack_unpack_is_exact(scaling, shape):
    w = torch.randn(shape)
    w.view(-1)[0] = 0.0  # sign(0) = +1 must survive packing
    w_b = binarize_weight(w, scaling)
    bits, alpha = pack_signs(w_b)
    assert bits.dtype == torch.uint8 and bits.numel() == -(-w.numel() // 8)
    assert torch.equal(unpack_signs(bits, alpha, list(shape)), w_b)


def test_pack_refuses_a_real_weight():
    with pytest.raises(ValueError):
        pack_signs(torch.randn(3, 9))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    recipe, model = make_checkpoint(tmp / "c.pt")
    model.eval()
    sizes = export_model(model, recipe.to_dict(), DataInfo(10, 1, (8, 8)), tmp / "m.bwsnn")
    return model, sizes, tmp


def test_reloaded_model_is_bit_identical(exported):
    model, _, tmp = exported
    x = torch.randn(16, 1, 8, 8)
    assert any(r.firing_rate for r in profile_forward(model, [x])[0]), "test needs spikes"
    with torch.no_grad():
        a = model(x)
        functional.reset_net(model)
        loaded = sj_bwsnn.load_exported(tmp / "m.bwsnn")
        b = loaded(x)
    assert not loaded.training
    assert torch.equal(a, b)


def test_file_is_plain_tensors_and_binary_layers_are_25x_smaller(exported):
    _, sizes, tmp = exported
    d = torch.load(tmp / "m.bwsnn", weights_only=True)  # no code unpickled
    assert d["format"] == "sj_bwsnn.export" and len(d["binary"]) == sizes["binary_layers"] == 6
    entry = d["binary"]["blocks.0.0.conv"]
    assert entry["bits"].dtype == torch.uint8 and entry["bits"].numel() == 32 * 32 * 9 // 8
    assert entry["alpha"].shape == (32,)
    assert "blocks.0.0.conv.weight" not in d["tensors"] and "fc.weight" in d["tensors"]
    assert sizes["ratio"] >= 25
    assert sizes["binary_bytes_fp32"] / sizes["binary_bytes_packed"] == pytest.approx(sizes["ratio"])
    assert sizes["file_bytes"] < sizes["binary_bytes_fp32"] / 8


def test_public_names():
    import sj_bwsnn.deploy

    assert sj_bwsnn.load_exported is sj_bwsnn.deploy.load_exported
    assert sj_bwsnn.to_nir is sj_bwsnn.deploy.to_nir
    assert sj_bwsnn.deploy.export_model is export_model
    assert {"load_exported", "to_nir"} <= set(dir(sj_bwsnn))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        sj_bwsnn.nope


def test_import_sj_bwsnn_leaves_deploy_until_used():
    """``import sj_bwsnn`` (and so ``sj-bwsnn --help``) does not import sj_bwsnn.deploy (the
    recipe schema, checkpoints, data sets, torch.fx passes); the first use does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, sj_bwsnn; a = 'sj_bwsnn.deploy' in sys.modules; "
            "sj_bwsnn.load_exported; print(a, 'sj_bwsnn.deploy' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["False", "True"]


def test_load_exported_errors(exported, tmp_path):
    _, _, tmp = exported
    with pytest.raises(UserError, match="not found"):
        sj_bwsnn.load_exported(tmp_path / "none.bwsnn")
    with pytest.raises(UserError, match="not an sj_bwsnn export"):
        sj_bwsnn.load_exported(tmp / "c.pt")  # a training checkpoint
    (tmp_path / "junk").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable"):
        sj_bwsnn.load_exported(tmp_path / "junk")


def test_cli_export(exported, capsys):
    _, _, tmp = exported
    assert main(["export", str(tmp / "c.pt"), "--out", str(tmp / "cli.bwsnn")]) == 0
    out = capsys.readouterr().out
    assert "identical" in out and "x smaller" in out
    assert main(["export", str(tmp / "c.pt"), "--out", str(tmp / "nodir" / "m.bwsnn")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_export_without_the_data_set_and_of_an_old_ottt_run(tmp_path, capsys):
    """Export rebuilds the model from the stored recipe alone: the data set need not be here (a
    synthetic batch checks the reload, and the output says so), and a run whose training rules
    have changed since (OTTT with a hard reset, refused for training today) still exports."""
    absent = tmp_path / "absent"
    tree = {**RECIPE, "data": {"name": "mnist", "root": str(absent)}, "train": {"method": "ottt"}}
    _, model = make_foreign_checkpoint(tmp_path / "c.pt", tree)
    assert main(["export", str(tmp_path / "c.pt"), "--out", str(tmp_path / "m.bwsnn")]) == 0
    out = capsys.readouterr().out
    assert ("outputs on 16 synthetic inputs (no test set here: mnist not found" in out
            and out.rstrip().endswith("identical"))
    assert not absent.exists()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(sj_bwsnn.load_exported(tmp_path / "m.bwsnn")(x), model.eval()(x))



def test_conv1d_twins_count_as_binary_everywhere():
    """binarize() gives token MLPs BinaryConv1d layers: export packs them and the optimizer gives
    their latent weights the binary weight decay."""
    import sj_bwsnn
    from sj_bwsnn.deploy.packed import _binary_layers
    from sj_bwsnn.engine.trainer import param_groups

    net = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 1), torch.nn.Conv1d(8, 8, 1),
                              torch.nn.Conv1d(8, 4, 1))
    sj_bwsnn.binarize(net, include="1")
    assert [n for n, _ in _binary_layers(net)] == ["1"]
    groups = param_groups(net, weight_decay=0.1, binary_weight_decay=0.0)
    binary = [g for g in groups if g["weight_decay"] == 0.0 and any(p is net[1].weight for p in g["params"])]
    assert binary and len(binary[0]["params"]) == 1
