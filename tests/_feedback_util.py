"""The tiny feedback-SNN training behind ``test_feedback_snn_learning.py``, shared with
``bench/feedback_snn.py bars`` (which measures it over many seeds so that the test's bar sits well
below the worst seed)."""

from __future__ import annotations

import torch
from _learning_util import digits_batches

from sj_bwsnn.engine.methods import IDE, SPIDE
from sj_bwsnn.engine.objectives import CrossEntropyObjective
from sj_bwsnn.models.fsnn import fsnn_fc
from sj_bwsnn.neuron import IFNode

METHODS = ("ide", "spide")
EPOCHS = 1  # digits, fsnn_fc 64-128 + F128, IF, T=8


def feedback_accuracy(method: str, seed: int = 0, epochs: int = EPOCHS, batches=None) -> float:
    """Test accuracy of a small feedback SNN trained on digits by ``method`` (SGD 0.05, momentum
    0.9); ``seed`` sets the initial weights (and the training order when ``batches`` is None)."""
    train, test = batches or digits_batches(seed)
    torch.manual_seed(seed)
    net = fsnn_fc(in_chans=1, img_size=8, hidden=128, num_classes=10, T=8, neuron=IFNode,
                  neuron_kwargs=dict(v_threshold=2.0, v_reset=None),
                  v_init=0.5 if method == "spide" else 0.0)
    step = IDE() if method == "ide" else SPIDE(steps=50)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    objective = CrossEntropyObjective()
    for _ in range(epochs):
        net.train()
        for x, y in train:
            loss, logits = step.train_step(net, x, y, objective, opt)
            assert torch.isfinite(loss) and logits.shape == (len(y), 10)
    net.eval()
    with torch.no_grad():
        correct = sum((net(x).argmax(1) == y).sum().item() for x, y in test)
    return correct / sum(len(y) for _, y in test)
