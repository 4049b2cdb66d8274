"""The recipe sections of single methods: ``ide:``, ``spide:``, ``opzo:`` (see
:mod:`sj_bwsnn.engine.recipe` for the schema; each section is read only by its method)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class IDEConfig:
    """``train.method: ide``: the implicit-gradient solve (sj_bwsnn/engine/methods/ide.py)."""

    iters: int = 30  # Broyden iterations per batch at most (IDE code: threshold = 30)
    tol: float = 1e-4  # stop at residual <= tol * ||dL/da||; above it: counted as unconverged


@dataclass
class SPIDEConfig:
    """``train.method: spide``: the spiking backward (sj_bwsnn/engine/methods/spide.py)."""

    steps: int = 250  # backward time steps T_b (SPIDE code: 250 CIFAR, 100 MNIST)
    vth_back: float = 0.5  # backward threshold; spikes are +-2 vth_back (SPIDE code: 0.5)
    grad_scale: float = 100.0  # k: the backward SNN gets k * dL/da (SPIDE code: 100 MNIST, 400 CIFAR)


@dataclass
class OPZOConfig:
    """``train.method: opzo`` (and ``dfa``: only ``trace_decay``); engine/methods/opzo.py."""

    noise_scale: float = 0.3  # alpha: std of the noise injected on every layer's output
    momentum: float = 0.99  # lambda of the feedback connections M <- lambda M + (1-lambda) z o^T/alpha
    noise: str = "gaussian"  # gaussian | rademacher | sphere
    antithetic: bool = True  # dual noise: z at even time steps, -z at odd ones
    samples: int = 1  # noisy copies of every input in the one forward pass (noise draws per step)
    trace_decay: Optional[float] = None  # presynaptic trace decay; null: 1 - 1/tau (LIF), 1 (IF)


def method_checks(r) -> list[tuple[bool, str, str]]:
    """``(ok, key, why)`` of the method sections, for :func:`.recipe_checks.check_ranges`."""
    return [
        (r.ide.iters >= 1, "ide.iters", "must be >= 1"),
        (r.ide.tol > 0, "ide.tol", "must be > 0"),
        (r.spide.steps >= 1, "spide.steps", "must be >= 1"),
        (r.spide.vth_back > 0, "spide.vth_back", "must be > 0"),
        (r.spide.grad_scale > 0, "spide.grad_scale", "must be > 0"),
        (r.opzo.noise_scale > 0, "opzo.noise_scale", "must be > 0"),
        (0.0 <= r.opzo.momentum < 1.0, "opzo.momentum", "must lie in [0, 1)"),
        (r.opzo.noise in ("gaussian", "rademacher", "sphere"), "opzo.noise",
         "must be gaussian, rademacher or sphere"),
        (r.opzo.samples >= 1, "opzo.samples", "must be >= 1"),
        (r.opzo.trace_decay is None or 0.0 <= r.opzo.trace_decay <= 1.0, "opzo.trace_decay",
         "must lie in [0, 1] or be null"),
    ]
