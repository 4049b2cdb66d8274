"""Every row of the "When something is wrong" table (docs/reliability.md), through the CLI entry point.

Each case must end with exactly one line ``error: ...`` on stderr, exit code 2, no traceback, and
no run folder left behind. Keep this list and that table in step.
"""

import os
import pickle

import pytest
import torch

from sj_bwsnn.cli import main


def _cifar_root(tmp_path):
    return tmp_path / "no_cifar_here"


def _dvs_root(tmp_path):
    root = tmp_path / "dvs"
    (root / "download").mkdir(parents=True)  # what a failed download leaves, without events_np/
    return root


def _plain_teacher_with_5_classes(tmp_path):
    import timm

    path = tmp_path / "teacher5.pt"
    torch.save(timm.create_model("resnet10t", num_classes=5, in_chans=1).state_dict(), path)
    return path


def _bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("T: 2\noptim:\n  lr: 0.1\n   name: sgd\n")
    return path


CASES = [
    # (id, argv builder, expected text in the one error line)
    ("malformed-yaml", lambda p: ["train", str(_bad_yaml(p))], "line 4, column 8: invalid YAML"),
    ("unknown-key", lambda p: ["train", "digits_bwsnn", "--set", "optim.lrr=0.1"],
     "unknown recipe key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("wrong-type", lambda p: ["train", "digits_bwsnn", "--set", "T=two"],
     "recipe key 'T' must be an integer, got 'two'"),
    ("T-zero", lambda p: ["train", "digits_bwsnn", "--set", "T=0"], "recipe key 'T' must be >= 1"),
    ("negative-lr", lambda p: ["train", "digits_bwsnn", "--set", "optim.lr=-0.1"],
     "recipe key 'optim.lr' must be > 0"),
    ("tau-le-1", lambda p: ["train", "digits_bwsnn", "--set", "neuron.tau=1.0"],
     "recipe key 'neuron.tau' must be > 1"),
    ("missing-dataset", lambda p: ["train", "digits_bwsnn", "--set", "data.name=cifar10",
                                   "--set", f"data.root={_cifar_root(p)}"],
     "cifar10 not found: expected"),
    ("dvs-offline", lambda p: ["train", "digits_bwsnn", "--set", "data.name=cifar10dvs",
                               "--set", f"data.root={_dvs_root(p)}"],
     "events_np/<class>/*.npz"),
    ("missing-checkpoint", lambda p: ["eval", "digits_bwsnn", "--checkpoint", str(p / "none.pt")],
     "checkpoint not found"),
    ("teacher-classes", lambda p: ["train", "digits_bwsnn", "--set", "teacher.model=resnet10t",
                                   "--set", f"teacher.checkpoint={_plain_teacher_with_5_classes(p)}"],
     "5 classes"),
    ("cupy-without-cuda", lambda p: ["train", "digits_bwsnn", "--set", "neuron.backend=cupy",
                                     "--set", "train.device=cpu"], "neuron backend 'cupy' needs CUDA"),
    ("set-bad-path", lambda p: ["train", "digits_bwsnn", "--set", "T.steps=2"],
     "--set T.steps: 'T' is not a section"),
    ("set-no-value", lambda p: ["train", "digits_bwsnn", "--set", "optim.lr"],
     "--set expects key.sub=value"),
    ("unknown-method", lambda p: ["train", "digits_bwsnn", "--set", "train.method=stlt"],
     "did you mean 'sltt'"),
    ("stop-after-zero", lambda p: ["train", "digits_bwsnn", "--stop-after", "0"],
     "--stop-after must be an epoch number >= 1, got 0"),
]


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, build, expected):
    out = tmp_path / "run"
    argv = build(tmp_path)
    if argv[0] == "train":
        argv += ["--out", str(out)]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not out.exists()


def test_unwritable_output_directory(tmp_path, capsys):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"  # root ignores permissions: a file where a folder must go
        blocker.write_text("")
        out = blocker / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "run"
    assert main(["train", "digits_bwsnn", "--out", str(out)]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_checkpoint_from_another_architecture_names_the_layers(tmp_path, capsys):
    import timm

    import sj_bwsnn  # noqa: F401

    path = tmp_path / "wide.pt"
    other = timm.create_model("bw_resnet_tiny", num_classes=10, in_chans=1, T=2, stem_width=16)
    torch.save({"model": other.state_dict()}, path)
    assert main(["eval", "digits_bwsnn", "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "stem.0.weight (16, 1, 3, 3) vs (32, 1, 3, 3)" in err


def test_truncated_checkpoint(tmp_path, capsys):
    path = tmp_path / "t.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    assert main(["eval", "digits_bwsnn", "--checkpoint", str(path)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_arbitrary_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "x": pickle.PicklingError("any object")}, f)
    assert main(["eval", "digits_bwsnn", "--checkpoint", str(path)]) == 2
    assert "weights_only" in capsys.readouterr().err
