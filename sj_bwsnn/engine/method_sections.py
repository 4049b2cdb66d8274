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
