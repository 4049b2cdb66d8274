"""The tiny training run behind ``test_methods_learning.py``, shared with ``bench/test_bars.py``
(which measures it over many seeds so that the test's bar sits well below the worst seed)."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional

from sj_bwsnn.data import build_loaders
from sj_bwsnn.engine.methods import OTTT, SLTTK, build_method
from sj_bwsnn.engine.objectives import CrossEntropyObjective
from sj_bwsnn.engine.recipe import DataConfig
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.neuron import LIFNode
from sj_bwsnn.neuron.dsr import DSRIFNode

METHODS = ("bptt", "sltt", "sltt_fused", "sltt_k", "ottt", "ottt_online", "dsr")
EPOCHS = 3  # digits, a 2-stage 1-bit BW-ResNet at T=2


def digits_batches(seed: int = 0):
    """Training and test batches of digits (batch 32); ``seed`` fixes the training order."""
    train, test, _ = build_loaders(DataConfig(batch_size=32), seed=seed)
    return list(train), list(test)


def method_accuracy(method: str, seed: int = 0, epochs: int = EPOCHS, batches=None) -> float:
    """Test accuracy of a tiny 1-bit BW-ResNet trained on digits by ``method`` (AdamW, lr 0.01);
    ``seed`` sets the initial weights (and the training order when ``batches`` is not given)."""
    train, test = batches or digits_batches(seed)
    torch.manual_seed(seed)
    neuron, kw = LIFNode, {}  # SpikingJelly's LIF defaults (hard reset)
    if method.startswith("ottt"):  # OTTT's neuron (it refuses hard resets): soft, detached reset
        kw = dict(tau=2.0, decay_input=False, v_reset=None, detach_reset=True)
    if method == "dsr":  # threshold 1.0 (our choice for T=2; DSR's IF runs start at 6 for T=20)
        neuron, kw = DSRIFNode, dict(v_threshold=1.0)
    model = BWResNet((1, 1), (16, 32), stem="cifar", in_chans=1, num_classes=10, T=2, binary=True,
                     neuron=neuron, neuron_kwargs=kw)
    step = {"sltt_k": SLTTK(k=1), "ottt": OTTT(0.5), "ottt_online": OTTT(0.5, online_update=True)
            }.get(method) or build_method(method)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    objective = CrossEntropyObjective()
    for _ in range(epochs):
        model.train()
        for x, y in train:
            loss, logits = step.train_step(model, x, y, objective, opt)
            functional.reset_net(model)
            assert torch.isfinite(loss) and logits.shape == (len(y), 10)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test:
            correct += (model(x).argmax(1) == y).sum().item()
            functional.reset_net(model)
    return correct / sum(len(y) for _, y in test)
