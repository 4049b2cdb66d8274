"""Activation memory: the meter counts what autograd keeps, and step-wise methods keep O(1) in T."""

from __future__ import annotations

import contextlib

import pytest
import torch
from spikingjelly.activation_based import functional

from sj_bwsnn.analysis.memory import SavedActivationMeter
from sj_bwsnn.engine.methods import OTTT, SLTTK, build_method
from sj_bwsnn.engine.objectives import CrossEntropyObjective
from sj_bwsnn.models.bw_resnet import bw_resnet_tiny
from sj_bwsnn.neuron import LIFNode


def test_meter_counts_saved_storages_once_until_backward_releases_them():
    x = torch.randn(1000, requires_grad=True)
    w = torch.randn(1000, requires_grad=True)
    with SavedActivationMeter(exclude=[w]) as meter:
        y = x.exp()  # saves its output y: 4000 bytes
        assert meter.live_bytes == 4000
        # each product saves a view of y (storage already counted) and a view of w (excluded)
        z = (y[:500] * w[:500]).sum() + (y[500:] * w[500:]).sum()
        assert meter.live_bytes == 4000
        q = (x * 2).tanh()  # saves its output, a new 4000-byte storage
        assert meter.live_bytes == 8000
    assert meter.peak_bytes == 8000
    z.backward()
    assert meter.live_bytes == 4000  # z's graph released y; q's graph is still alive
    q.sum().backward()
    assert meter.live_bytes == 0


def test_meter_leaves_gradients_unchanged(one_thread):
    def grads(meter):
        torch.manual_seed(0)
        model = bw_resnet_tiny(num_classes=10, T=2, neuron=LIFNode)
        with meter:
            model(torch.randn(4, 1, 8, 8)).logsumexp(1).sum().backward()
        return [p.grad for p in model.parameters()]

    measured, plain = grads(SavedActivationMeter()), grads(contextlib.nullcontext())
    assert all(torch.equal(a, b) for a, b in zip(measured, plain))


def test_meter_releases_a_graph_dropped_without_backward():
    x = torch.randn(256, requires_grad=True)
    with SavedActivationMeter() as meter:
        y = x.sigmoid()
        assert meter.live_bytes == 1024
        del y
    assert meter.live_bytes == 0 and meter.peak_bytes == 1024


def saved_peak(method, T: int) -> int:
    torch.manual_seed(0)
    model = bw_resnet_tiny(num_classes=10, T=T, neuron=LIFNode, neuron_kwargs=dict(tau=2.0, v_reset=None))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with SavedActivationMeter(exclude=[*model.parameters(), *model.buffers()]) as meter:
        method.train_step(model, x, y, CrossEntropyObjective(), optimizer)
    functional.reset_net(model)
    assert meter.live_bytes == 0
    return meter.peak_bytes


@pytest.mark.parametrize("method", [build_method("sltt"), SLTTK(k=1), OTTT(0.5), OTTT(0.5, online_update=True)],
                         ids=["sltt", "sltt_k", "ottt", "ottt_online"])
def test_step_wise_methods_keep_activation_memory_flat_in_T(one_thread, method):
    assert saved_peak(method, 6) == saved_peak(method, 1) > 0


@pytest.mark.parametrize("name", ["bptt", "sltt_fused"])
def test_multi_step_methods_keep_activation_memory_linear_in_T(one_thread, name):
    one, six = saved_peak(build_method(name), 1), saved_peak(build_method(name), 6)
    assert six > 2 * one  # what the step-wise methods avoid (and what the meter must see)
