"""NeuroBench-compatible metrics (sj-bwsnn energy --neurobench): by hand on the network of
tests/_energy_util.py and against the neurobench package itself when it is installed."""

from __future__ import annotations

import pytest
import torch
from _energy_util import (NB_DENSE_CONV, NB_EFFECTIVE_FC, OUTPUTS, SJ_SOPS, SPIKES, T, HandNet,
                          hand_input)
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode

from sj_bwsnn.analysis.energy import energy_report
from sj_bwsnn.analysis.nbmetrics import connection_sparsity
from sj_bwsnn.layers import BinaryConv2d

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nb():
    return energy_report(HandNet(), [hand_input()], T=T, neurobench=True)["neurobench"]


def test_metrics_by_hand(nb):
    assert nb["footprint_bytes"] == (18 + 6) * 4  # conv 2x1x3x3 and fc 3x2 weights, fp32
    assert nb["connection_sparsity"] == pytest.approx(2 / 24)  # fc has 2 zero weights
    assert nb["activation_sparsity"] == pytest.approx(1 - SPIKES / OUTPUTS)
    so = nb["synaptic_operations"]
    # conv on spikes: every (spike, weight) pair inside the image = SpikingJelly's synaptic ACs;
    # fc on pooled spikes (4/9, 1): MACs, the non-zero weights only; dense: padding excluded
    assert so == {"effective_acs": SJ_SOPS, "effective_macs": NB_EFFECTIVE_FC,
                  "dense": NB_DENSE_CONV + 6 * T}


def test_binary_layers_are_read_through_their_forward_weights():
    """A latent weight of exactly 0 still acts as +alpha (sign(0) = +1): no zero connection,
    where NeuroBench, reading the latent weights, would find 1 of 54."""
    conv = BinaryConv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 0.0
    assert (conv.weight == 0).sum() == 1 and connection_sparsity(conv) == 0.0


def test_same_numbers_as_the_neurobench_package(nb):
    """neurobench 2.3.0 on the same network and input (its per-sample count divides by
    ``data[0].size(0)``, here T: compare totals)."""
    pytest.importorskip("neurobench")
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel

    net, x = HandNet(), hand_input()
    model = TorchModel(net)
    model.add_activation_module(BaseNode)
    model.register_hooks()
    with torch.no_grad():
        preds = model(x)
    functional.reset_net(net)
    data = (x, torch.zeros(1))
    ops = SynapticOperations()(model, preds, data)
    assert {k: v * x.shape[0] for k, v in ops.items()} == {
        "Effective_MACs": nb["synaptic_operations"]["effective_macs"],
        "Effective_ACs": nb["synaptic_operations"]["effective_acs"],
        "Dense": nb["synaptic_operations"]["dense"]}
    assert ActivationSparsity()(model, preds, data) == pytest.approx(nb["activation_sparsity"])
    assert Footprint()(model) == nb["footprint_bytes"]
    assert ConnectionSparsity()(model) == round(nb["connection_sparsity"], 4)
