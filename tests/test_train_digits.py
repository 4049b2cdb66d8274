"""The bar for the embedded default: binary weights learn digits; the FP twin is close.

Bars from ``python bench/test_bars.py --recipe digits_bwsnn --seeds 5`` (2 CPU cores,
2026-12-02, bench/results/test_bars_digits_bwsnn_cpu_20261202T020329Z.json): over 5 seeds the
1-bit recipe ends at 0.9800-0.9889 (median 0.9867), the FP twin 0.0000-0.0044 above it. A new CPU
model moves results like a new seed does, so the bars sit well below the worst seed (0.95; a gap
of 2 points, 4.5x the largest seen). The run time is a benchmark, not a test: the same script
records seconds per run.
"""

import json

import pytest

MIN_BINARY_ACC = 0.95
MAX_FP_GAP = 0.02


@pytest.mark.slow
def test_default_recipe_meets_the_bar_and_fp_twin_is_close(cli, tmp_path):
    proc = cli("train", "digits_bwsnn", "--out", str(tmp_path / "bin"))
    assert proc.returncode == 0, proc.stderr
    binary = json.loads((tmp_path / "bin" / "metrics.json").read_text())[-1]["test_acc"]
    assert binary >= MIN_BINARY_ACC, proc.stdout

    proc = cli("train", "digits_bwsnn", "--out", str(tmp_path / "fp"), "--set", "model.binary=false")
    assert proc.returncode == 0, proc.stderr
    fp = json.loads((tmp_path / "fp" / "metrics.json").read_text())[-1]["test_acc"]
    assert abs(fp - binary) <= MAX_FP_GAP + 1e-9, (binary, fp)


def test_short_run_learns(cli, tmp_path):
    proc = cli("train", "digits_bwsnn", "--out", str(tmp_path / "r"), "--set", "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    acc = json.loads((tmp_path / "r" / "metrics.json").read_text())[-1]["test_acc"]
    # a 2-epoch schedule over 5 seeds ends at 0.9756-0.9844 (python bench/test_bars.py --recipe
    # digits_bwsnn --set train.epochs=2 --binary-only --seeds 5, 2026-12-02,
    # bench/results/test_bars_digits_bwsnn_cpu_20261202T043355Z.json); chance is 0.1
    assert acc > 0.8
