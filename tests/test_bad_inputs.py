"""Every row of the "When something is wrong" table (docs/reliability.md), through the CLI entry point.

Each case must end with exactly one line ``error: ...`` on stderr, exit code 2, no traceback, and
nothing written: the files under the test's folder are the same before and after (no run folder,
no output file, no temp file, no ``.building`` marker). Keep this list and that table in step.
"""

import errno
import os
import pickle
import shutil

import pytest
import torch
from _analysis_util import make_checkpoint

from sj_bwsnn.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A digits checkpoint as `sj-bwsnn train` writes it (recipe + weights), T=2."""
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    make_checkpoint(path)
    return path


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


def _file(tmp_path, name, data=b""):
    path = tmp_path / name
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def _copy(ckpt, tmp_path, name="c.pt", edit=None):
    """The checkpoint copied into the test's folder, its stored dict changed by ``edit``."""
    d = torch.load(ckpt, weights_only=True)
    if edit:
        edit(d)
    torch.save(d, tmp_path / name)
    return tmp_path / name


def _bare(ckpt, tmp_path):
    torch.save(torch.load(ckpt, weights_only=True)["model"], tmp_path / "sd.pt")
    return tmp_path / "sd.pt"


def _saved(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _run_folder(ckpt, tmp_path):
    run = tmp_path / "run1"
    run.mkdir()
    shutil.copy(ckpt, run / "last.pt")
    (run / "recipe.yaml").write_text("T: 2\n")
    return run


def _resume_stopped_run(tmp_path):
    """A tiny run stopped after epoch 1, then resumed with --stop-after 1 again."""
    argv = ["train", "digits_bwsnn", "--out", str(tmp_path / "rs"), "--stop-after", "1",
            "--set", "data.max_train=64", "--set", "data.max_test=32", "--set", "train.epochs=3",
            "--set", "train.plot=false", "--set", "train.tensorboard=false"]
    assert main(argv) == 0
    return argv + ["--resume"]


def _dvs_args(root):
    return ["summary", "digits_bwsnn", "--set", "data.name=cifar10dvs", "--set", f"data.root={root}",
            "--set", "T=2", "--set", "data.input_size=16"]


def _dvs_tree(tmp_path):
    from test_data import make_dvs

    make_dvs(tmp_path / "dvs", per_class=2)
    return tmp_path / "dvs"


def _dvs_corrupt_events(tmp_path):
    root = _dvs_tree(tmp_path)
    (root / "events_np" / "cat" / "cifar10_cat_1.npz").write_bytes(b"PK\x03\x04 cut short")
    return _dvs_args(root)


def _dvs_corrupt_frames(tmp_path):
    root = _dvs_tree(tmp_path)
    assert main(_dvs_args(root)) == 0  # integrates the frames
    frame = root / "frames_number_2_split_by_number" / "airplane" / "cifar10_airplane_1.npz"
    frame.write_bytes(frame.read_bytes()[:100])
    return _dvs_args(root) + ["--set", "data.num_workers=1"]  # raised in a worker process


CASES = [
    # (id, argv builder, expected text in the one error line)
    ("malformed-yaml", lambda p, c: ["train", str(_bad_yaml(p))], "line 4, column 8: invalid YAML"),
    ("unknown-key", lambda p, c: ["train", "digits_bwsnn", "--set", "optim.lrr=0.1"],
     "unknown recipe key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("wrong-type", lambda p, c: ["train", "digits_bwsnn", "--set", "T=two"],
     "recipe key 'T' must be an integer, got 'two'"),
    ("T-zero", lambda p, c: ["train", "digits_bwsnn", "--set", "T=0"], "recipe key 'T' must be >= 1"),
    ("negative-lr", lambda p, c: ["train", "digits_bwsnn", "--set", "optim.lr=-0.1"],
     "recipe key 'optim.lr' must be > 0"),
    ("tau-le-1", lambda p, c: ["train", "digits_bwsnn", "--set", "neuron.tau=1.0"],
     "recipe key 'neuron.tau' must be > 1"),
    ("missing-dataset", lambda p, c: ["train", "digits_bwsnn", "--set", "data.name=cifar10",
                                   "--set", f"data.root={_cifar_root(p)}"],
     "cifar10 not found: expected"),
    ("dvs-offline", lambda p, c: ["train", "digits_bwsnn", "--set", "data.name=cifar10dvs",
                               "--set", f"data.root={_dvs_root(p)}"],
     "events_np/<class>/*.npz"),
    ("missing-checkpoint", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint", str(p / "none.pt")],
     "checkpoint not found"),
    ("teacher-classes", lambda p, c: ["train", "digits_bwsnn", "--set", "teacher.model=resnet10t",
                                   "--set", f"teacher.checkpoint={_plain_teacher_with_5_classes(p)}"],
     "5 classes"),
    ("cupy-without-cuda", lambda p, c: ["train", "digits_bwsnn", "--set", "neuron.backend=cupy",
                                     "--set", "train.device=cpu"], "neuron backend 'cupy' needs CUDA"),
    ("set-bad-path", lambda p, c: ["train", "digits_bwsnn", "--set", "T.steps=2"],
     "--set T.steps: 'T' is not a section"),
    ("set-no-value", lambda p, c: ["train", "digits_bwsnn", "--set", "optim.lr"],
     "--set expects key.sub=value"),
    ("unknown-method", lambda p, c: ["train", "digits_bwsnn", "--set", "train.method=stlt"],
     "did you mean 'sltt'"),
    ("stop-after-zero", lambda p, c: ["train", "digits_bwsnn", "--stop-after", "0"],
     "--stop-after must be an epoch number >= 1, got 0"),
    # every command, not only train
    ("empty-recipe", lambda p, c: ["train", str(_file(p, "empty.yaml", "# nothing yet\n"))],
     "empty.yaml is empty (no keys)"),
    ("recipe-is-a-folder", lambda p, c: ["train", str(_run_folder(c, p))],
     "run1 is a folder; give a YAML file, e.g."),
    ("checkpoint-as-recipe", lambda p, c: ["eval", str(c), "--checkpoint", "digits_bwsnn"],
     "is a checkpoint, not a recipe"),
    ("stop-after-done", lambda p, c: _resume_stopped_run(p),
     os.path.join("rs", "last.pt") + " already finished epoch 1; give a later epoch"),
    ("out-is-a-file", lambda p, c: ["train", "digits_bwsnn", "--out", str(_file(p, "f"))],
     "is a file; give a folder for the run"),
    ("checkpoint-is-a-folder", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint",
                                             str(_run_folder(c, p))], "run1/last.pt"),
    ("empty-checkpoint", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint", str(_file(p, "e.pt"))],
     "is empty (0 bytes"),
    ("bare-state-dict", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint", str(_bare(c, p))],
     "is a bare state_dict"),
    ("export-as-checkpoint", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint", str(
        _file(p, "m.bwsnn", _saved({"format": "sj_bwsnn.export", "version": 1})))],
     "is an sj_bwsnn export"),
    ("recipe-mismatch", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint", str(
        _copy(c, p, edit=lambda d: d["recipe"]["neuron"].update(tau=1.5)))],
     "neuron.tau: 2.0 here, 1.5 in the checkpoint"),
    ("no-ema", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint", str(c), "--ema"],
     "holds no EMA weights"),
    ("data-missing-at-eval", lambda p, c: ["eval", "digits_bwsnn", "--checkpoint", str(c),
                                           "--set", "data.name=cifar10",
                                           "--set", f"data.root={_cifar_root(p)}"],
     "cifar10 not found: expected"),
    ("no-recipe-in-checkpoint", lambda p, c: ["summary", str(
        _copy(c, p, edit=lambda d: d.pop("recipe")))], "holds no recipe to rebuild its model"),
    ("stale-recipe-in-checkpoint", lambda p, c: ["export", str(
        _copy(c, p, edit=lambda d: d["recipe"]["model"].update(stemm=1))), "--out", str(p / "m")],
     "the recipe stored in"),
    ("export-unwritable", lambda p, c: ["export", str(c), "--out", "/proc/x.bin"],
     "cannot write /proc/x.bin"),
    ("export-no-folder", lambda p, c: ["export", str(c), "--out", str(p / "nodir" / "m.bwsnn")],
     "nodir does not exist; create it"),
    ("export-to-a-folder", lambda p, c: ["export", str(c), "--out", str(p)],
     "it is a folder; give a file name"),
    ("export-over-its-checkpoint", lambda p, c: ["export", str(_copy(c, p)), "--out", str(p / "c.pt")],
     "is the checkpoint itself"),
    ("plot-unwritable", lambda p, c: ["energy", "digits_bwsnn", "--checkpoint", str(c),
                                      "--plot", str(p / "nodir" / "rates.png")],
     "nodir does not exist"),
    ("batches-zero", lambda p, c: ["energy", "digits_bwsnn", "--checkpoint", str(c), "--batches", "0"],
     "--batches must be >= 1, got 0"),
    ("energy-constant-nan", lambda p, c: ["energy", "digits_bwsnn", "--checkpoint", str(c),
                                          "--e-mac", "nan"], "must be a finite number >= 0"),
    ("unknown-command", lambda p, c: ["doctr"], "unknown command 'doctr' (did you mean 'doctor'?)"),
    ("unknown-option", lambda p, c: ["doctor", "--cuda"],
     "unrecognized arguments: --cuda (see `sj-bwsnn doctor --help`)"),
    ("option-value-type", lambda p, c: ["energy", "digits_bwsnn", "--checkpoint", str(c),
                                        "--batches", "all"], "argument --batches: invalid int value"),
    ("corrupt-event-file", lambda p, c: _dvs_corrupt_events(p),
     os.path.join("events_np", "cat", "cifar10_cat_1.npz") + " (BadZipFile"),
    ("corrupt-frame-file", lambda p, c: _dvs_corrupt_frames(p),
     os.path.join("airplane", "cifar10_airplane_1.npz") + " (BadZipFile"),
]


def _files(root):
    """Every folder under ``root``, and every file with its size and modification time."""
    return {str(q.relative_to(root)): None if q.is_dir() else (q.stat().st_size, q.stat().st_mtime_ns)
            for q in root.rglob("*")}


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, ckpt, build, expected):
    argv = build(tmp_path, ckpt)
    if argv[0] == "train" and "--out" not in argv:  # folders above the run are created too
        argv += ["--out", str(tmp_path / "runs" / "digits" / "run")]
    before = _files(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert _files(tmp_path) == before  # no run folder, output, temp file or .building marker


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


def test_disk_full_while_writing_is_one_line_and_leaves_no_file(tmp_path, capsys, ckpt, monkeypatch):
    """Every output (checkpoints, exports, plots, recipe.yaml) goes through one atomic writer: an
    OSError there is one line naming the file, and neither the temp file nor the output stays."""
    from sj_bwsnn.engine import checkpoint

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.bwsnn")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {tmp_path / 'm.bwsnn'} ("), err
    assert "free some space" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    """Not mkstemp's 0o600: a checkpoint or export can be shared like any file the user writes."""
    from sj_bwsnn.engine.checkpoint import atomic_write_bytes

    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_bytes(tmp_path / "f.bin", lambda f: f.write(b"x"))
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~mask
