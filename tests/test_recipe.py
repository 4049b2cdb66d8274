"""The recipe schema: defaults, overrides and one-line errors for every kind of mistake."""

from pathlib import Path

import pytest

from sj_bwsnn.engine.recipe import Recipe, load_recipe
from sj_bwsnn.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    p = _write(tmp_path, "T: 4\noptim:\n  lr: 0.01\n")
    r = load_recipe(p, ["train.epochs=1", "T=2", "neuron.v_reset=null", "model.kwargs={stem: cifar}"])
    assert isinstance(r, Recipe)
    assert (r.T, r.train.epochs, r.optim.lr, r.neuron.v_reset) == (2, 1, 0.01, None)
    assert r.model.kwargs == {"stem": "cifar"} and r.optim.name == "adamw"
    assert isinstance(load_recipe(p, ["optim.lr=1"]).optim.lr, float)  # ints widen to floats
    assert load_recipe(_write(tmp_path, "optim:\n  lr: 1e-3\n"), ["optim.warmup_lr=2e-5"]).optim.lr == 1e-3


@pytest.mark.parametrize("text,overrides,message", [
    ("optim:\n  lrr: 0.1\n", [], "unknown recipe key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("T: 2\n", ["train.epoch=1"], "unknown recipe key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("T: two\n", [], "recipe key 'T' must be an integer, got 'two'"),
    ("T: 0\n", [], "recipe key 'T' must be >= 1"),
    ("optim:\n  lr: -0.1\n", [], "recipe key 'optim.lr' must be > 0"),
    ("neuron:\n  tau: 1.0\n", [], "recipe key 'neuron.tau' must be > 1"),
    ("model:\n  binary: yes please\n", [], "recipe key 'model.binary' must be true/false"),
    ("data: 3\n", [], "recipe section 'data' must be a mapping"),
    ("T: 2\n", ["T.x=1"], "--set T.x: 'T' is not a section"),
    ("T: 2\n", ["optim.lr"], "--set expects key.sub=value"),
    ("- a\n- b\n", [], "must be a YAML mapping"),
])
def test_mistakes_are_one_clear_line(tmp_path, text, overrides, message):
    with pytest.raises(UserError) as e:
        load_recipe(_write(tmp_path, text), overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = _write(tmp_path, "T: 2\noptim:\n  lr: [0.1\n  name: sgd\n")
    with pytest.raises(UserError, match=r"line \d+, column \d+: invalid YAML"):
        load_recipe(p)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_recipe_validates_and_takes_the_standard_overrides(path):
    r = load_recipe(path, ["train.epochs=1", "T=2"])
    assert r.train.epochs == 1 and r.T == 2
    assert r.description, f"{path.name} needs a one-line description"
