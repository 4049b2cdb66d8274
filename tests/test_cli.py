"""The real ``sj-bwsnn`` command: training, eval, listing, and one-line errors with exit code 2."""

import json

import pytest
import torch


def _one_line_error(proc, needle):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and needle in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short digits run shared by the tests below."""
    from conftest import run_cli

    out = tmp_path_factory.mktemp("run") / "digits"
    proc = run_cli("train", "digits_bwsnn", "--out", str(out), "--set", "train.epochs=2",
                   "--set", "data.batch_size=128")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_writes_metrics_checkpoints_and_final_line(trained):
    out, proc = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert set(m) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc"}
        assert 0.0 <= m["test_acc"] <= 1.0
    assert f"final test_acc={metrics[-1]['test_acc']:.4f}" in proc.stdout
    assert proc.stdout.count("epoch ") >= 2
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["recipe"]["model"]["name"] == "bw_resnet_tiny"
    assert (out / "best.pt").is_file() and (out / "recipe.yaml").is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_eval_reproduces_the_last_test_accuracy(cli, trained):
    out, _ = trained
    last = json.loads((out / "metrics.json").read_text())[-1]
    proc = cli("eval", "digits_bwsnn", "--checkpoint", str(out / "last.pt"))
    assert proc.returncode == 0, proc.stderr
    assert f"test_acc={last['test_acc']:.4f}" in proc.stdout


def test_resume_continues_and_refuses_to_overwrite(cli, trained, tmp_path):
    out, _ = trained
    proc = cli("train", "digits_bwsnn", "--out", str(out), "--set", "train.epochs=2",
               "--set", "data.batch_size=128")
    _one_line_error(proc, "already holds a run")
    proc = cli("train", "digits_bwsnn", "--out", str(out), "--resume", "--set", "train.epochs=2",
               "--set", "data.batch_size=128", "--set", "optim.lr=0.1")
    _one_line_error(proc, "first difference: optim.lr")
    proc = cli("train", "digits_bwsnn", "--out", str(tmp_path / "none"), "--resume")
    _one_line_error(proc, "no checkpoint")


def test_recipes_lists_bundled_recipes(cli):
    proc = cli("recipes")
    assert proc.returncode == 0
    assert any(line.startswith("digits_bwsnn") and "digits" in line for line in proc.stdout.splitlines())


# The whole bad-input table runs in-process in test_bad_inputs.py; these two prove the real
# process exit code and the absence of a traceback.
@pytest.mark.parametrize("args,needle", [
    (["train", "no_such_recipe"], "recipe not found"),
    (["train", "digits_bwsnn", "--set", "optim.lrr=1"], "did you mean 'optim.lr'"),
])
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, needle):
    if args[0] == "train":
        args = args + ["--out", str(tmp_path / "o")]
    proc = cli(*args)
    _one_line_error(proc, needle)


def test_truncated_and_foreign_checkpoints_are_refused(cli, trained, tmp_path):
    out, _ = trained
    bad = tmp_path / "trunc.pt"
    bad.write_bytes((out / "last.pt").read_bytes()[:1000])
    _one_line_error(cli("eval", "digits_bwsnn", "--checkpoint", str(bad)), "truncated")
    other = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(3, 3)}}, other)
    _one_line_error(cli("eval", "digits_bwsnn", "--checkpoint", str(other)), "does not fit this model")


def test_debug_flag_shows_the_traceback(cli):
    proc = cli("--debug", "train", "no_such_recipe")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_non_finite_loss_stops_with_one_line_and_writes_no_checkpoint(cli, tmp_path):
    out = tmp_path / "nan"
    proc = cli("train", "digits_bwsnn", "--out", str(out), "--set", "optim.name=sgd",
               "--set", "optim.lr=1e30", "--set", "optim.sched=none", "--set", "train.epochs=1")
    _one_line_error(proc, "training loss became non-finite (nan/inf) at step ")
    assert "of epoch 1; stopped; nothing was saved" in proc.stderr
    assert not (out / "last.pt").exists() and not (out / "metrics.json").exists()
