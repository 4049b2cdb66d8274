"""DSR as published: the neurons against the official code's equations (qymeng94/DSR
cifar/modules/neuron.py), the in-place threshold floor, tau's mapping to SpikingJelly's LIF, and
the DSR read-out head (cifar/modules/preresnet.py:147-162)."""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import functional

from sj_bwsnn.engine.methods import DSR
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.neuron import LIFNode
from sj_bwsnn.neuron.dsr import DSRIFNode, DSRLIFNode

pytestmark = pytest.mark.usefixtures("one_thread")


def official_weights(T, tau, dt):
    """neuron.py:16-20: exp(-1/tau * (dt*T - i*dt)) for i = 1..T."""
    return torch.tensor([math.exp(-1 / tau * (dt * T - i * dt)) for i in range(1, T + 1)])


def official(x, g, vth, kind, tau=1.0, dt=0.05, a=0.3):
    """Forward and backward of the official IFFunction / LIFFunction, written out (neuron.py
    29-70 and 129-194): outputs, d<out, g>/dx, d<out, g>/dVth."""
    T = x.shape[0]
    b = math.exp(-dt / tau)
    mem, out = torch.zeros_like(x[0]), []
    for t in range(T):
        mem = b * mem + (1 - b) * x[t] if kind == "lif" else mem + x[t]
        spike = (mem >= a * vth).float() * vth
        mem = mem - spike
        out.append(spike / dt if kind == "lif" else spike)
    if kind == "lif":
        w = official_weights(T, tau, dt).view(T, *[1] * (x.dim() - 1))
        rate, g_code = (w * x).sum(0) / w.sum(), (w * g).sum(0) / w.sum() * T
        inside, above = (rate > 0) & (rate < vth / dt * tau), rate > vth / dt * tau
        gx = torch.where(inside, g_code / tau, 0.0)
        gv = (g_code * above).sum() * dt
    else:
        rate, g_code = x.mean(0), g.mean(0) * T
        gx = torch.where((rate < 0) | (rate > vth), 0.0, g_code)
        gv = (g_code * (rate > vth)).sum()
    return torch.stack(out), torch.stack([gx] * T) / T, gv


@pytest.mark.parametrize("kind", ["if", "lif"])
def test_dsr_neurons_follow_the_official_code(kind):
    g = torch.Generator().manual_seed(0)
    T = 5
    if kind == "lif":  # official defaults: Vth 0.3, tau 1, dt 0.05, alpha 0.3
        node, vth, a = DSRLIFNode(), 0.3, 0.3
        x = 20.0 * torch.rand(T, 4, 7, generator=g) - 5.0  # rates on both sides of Vth tau / dt
    else:  # the README's IF runs: Vth 6, alpha 0.5
        node, vth, a = DSRIFNode(), 6.0, 0.5
        x = 16.0 * torch.rand(T, 4, 7, generator=g) - 4.0
    x.requires_grad_(True)
    gout = torch.randn(T, 4, 7, generator=g)
    out = node(x)
    (out * gout).sum().backward()
    want, gx, gv = official(x.detach(), gout, vth, kind, a=a)
    assert 0 < out.count_nonzero() < out.numel()
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(node.v_threshold.grad, gv)
    assert gv != 0 and (x.grad == 0).any() and (x.grad != 0).any()


def test_threshold_floor_is_applied_in_place_and_keeps_its_gradient():
    node = DSRIFNode(v_threshold=0.5, v_threshold_lower_bound=0.01)
    with torch.no_grad():
        node.v_threshold.fill_(0.001)  # an optimizer step took it below the floor
    out = node(torch.full((3, 2, 4), 2.0))  # rates above the threshold: Vth gets a gradient
    out.sum().backward()
    assert node.v_threshold.item() == pytest.approx(0.01)  # clamped in place (neuron.py:117-118)
    assert node.v_threshold.grad != 0  # SpikingJelly's out-of-place clamp would give 0 here


def test_dsr_tau_is_a_spikingjelly_lif_with_tau_sj():
    """b = exp(-dt/tau) is SpikingJelly's decay_input LIF with tau_sj = 1 / (1 - exp(-dt/tau))."""
    tau, dt, vth = 1.0, 0.05, 0.5
    tau_sj = 1.0 / (1.0 - math.exp(-dt / tau))
    assert tau_sj == pytest.approx(20.504, abs=1e-3)
    x = 30.0 * torch.rand(8, 3, 20, generator=torch.Generator().manual_seed(3))
    dsr = DSRLIFNode(v_threshold=vth, tau=tau, delta_t=dt, alpha=1.0)(x)
    sj = LIFNode(tau=tau_sj, decay_input=True, v_threshold=vth, v_reset=None, step_mode="m",
                 backend="torch")(x)
    assert 0 < sj.count_nonzero() < sj.numel()
    torch.testing.assert_close(dsr * dt / vth, sj)


@pytest.mark.parametrize("neuron", [DSRIFNode, DSRLIFNode])
def test_dsr_head_reads_out_the_official_rate(neuron):
    torch.manual_seed(0)
    T = 20  # DSR's default time steps (main_single_gpu.py:33)
    model = BWResNet((1,), (8,), stem="cifar", in_chans=1, num_classes=5, T=T, neuron=neuron,
                     neuron_kwargs={"v_threshold": 0.5}, head="dsr")
    names = [n for n, _ in model.named_children()]
    assert names[-6:] == ["head_sn", "pool", "pool_sn", "fc", "fc_bn", "out_sn"]
    seen = []
    model.out_sn.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    x = torch.randn(6, 1, 8, 8)
    logits = model(x)
    spikes = seen[0]
    assert 0 < spikes.count_nonzero() < spikes.numel()
    if neuron is DSRLIFNode:  # preresnet.py:158-159: weighted rate with tau, dt
        w = official_weights(T, model.out_sn.tau, model.out_sn.delta_t).view(T, 1, 1)
        want = (w * spikes).sum(0) / w.sum()
    else:  # preresnet.py:160-161: plain rate
        want = spikes.mean(0)
    torch.testing.assert_close(logits, want)
    functional.reset_net(model)
    loss, _ = DSR().train_step(model, x, torch.arange(6) % 5, lambda z, y, x: z.square().mean()
                               + torch.nn.functional.cross_entropy(z, y),
                               torch.optim.SGD(model.parameters(), lr=0.0))
    assert torch.isfinite(loss) and model.fc.weight.grad.abs().sum() > 0
    assert model.out_sn.v_threshold.grad is not None
