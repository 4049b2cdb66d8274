"""A network whose operation counts are worked out by hand (tests of energy, summary, NeuroBench).

``HandNet`` on one sample, T=2, the same spike frame at both steps::

    input  [2, 1, 1, 3, 3]: spikes at (0, 0) (a corner) and (1, 1) (the centre)
    conv   1 -> 2 channels, 3x3, padding 1, every weight 1, no bias (SpikingJelly layer, step 'm')
    sn     IF, threshold 1.5, soft reset (v -= 1.5 on a spike)
    pool   global average pool;  fc  2 -> 3, weights [[0.5, 0], [0, 2], [1.5, -1]], no bias
       (not all in {0, 1}: SpikingJelly would take a {0, 1} weight matrix for the spike operand)

Conv output per channel and step (spikes in each 3x3 window) = [[2,2,1],[2,2,1],[1,1,1]].
Step 1: the 4 positions holding 2 fire (v: 2 -> 0.5); step 2: v = 0.5 + 2 or 1 + 1, all 9 fire.
So the neuron emits 2 * (4 + 9) = 26 spikes of 36 outputs; pooled: [4/9, 4/9] then [1, 1].
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from sj_bwsnn.neuron import IFNode

T = 2


class HandNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = layer.Conv2d(1, 2, 3, padding=1, bias=False, step_mode="m")
        self.sn = IFNode(step_mode="m", v_threshold=1.5, v_reset=None, backend="torch")
        self.pool = layer.AdaptiveAvgPool2d(1, step_mode="m")
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 2.0], [1.5, -1.0]]))

    def forward(self, x):
        return self.fc(self.pool(self.sn(self.conv(x))).flatten(2))  # [T, N, 3]


def hand_input() -> torch.Tensor:
    x = torch.zeros(T, 1, 1, 3, 3)
    x[:, 0, 0, 0, 0] = 1.0
    x[:, 0, 0, 1, 1] = 1.0
    return x


# per sample, all T steps
SPIKES, OUTPUTS = 26, 36
# SpikingJelly: the corner spike reaches 2x2 outputs, the centre one 3x3, in 2 channels, 2 steps
SJ_SOPS = (4 + 9) * 2 * T  # 52
NEURON_ACS = 3 * OUTPUTS  # IF soft reset, per neuron and step: v + x, v - 1.5 (fire), v - 1.5 s
POOL_ACS = 2 * 2 * 9 - 2 * 2  # mean over 9 positions: inputs - outputs
FC_MACS = 2 * 3 * 2  # pooled spikes are not binary: [2, 2] @ [2, 3]
# paper convention: FLOPs/step = 18 outputs x fan-in 9; input rate 2/9
PAPER_CONV_SOPS = 162 * 2 / 9 * T  # 72: each spike driving its full fan-out of 18
PAPER_FC_SOPS = 6 * (SPIKES / OUTPUTS) * T  # pooled rate = firing rate = 13/18
# NeuroBench: dense = every synapse inside the image, padding excluded
NB_DENSE_CONV = (4 * 4 + 4 * 6 + 9) * 2 * T  # windows of 4 (corners), 6 (edges), 9: 196
NB_EFFECTIVE_FC = 4 * T  # both inputs non-zero: the 4 non-zero weights, per step
