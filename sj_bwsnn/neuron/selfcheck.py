"""Check the fused kernels against SpikingJelly's Torch reference on this machine (``sj-bwsnn doctor``).

:func:`check_fused` runs a few neuron configurations through the fused path (:func:`fused.multi_step
<sj_bwsnn.neuron.fused.multi_step>`, with whatever launcher is installed: CuPy on a GPU, the g++ host
build in the CPU tests) and through SpikingJelly's own multi-step path on the CPU, and compares:

* spikes — identical, except for neurons whose float64 potential ``H[t]`` comes within
  ``NEAR = 1e-6`` of the threshold at some step (:func:`near_threshold`; there, float32 rounding
  may legitimately flip a spike), which are left out of every comparison;
* input gradients — against a float64 reference, as a norm-relative error
  ``||g - g64|| / ||g64||``: at most ``1e-5`` for float32 input, ``1e-2`` for bfloat16 input
  (gradients stored in bfloat16; the membrane is float32 in the kernel either way).

The bfloat16 reference runs on the bfloat16-rounded input, so both sides see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from spikingjelly.activation_based import surrogate

from . import fused
from .nodes import IFNode, LIFNode

NEAR = 1e-6
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}

#: (name, node kind, node keyword arguments): hard and soft reset, both input decays, IF, three
#: surrogates, detach_reset and the SLTT/OTTT gradient (temporal_grad=False)
CASES = (
    ("lif hard sigmoid", "lif", dict(tau=2.0, decay_input=True, v_reset=0.0,
                                     surrogate_function=surrogate.Sigmoid(alpha=4.0))),
    ("lif soft triangle sltt", "lif", dict(tau=1.1, decay_input=False, v_reset=None,
                                           surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0),
                                           detach_reset=True, temporal_grad=False)),
    ("if hard atan", "if", dict(v_reset=0.0, surrogate_function=surrogate.ATan(alpha=2.0))),
)


@dataclass
class Check:
    """One configuration and dtype: what differed from the reference."""

    case: str
    dtype: str
    spike_mismatches: int  # outside near-threshold neurons; must be 0
    compared: int  # spikes compared
    grad_error: float  # norm-relative, against float64
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.spike_mismatches == 0 and self.grad_error <= self.tolerance


def near_threshold(x64: torch.Tensor, kind: str, tau: float = 2.0, decay_input: bool = True,
                   v_threshold: float = 1.0, v_reset: float | None = 0.0) -> torch.Tensor:
    """Neurons ``[N, ...]`` whose float64 potential ``H[t]`` lies within :data:`NEAR` of
    ``v_threshold`` at some step of ``x64 [T, N, ...]`` (the state starting at ``v_reset``, or 0
    for a soft reset, as after ``reset_net``)."""
    reset = 0.0 if v_reset is None else v_reset
    v = torch.full_like(x64[0], reset)
    near = torch.zeros_like(x64[0], dtype=torch.bool)
    for x in x64:
        if kind == "if":
            h = v + x
        elif decay_input:
            h = v + (x - (v - reset)) / tau
        else:
            h = v - (v - reset) / tau + x
        near |= (h - v_threshold).abs() < NEAR
        s = (h >= v_threshold).to(h.dtype)
        v = h - s * v_threshold if v_reset is None else s * reset + (1 - s) * h
    return near


def _node(kind: str, kwargs: dict, backend: str):
    return (LIFNode if kind == "lif" else IFNode)(step_mode="m", backend=backend, **kwargs)


def check_fused(device: torch.device | str, T: int = 4, shape: tuple[int, ...] = (8, 33, 17),
                seed: int = 0) -> list[Check]:
    """Run :data:`CASES` in float32 and bfloat16 on ``device`` through the fused path; one
    :class:`Check` each (module docstring). Raises what the launcher raises (e.g. CuPy errors)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    checks = []
    for name, kind, kwargs in CASES:
        for dtype in (torch.float32, torch.bfloat16):
            x = (torch.randn(T, *shape, generator=gen) * 1.5 + 0.3).to(dtype)
            weight = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            ours, ref = _node(kind, kwargs, "cupy"), _node(kind, kwargs, "torch")
            x_ours = x.to(device, copy=True).requires_grad_()
            x_ref = x.double().requires_grad_()  # x itself stays a plain tensor
            s_ours = fused.multi_step(ours, x_ours)
            s_ref = ref(x_ref)
            (s_ours.double() * weight.to(device)).sum().backward()
            (s_ref * weight).sum().backward()
            params = {k: kwargs[k] for k in ("tau", "decay_input", "v_reset") if k in kwargs}
            keep = ~near_threshold(x.double(), kind, **params)
            got, want = s_ours.detach().cpu().double()[:, keep], s_ref.detach()[:, keep]
            g, g64 = x_ours.grad.cpu().double(), x_ref.grad
            err = float((g - g64).norm() / g64.norm().clamp_min(1e-12))
            checks.append(Check(name, str(dtype).replace("torch.", ""), int((got != want).sum()),
                                got.numel(), err, TOLERANCE[dtype]))
    return checks


def summary(checks: list[Check]) -> str:
    """One line: how many checks passed, and the worst gradient error per dtype."""
    worst = {}
    for c in checks:
        worst[c.dtype] = max(worst.get(c.dtype, 0.0), c.grad_error)
    errors = ", ".join(f"{d} grad err <= {e:.1e}" for d, e in worst.items())
    bad = [c for c in checks if not c.ok]
    if not bad:
        return (f"fused kernels match SpikingJelly's reference ({len(checks)} checks: spikes identical, "
                f"{errors})")
    c = bad[0]
    return (f"fused kernels DISAGREE with SpikingJelly's reference: {c.case} {c.dtype}: "
            f"{c.spike_mismatches}/{c.compared} spikes differ, grad err {c.grad_error:.1e} "
            f"(tolerance {c.tolerance:.0e})")
