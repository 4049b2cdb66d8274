"""IDE and SPIDE train a small feedback SNN on scikit-learn's digits (chance: 10%) in one epoch."""

from __future__ import annotations

import pytest
from _feedback_util import EPOCHS, METHODS, feedback_accuracy
from _learning_util import digits_batches

# Bars from `python bench/feedback_snn.py bars --seeds 10` (2 CPU cores, 2026-12-02,
# bench/results/feedback_snn_bars_cpu_20261202T020639Z.json): after one epoch the worst of 10 seeds
# is 0.916 for both ide and spide (medians 0.931 / 0.929). A new CPU model changes the trajectory as
# a new seed does, so the bar sits far below the worst seed and far above chance (0.10).
MIN_ACC = {"ide": 0.5, "spide": 0.5}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return digits_batches(seed=0)


@pytest.mark.parametrize("method", METHODS)
def test_feedback_snn_learns_digits(method, digits):
    acc = feedback_accuracy(method, seed=0, epochs=EPOCHS, batches=digits)
    assert acc > MIN_ACC[method], f"{method}: test accuracy {acc:.3f} after {EPOCHS} epoch(s)"
