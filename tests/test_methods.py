"""Gradients of the training methods (CPU, float64): SLTT step-wise == multi-step with the
temporal path detached, OTTT == the presynaptic-trace formula, SLTT-K, online updates, DSR."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from torch import nn

from sj_bwsnn.engine.methods import (BPTT, DSR, OTTT, SLTT, SLTTK, SLTTFused, build_method,
                                     traced_layers)
from sj_bwsnn.errors import UserError
from sj_bwsnn.layers import BinaryLinear
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.neuron import LIFNode
from sj_bwsnn.neuron.dsr import DSRIFNode


pytestmark = pytest.mark.usefixtures("one_thread")


def ce(logits, y, x):
    return F.cross_entropy(logits, y)


def small_net(T=3, neuron=LIFNode, **nkw):
    torch.manual_seed(0)
    kw = dict(tau=2.0, decay_input=True, v_reset=0.0) if neuron is LIFNode else {}
    kw.update(nkw)
    return BWResNet((1, 1), (8, 16), stem="cifar", in_chans=1, num_classes=4, T=T,
                    neuron=neuron, neuron_kwargs=kw).double()


def grads_after(method, model, x, y, lr=0.0):
    opt = torch.optim.SGD(model.parameters(), lr=lr)  # lr 0: step() leaves the weights alone
    loss, logits = method.train_step(model, x, y, ce, opt)
    functional.reset_net(model)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, loss


def per_step_multistep_grads(model, x, y):
    """Reference: one multi-step forward, loss (1/T) sum_t CE(logits[t], y), one backward."""
    model.zero_grad(set_to_none=True)
    seq = model.forward_seq(x)
    (sum(ce(seq[t], y, x) for t in range(seq.shape[0])) / seq.shape[0]).backward()
    functional.reset_net(model)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, **tol):
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], **tol, msg=lambda m: f"{n}: {m}")


@pytest.fixture(params=["static", "frames"])
def batch(request):
    g = torch.Generator().manual_seed(1)
    shape = (5, 1, 8, 8) if request.param == "static" else (3, 5, 1, 8, 8)
    x = 2.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 4, (5,), generator=g)


def test_sltt_stepwise_gradient_equals_multistep_without_temporal_path(batch):
    x, y = batch
    ref = small_net().eval()  # eval: BN uses running stats, so N vs T*N per call cannot differ
    for m in ref.modules():
        if isinstance(m, LIFNode):
            m.temporal_grad = False
    expected = per_step_multistep_grads(ref, x, y)
    got, _ = grads_after(SLTT(), small_net().eval(), x, y)
    assert_same(got, expected)
    fused, _ = grads_after(SLTTFused(), small_net().eval(), x, y)
    assert_same(fused, expected)
    assert sum(g.abs().sum() for g in expected.values()) > 0
    # with the temporal path kept the gradient differs, so the detaching above is real
    full = per_step_multistep_grads(small_net().eval(), x, y)
    assert any(not torch.allclose(full[n], expected[n]) for n in expected)


def test_sltt_k_equals_sltt_at_k_T_and_checks_k(batch):
    x, y = batch
    assert_same(grads_after(SLTTK(k=3), small_net().eval(), x, y)[0],
                grads_after(SLTT(), small_net().eval(), x, y)[0])
    torch.manual_seed(5)
    one, _ = grads_after(SLTTK(k=1), small_net().eval(), x, y)
    assert not all(torch.allclose(one[n], g) for n, g in
                   grads_after(SLTT(), small_net().eval(), x, y)[0].items() if n in one)
    with pytest.raises(UserError, match="exceeds"):
        grads_after(SLTTK(k=4), small_net().eval(), x, y)


class TinyNet(nn.Module):
    """x -> Linear -> LIF -> BinaryLinear -> LIF -> Linear, static input repeated over T steps."""

    def __init__(self, T=3):
        super().__init__()
        torch.manual_seed(0)
        self.T = T
        self.fc0 = nn.Linear(4, 5)  # sees the raw input: OTTT leaves it untraced
        self.sn0 = LIFNode(tau=2.0, decay_input=False, v_reset=None, step_mode="m")
        self.fc1 = BinaryLinear(5, 6, step_mode="m")
        self.sn = LIFNode(tau=2.0, decay_input=False, v_reset=None, step_mode="m")
        self.fc2 = nn.Linear(6, 3)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)  # alpha = mean |w| large enough for sn to fire

    def forward_seq(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1) if x.dim() == 2 else x
        return self.fc2(self.sn(self.fc1(self.sn0(self.fc0(x)))))


def test_ottt_weight_gradient_equals_trace_formula():
    T, lam = 3, 0.5
    model = TinyNet(T).double()
    g = torch.Generator().manual_seed(2)
    x = 3.0 * torch.rand(7, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    seen = {"fc0": [], "fc1": [], "fc2": [], "s0": [], "s": []}
    def keep(name):
        def hook(module, inputs, out):
            if name.startswith("fc"):
                out.retain_grad()  # delta[t] = dL/du[t] of this layer's output
            seen[name].append(out)
        return hook

    for name in seen:
        getattr(model, name.replace("s", "sn") if name.startswith("s") else name
                ).register_forward_hook(keep(name))
    got, _ = grads_after(OTTT(trace_decay=lam), model, x, y)
    assert "forward" not in vars(model.fc1)  # the layers' own forward is back

    def trace(inputs):
        out, a = [], None
        for s in inputs:
            a = s if a is None else lam * a + s
            out.append(a)
        return out

    s0 = [s[0].detach() for s in seen["s0"]]
    spikes = [s[0].detach() for s in seen["s"]]
    for ss in (s0, spikes):
        assert 0 < sum(s.sum() for s in ss) < sum(s.numel() for s in ss)  # some firing
    d0, d1, d2 = ([o.grad[0] for o in seen[k]] for k in ("fc0", "fc1", "fc2"))
    # the input layer: plain per-step gradient sum_t delta[t] x^T (no trace), as OTTT's first conv
    torch.testing.assert_close(got["fc0.weight"], sum(d.T @ x for d in d0))
    g_b1 = sum(d.T @ a for d, a in zip(d1, trace(s0)))
    w_b = model.fc1.binarized_weight()
    (g_latent,) = torch.autograd.grad(w_b, model.fc1.weight, g_b1)  # through the STE
    torch.testing.assert_close(got["fc1.weight"], g_latent)
    torch.testing.assert_close(got["fc2.weight"], sum(d.T @ a for d, a in zip(d2, trace(spikes))))
    torch.testing.assert_close(got["fc2.bias"], sum(d.sum(0) for d in d2))
    # the traces change the gradient relative to plain SLTT
    plain, _ = grads_after(SLTT(), TinyNet(T).double(), x, y)
    assert not torch.allclose(plain["fc2.weight"], got["fc2.weight"])


def test_ottt_traces_skip_the_stem_and_online_steps_every_time_step():
    model = small_net(T=2, v_reset=None)
    names = {id(m) for m in traced_layers(model)}
    assert id(model.stem[0]) not in names and id(model.fc) in names
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()) == len(names) + 1

    class Counting(torch.optim.SGD):
        steps = 0

        def step(self, closure=None):
            Counting.steps += 1
            return super().step(closure)

    x, y = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    before = copy.deepcopy(model.state_dict())
    OTTT(0.5, online_update=True).train_step(model, x, y, ce, Counting(model.parameters(), lr=0.1))
    assert Counting.steps == 2
    assert not torch.equal(before["fc.weight"], model.fc.weight)
    Counting.steps = 0
    functional.reset_net(model)
    OTTT(0.5).train_step(model, x, y, ce, Counting(model.parameters(), lr=0.1))
    assert Counting.steps == 1


def test_dsr_threshold_learns_and_needs_dsr_neurons():
    # SJ's DSR kernels emit float32 spikes; threshold 1 (not DSR's 6) for T=2
    model = small_net(T=2, neuron=DSRIFNode, v_threshold=1.0).float()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    got, _ = grads_after(DSR(), model, x, y)
    vth = [n for n in got if n.endswith("v_threshold")]
    assert vth and any(got[n] != 0 for n in vth)
    assert got["blocks.0.0.conv.weight"].abs().sum() > 0
    with pytest.raises(UserError, match="DSR neurons"):
        grads_after(DSR(), small_net(T=2).float(), x, y)


def test_fused_needs_flagged_nodes():
    model = nn.Sequential(layer.Linear(3, 2, step_mode="m"))
    model.forward_seq = model.forward
    with pytest.raises(UserError, match="sltt_fused"):
        SLTTFused().train_step(model, torch.randn(2, 4, 3), torch.tensor([0, 1, 0, 1]), ce,
                               torch.optim.SGD(model.parameters(), lr=0.1))


def test_bptt_matches_autograd_on_mean_logits():
    x, y = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    ref = small_net(T=2)
    ce(ref(x), y, x).backward()
    got, loss = grads_after(BPTT(), small_net(T=2), x, y)
    assert_same(got, {n: p.grad for n, p in ref.named_parameters() if p.grad is not None})


def test_build_method_names():
    assert isinstance(build_method("sltt"), SLTT)
    with pytest.raises(UserError, match="did you mean 'sltt_k'"):
        build_method("slttk")
