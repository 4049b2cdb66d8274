"""HLOP against direct computations: the Hebbian rule finds the principal subspace (SVD), the
projected update is orthogonal to the old subspace, and projecting the activity equals projecting
the weight gradient for rate-based lateral neurons (float64, BPTT and OTTT traces)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

from sj_bwsnn.continual.hlop import HLOP, Subspace
from sj_bwsnn.continual.protect import Stage
from sj_bwsnn.engine.methods import BPTT, OTTT
from sj_bwsnn.engine.precision import Precision
from sj_bwsnn.engine.recipe import recipe_from_dict
from sj_bwsnn.layers import BinaryConv2d, BinaryLinear
from sj_bwsnn.neuron import LIFNode

pytestmark = pytest.mark.usefixtures("one_thread")


def _principal_angles_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles between the row spaces of ``a`` and ``b`` (degrees)."""
    qa, _ = torch.linalg.qr(a.t())
    qb, _ = torch.linalg.qr(b.t())
    cos = torch.linalg.svdvals(qa.t() @ qb).clamp(max=1.0)
    return torch.rad2deg(torch.arccos(cos))


def _data(n: int, dim: int, spectrum, seed: int):
    """``n`` samples in ``dim`` dims with standard deviations ``spectrum`` along random
    orthonormal directions (plus small isotropic noise); returns (x, directions)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    z = torch.randn(n, len(spectrum), generator=g) * torch.tensor(spectrum)
    x = z @ basis[:, :len(spectrum)].t() + 0.01 * torch.randn(n, dim, generator=g)
    return x, basis[:, :len(spectrum)].t()


def test_hebbian_rule_finds_the_principal_subspace():
    torch.manual_seed(0)
    dim, k = 24, 4
    x, _ = _data(4096, dim, [3.0, 2.5, 2.0, 1.5, 0.4, 0.3], seed=1)
    space = Subspace(dim, lr=0.01)
    space.add(k)
    for epoch in range(12):
        for batch in x.split(64):
            space.hebbian(batch)
    top = torch.linalg.svd(x, full_matrices=False).Vh[:k]
    angles = _principal_angles_deg(space.weight, top)
    assert angles.max() < 5.0, angles
    # Oja's subspace rule also makes the rows orthonormal
    assert torch.allclose(space.weight @ space.weight.t(), torch.eye(k), atol=0.05)


def test_new_neurons_learn_what_the_old_subspace_misses():
    """After a merge the old rows stay fixed and the new rows find the next directions: together
    they span the principal subspace of both tasks' activity."""
    torch.manual_seed(0)
    dim = 20
    x1, d1 = _data(3000, dim, [3.0, 2.0], seed=2)
    space = Subspace(dim, lr=0.01)
    space.add(2)
    for _ in range(10):
        for batch in x1.split(64):
            space.hebbian(batch)
    space.merge()
    old = space.weight.clone()
    g = torch.Generator().manual_seed(3)
    x2 = x1[torch.randperm(len(x1), generator=g)] + 2.0 * torch.randn(len(x1), 1, generator=g) * \
        torch.linalg.qr(torch.randn(dim, 1, generator=g))[0].t()
    space.add(2)
    for _ in range(10):
        for batch in x2.split(64):
            space.hebbian(batch)
    assert torch.equal(space.weight[:2], old)  # the old subspace is untouched
    top = torch.linalg.svd(x2, full_matrices=False).Vh[:3]  # x2 spans x1's two + one new
    assert _principal_angles_deg(space.weight, top).max() < 5.0


def test_spiking_lateral_neurons_quantise_the_response():
    space = Subspace(4, lr=0.01, spiking=(20.0, 40))
    space.weight = torch.eye(4)[:2]
    y = space.lateral(torch.tensor([[0.26, -31.0, 1.0, 0.0]]))
    # clamp to +-20, then 40 steps over the scale of 20: a resolution of 0.5
    assert torch.allclose(y, torch.tensor([[0.5, -20.0]]))


# -- projection inside a real training step -----------------------------------------------------


class _Net(nn.Module):
    """linear -> LIF -> conv -> LIF -> linear on [T, N, ...] (multi-step), with forward_seq."""

    def __init__(self, binary: bool = False):
        super().__init__()
        self.T = 3
        self.fc1 = layer.Linear(12, 2 * 4 * 4, step_mode="m")
        self.sn1 = LIFNode(step_mode="m", v_reset=None, tau=2.0, decay_input=False, v_threshold=0.3)
        conv = BinaryConv2d if binary else layer.Conv2d
        self.conv = conv(2, 3, 3, padding=1, step_mode="m", bias=False)
        self.sn2 = LIFNode(step_mode="m", v_reset=None, tau=2.0, decay_input=False, v_threshold=0.1)
        lin = BinaryLinear if binary else layer.Linear
        self.fc2 = lin(3 * 4 * 4, 5, step_mode="m")

    def forward_seq(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(0).repeat(self.T, 1, 1)
        s = self.sn1(self.fc1(x)).reshape(x.shape[0], x.shape[1], 2, 4, 4)
        return self.fc2(self.sn2(self.conv(s)).flatten(2))

    def forward(self, x):
        return self.forward_seq(x).mean(0)


def _hlop_on(model, method, proj_type, seed=0):
    recipe = recipe_from_dict({"continual": {"protocol": "permuted", "hlop": {
        "neurons": [3], "lr": [0.01], "proj_type": proj_type}}})
    hlop = HLOP(recipe)
    run = SimpleNamespace(model=model, method=method, epoch=0)
    hlop.attach(run)
    torch.manual_seed(seed)
    for space in hlop.spaces:  # an old subspace of 3 orthonormal rows, held fixed
        space.weight = torch.linalg.qr(torch.randn(space.dim, 3, dtype=torch.float64))[0].t()
        space.velocity = torch.zeros_like(space.weight)
        space.merge()
    hlop.learning, hlop.projecting = False, True
    return hlop


def _grads(model, method, hlop, x, y):
    precision = Precision()
    precision.grad_transforms.append(hlop.grad_transform)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    objective = lambda logits, yy, xx: nn.functional.cross_entropy(logits, yy)  # noqa: E731
    method.train_step(model, x, y, objective, opt, precision)
    functional.reset_net(model)
    hlop.batch_reset()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method_name", ["bptt", "ottt"])
def test_input_projection_equals_weight_projection(method_name):
    """For rate-based lateral neurons, removing ``P x`` from every presynaptic activity (OTTT:
    every trace) before the weight gradient is the same linear map as removing it from the
    gradient's rows: the two ``proj_type`` give equal gradients."""
    x = torch.randn(6, 12, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    grads = {}
    for proj_type in ("input", "weight"):
        torch.manual_seed(1)
        model = _Net().double()
        method = BPTT() if method_name == "bptt" else OTTT(trace_decay=0.5)
        hlop = _hlop_on(model, method, proj_type)
        grads[proj_type] = _grads(model, method, hlop, x, y)
    for name, g in grads["weight"].items():
        assert torch.allclose(grads["input"][name], g, atol=1e-10), name


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("proj_type", ["input", "weight"])
def test_projected_update_is_orthogonal_to_the_old_subspace(proj_type, binary):
    torch.manual_seed(2)
    model = _Net(binary).double()
    method = BPTT()
    hlop = _hlop_on(model, method, proj_type)
    x = torch.randn(8, 12, dtype=torch.float64)
    g = _grads(model, method, hlop, x, torch.randint(0, 5, (8,)))
    names = {id(p): n for n, p in model.named_parameters()}
    for m, space in zip(hlop.layers, hlop.spaces):
        rows = g[names[id(m.weight)]].reshape(m.weight.shape[0], -1)
        assert rows.norm() > 1e-6  # there is an update
        inside = rows @ space.weight.t()
        # binary, input: projected before the STE, which here (latent weights inside its clip,
        # per-channel alpha detached) only scales rows, so the latent update stays orthogonal
        assert inside.abs().max() < 1e-10 * max(1.0, rows.abs().max().item())
    # without projection the same update has a component in the old subspace
    hlop.projecting = False
    g0 = _grads(model, method, hlop, x, torch.randint(0, 5, (8,)))
    rows = g0[names[id(model.fc1.weight)]]
    assert (rows @ hlop.spaces[0].weight.t()).abs().max() > 1e-6


def test_hebbian_input_is_the_weighted_firing_rate():
    """``hebbian_input: rate`` with DSR-LIF neurons feeds ``sum_t w_t x_t / sum_t w_t``,
    ``w_t = exp(-(T - t) dt / tau)`` (HLOP-SNN modules/neuron_dsr.py:16-20), whether the layer
    sees all T steps at once or one step per call."""
    recipe = recipe_from_dict({"neuron": {"preset": "dsr_lif"}, "train": {"method": "dsr"},
                               "continual": {"protocol": "permuted"}})
    hlop = HLOP(recipe)
    lin = nn.Linear(4, 2)
    x = torch.rand(5, 3, 4)  # [T, N, D]
    tau, dt, T = 1.0, 0.05, 5
    w = torch.tensor([math.exp(-(dt * T - t * dt) / tau) for t in range(1, T + 1)])
    want = (w.view(T, 1, 1) * x).sum(0) / w.sum()
    hlop._record(0, lin, x)
    got = hlop._acc[0][0] / hlop._acc[0][1]
    assert torch.allclose(got, want, atol=1e-6)
    hlop._acc.clear()
    for t in range(T):  # step by step (OTTT / SLTT call the layer once per step)
        hlop._record(0, lin, x[t:t + 1])
    assert torch.allclose(hlop._acc[0][0] / hlop._acc[0][1], want, atol=1e-6)


def test_stage_schedule_and_merge():
    recipe = recipe_from_dict({"continual": {"protocol": "permuted", "hlop": {
        "neurons": [[4, 2], 1], "lr": [0.01]}}})
    hlop = HLOP(recipe)
    model = nn.Sequential(nn.Linear(6, 3), nn.Linear(3, 2))
    hlop.attach(SimpleNamespace(model=model, method=BPTT(), epoch=0))
    hlop.begin_stage(Stage("task", 0))
    assert [s.rows for s in hlop.spaces] == [4, 2] and not hlop.projecting
    hlop.end_stage(Stage("task", 0))
    hlop.begin_stage(Stage("task", 1))
    assert [s.rows for s in hlop.spaces] == [5, 3] and [s.old for s in hlop.spaces] == [4, 2]
    assert hlop.projecting
    hlop.end_stage(Stage("task", 1))
    hlop.begin_stage(Stage("task", 2))  # a full subspace (3 of 3) takes no more rows
    assert [s.rows for s in hlop.spaces] == [6, 3]
