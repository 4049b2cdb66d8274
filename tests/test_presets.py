"""neuron.preset: the sources' neuron settings in one word, explicit keys winning, resolved values
in recipe.yaml, --resume comparing resolved recipes, and the values reaching every neuron."""

from __future__ import annotations

import pytest
import yaml
from spikingjelly.activation_based import surrogate

from sj_bwsnn.cli import main, recipe_dirs
from sj_bwsnn.data import DataInfo
from sj_bwsnn.engine.build import build_model
from sj_bwsnn.engine.recipe import NeuronConfig, load_recipe, recipe_from_dict
from sj_bwsnn.errors import UserError
from sj_bwsnn.neuron import PRESETS, LIFNode
from sj_bwsnn.neuron.dsr import DSRIFNode, DSRLIFNode

DIGITS = str(recipe_dirs()[0] / "digits_bwsnn.yaml")
INFO = DataInfo(10, 1, (8, 8))


def neurons(recipe, cls):
    found = [m for m in build_model(recipe, INFO).modules() if isinstance(m, cls)]
    assert found
    return found


def test_sltt_and_ottt_presets_reach_every_neuron():
    # SLTT: modules/neuron.py:5-10, train_SLTT.py:37, 44, 179-180 (PiecewiseQuadratic(), alpha 1)
    for m in neurons(recipe_from_dict({"neuron": {"preset": "sltt"}}), LIFNode):
        assert (m.tau, m.decay_input, m.v_threshold, m.v_reset, m.detach_reset) == (
            1.1, False, 1.0, None, False)
        assert type(m.surrogate_function) is surrogate.PiecewiseQuadratic
        assert m.surrogate_function.alpha == 1.0
    # OTTT: modules/neuron.py:62-67, train_cifar.py:39, 102
    for m in neurons(recipe_from_dict({"neuron": {"preset": "ottt"}}), LIFNode):
        assert (m.tau, m.decay_input, m.v_reset, m.detach_reset) == (2.0, False, None, True)
        assert type(m.surrogate_function) is surrogate.Sigmoid
        assert m.surrogate_function.alpha == 4.0
    # spikingjelly == the schema's defaults == SpikingJelly 2.0's LIFNode defaults
    assert recipe_from_dict({"neuron": {"preset": "spikingjelly"}}).neuron == \
        NeuronConfig(preset="spikingjelly")
    sj = LIFNode()
    assert (sj.tau, sj.decay_input, sj.v_reset, sj.surrogate_function.alpha) == \
        (2.0, True, 0.0, 4.0)


def test_dsr_presets_and_recipe_values_reach_dsr_nodes():
    r = recipe_from_dict({"neuron": {"preset": "dsr_lif"}, "train": {"method": "dsr"}})
    for m in neurons(r, DSRLIFNode):  # DSR main_single_gpu.py:34-39
        assert (m.tau, m.v_threshold.item(), m.delta_t, m.alpha, m.v_threshold_lower_bound) == (
            1.0, pytest.approx(0.3), 0.05, 0.3, 0.0005)
    r = recipe_from_dict({"neuron": {"type": "dsr_lif", "tau": 0.5, "v_threshold": 0.6},
                          "train": {"method": "dsr"}})
    for m in neurons(r, DSRLIFNode):  # the recipe's tau (DSR's meaning, may be < 1) is used
        assert (m.tau, m.v_threshold.item()) == (0.5, pytest.approx(0.6))
    r = recipe_from_dict({"neuron": {"preset": "dsr_if"}, "train": {"method": "dsr"}})
    for m in neurons(r, DSRIFNode):  # DSR README IF runs: --Vth 6 --alpha 0.5 --Vth_bound 0.01
        assert (m.v_threshold.item(), m.alpha, m.v_threshold_lower_bound) == (6.0, 0.5, 0.01)
    with pytest.raises(UserError, match="'neuron.tau' must be > 1"):
        recipe_from_dict({"neuron": {"tau": 0.5}})  # SpikingJelly's LIF
    with pytest.raises(UserError, match="'neuron.tau' must be > 0"):
        recipe_from_dict({"neuron": {"type": "dsr_lif", "tau": 0.0}, "train": {"method": "dsr"}})


def test_explicit_keys_win_and_resolution_is_idempotent():
    r = recipe_from_dict({"neuron": {"preset": "sltt", "tau": 2.0, "backend": "torch"}})
    assert (r.neuron.preset, r.neuron.tau, r.neuron.v_reset, r.neuron.surrogate) == (
        "sltt", 2.0, None, "piecewise_quadratic")
    assert recipe_from_dict(r.to_dict()) == r  # the saved recipe reloads to the same values
    assert set(PRESETS) == {"spikingjelly", "sltt", "ottt", "dsr_if", "dsr_lif"}
    with pytest.raises(UserError, match=r"unknown preset 'stlt' \(did you mean 'sltt'\?\)"):
        recipe_from_dict({"neuron": {"preset": "stlt"}})
    with pytest.raises(UserError, match="'neuron.preset' must be a string"):
        recipe_from_dict({"neuron": {"preset": 3}})


def test_ottt_refuses_a_hard_reset_in_the_recipe():
    with pytest.raises(UserError, match="'neuron.v_reset' must be null .* for train.method ottt"):
        recipe_from_dict({"train": {"method": "ottt"}})
    recipe_from_dict({"train": {"method": "ottt"}, "neuron": {"preset": "ottt"}})


def test_set_preset_on_a_runs_recipe_yaml_applies_the_new_presets_values(tmp_path):
    """A run's recipe.yaml holds its preset's resolved keys; --set neuron.preset=ottt on it gives
    OTTT's values (not SLTT's under OTTT's name). Keys named by --set and keys the preset does
    not define (backend) keep their values; naming the file's own preset changes nothing."""
    run = load_recipe(DIGITS, ["neuron.preset=sltt", "neuron.backend=torch"])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(run.to_dict(), sort_keys=False))  # as `sj-bwsnn train` writes it
    r = load_recipe(path, ["neuron.preset=ottt", "train.method=ottt"])
    assert r.neuron == NeuronConfig(**{**PRESETS["ottt"], "preset": "ottt", "backend": "torch"})
    r = load_recipe(path, ["neuron.tau=3.0", "neuron.preset=ottt"])
    assert (r.neuron.tau, r.neuron.detach_reset, r.neuron.surrogate) == (3.0, True, "sigmoid")
    assert load_recipe(path, ["neuron.preset=sltt"]) == run
    with pytest.raises(UserError, match="unknown preset 'otttt'"):
        load_recipe(path, ["neuron.preset=otttt"])


FAST = ["T=1", "data.max_train=64", "data.max_test=64", "train.epochs=1", "train.plot=false",
        "train.tensorboard=false"]


def _sets(*items):
    return [a for item in items for a in ("--set", item)]


def test_recipe_yaml_holds_resolved_values_and_resume_compares_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", DIGITS, "--out", str(out), *_sets(*FAST, "neuron.preset=sltt")]) == 0
    saved = yaml.safe_load((out / "recipe.yaml").read_text())["neuron"]
    assert saved == {**PRESETS["sltt"], "preset": "sltt", "backend": "auto"}
    assert load_recipe(out / "recipe.yaml") == load_recipe(DIGITS, FAST + ["neuron.preset=sltt"])
    # resuming with the same recipe and one more epoch works; a changed neuron value is refused
    assert main(["train", DIGITS, "--out", str(out), "--resume",
                 *_sets(*FAST, "neuron.preset=sltt", "train.epochs=2")]) == 0
    capsys.readouterr()
    assert main(["train", DIGITS, "--out", str(out), "--resume",
                 *_sets(*FAST, "neuron.preset=sltt", "neuron.alpha=2.0", "train.epochs=3")]) == 2
    assert "first difference: neuron.alpha" in capsys.readouterr().err
