"""train.loss_on (mean | per_step) for every method and train.mse_target (one_hot | ones):
float64 gradients against a direct computation of each loss, defaults, and the refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from sj_bwsnn.engine.methods import (BPTT, DSR, IDE, OTTT, SLTT, SLTTK, SPIDE, SLTTFused,
                                     build_method)
from sj_bwsnn.engine.objectives import (CrossEntropyObjective, DistillationObjective,
                                        build_objective, sequence_loss)
from sj_bwsnn.engine.recipe import recipe_from_dict
from sj_bwsnn.errors import UserError
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.neuron import LIFNode
from sj_bwsnn.neuron.dsr import DSRIFNode

pytestmark = pytest.mark.usefixtures("one_thread")


def ce(logits, y, x):
    return F.cross_entropy(logits, y)


def net(T=3, neuron=LIFNode, temporal_grad=True, **kw):
    torch.manual_seed(0)
    if neuron is LIFNode:
        kw = dict(tau=2.0, decay_input=True, v_reset=None, **kw)
    m = BWResNet((1, 1), (8, 16), stem="cifar", in_chans=1, num_classes=4, T=T, neuron=neuron,
                 neuron_kwargs=kw)
    for n in m.modules():
        if hasattr(n, "temporal_grad"):
            n.temporal_grad = temporal_grad
    return m.eval()  # BN on running statistics: N vs T*N per call cannot differ


def grads(method, model, x, y, objective=ce):
    loss, _ = method.train_step(model, x, y, objective, torch.optim.SGD(model.parameters(), lr=0))
    functional.reset_net(model)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, loss


def direct(model, x, y, loss_of_seq):
    """Reference: one multi-step forward, the loss written out, one backward."""
    model.zero_grad(set_to_none=True)
    loss = loss_of_seq(model.forward_seq(x))
    loss.backward()
    functional.reset_net(model)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, loss


def per_step_ce(seq, y):
    return sum(F.cross_entropy(seq[t], y) for t in range(seq.shape[0])) / seq.shape[0]


def same(a, b):
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], msg=lambda m: f"{n}: {m}")


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return (2.0 * torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64),
            torch.randint(0, 4, (5,), generator=g))


def test_bptt_per_step_is_the_mean_of_per_step_ce(batch):
    x, y = batch
    got, loss = grads(BPTT(loss_on="per_step"), net().double(), x, y)
    want, want_loss = direct(net().double(), x, y, lambda s: per_step_ce(s, y))
    same(got, want)
    torch.testing.assert_close(loss, want_loss.detach())
    mean, _ = grads(BPTT(), net().double(), x, y)  # the default: CE of the mean logits
    same(mean, direct(net().double(), x, y, lambda s: F.cross_entropy(s.mean(0), y))[0])
    assert any(not torch.allclose(mean[n], got[n]) for n in got)


def test_sltt_fused_takes_both_placements(batch):
    x, y = batch
    for loss_on, loss_of in (("per_step", lambda s: per_step_ce(s, y)),
                             ("mean", lambda s: F.cross_entropy(s.mean(0), y))):
        got, _ = grads(SLTTFused(loss_on=loss_on), net().double(), x, y)
        same(got, direct(net(temporal_grad=False).double(), x, y, loss_of)[0])


def test_dsr_per_step(batch):
    x, y = batch
    x = x.float()
    kw = dict(neuron=DSRIFNode, v_threshold=1.0)
    got, _ = grads(DSR(loss_on="per_step"), net(**kw), x, y)
    same(got, direct(net(**kw), x, y, lambda s: per_step_ce(s, y))[0])


def test_per_step_kd_compares_each_step_with_the_teacher(batch):
    x, y = batch

    class Teacher(torch.nn.Module):
        def forward(self, x):
            return torch.arange(4, dtype=x.dtype).expand(len(x), 4) * 0.5

    kd = DistillationObjective(Teacher(), tau=2.0, weight=0.7, ce=CrossEntropyObjective())
    zt = Teacher()(x).float()

    def kd_direct(z):
        kl = F.kl_div(F.log_softmax(z / 2, -1), F.log_softmax(zt / 2, -1), reduction="batchmean",
                      log_target=True) * 4
        return 0.7 * kl + 0.3 * F.cross_entropy(z, y)

    for method in (BPTT(loss_on="per_step"), SLTTFused(), SLTT()):
        got, _ = grads(method, net().double(), x, y, kd)
        ref = net(temporal_grad=not isinstance(method, (SLTT, SLTTFused))).double()
        want, _ = direct(ref, x, y, lambda s: sum(kd_direct(s[t]) for t in range(3)) / 3)
        same(got, want)
    assert kd.teacher_calls == 1  # one batch x: the teacher ran once


def recipe(method="bptt", neuron=None, **train):
    tree = {"T": 3, "train": {"method": method, **train}}
    if neuron:
        tree["neuron"] = neuron
    return recipe_from_dict(tree)


def test_defaults_keep_each_methods_placement_and_refusals_are_one_line():
    defaults = {"bptt": "mean", "sltt": "per_step", "sltt_fused": "per_step",
                "sltt_k": "per_step", "ottt": "per_step"}
    for name, where in defaults.items():
        soft = {"v_reset": None} if name == "ottt" else None
        assert build_method(recipe(name, soft)).loss_on == where
    assert build_method(recipe("dsr", {"type": "dsr_if"})).loss_on == "mean"
    assert build_method(recipe("bptt")).single_forward  # DDP's wrapper sees model(x)
    assert not build_method(recipe("bptt", loss_on="per_step")).single_forward
    for name in ("sltt", "sltt_k", "ottt"):
        soft = {"v_reset": None} if name == "ottt" else None
        with pytest.raises(UserError, match=f"loss_on: mean is not possible with train.method "
                                            f"{name}: it runs backward at each step") as e:
            build_method(recipe(name, soft, loss_on="mean"))
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="train.loss_on' must be mean, per_step or null"):
        recipe(loss_on="last")
    for cls in (SLTT, SLTTK, OTTT):
        with pytest.raises(UserError, match="not possible"):
            cls(loss_on="mean")
    for cls in (IDE, SPIDE):  # the loss sits on the equilibrium rate, the time average
        assert cls().loss_on == "mean"
        with pytest.raises(UserError, match="per_step is not possible with train.method"):
            cls(loss_on="per_step")


def test_sequence_loss_is_the_one_helper():
    seq = torch.randn(3, 2, 4)
    y = torch.tensor([0, 3])
    torch.testing.assert_close(sequence_loss(ce, seq, y, None, "mean"),
                               F.cross_entropy(seq.mean(0), y))
    torch.testing.assert_close(sequence_loss(ce, seq, y, None, "per_step"), per_step_ce(seq, y))
    with pytest.raises(UserError, match="loss_on"):
        sequence_loss(ce, seq, y, None, "sum")


def test_mse_target_ones_is_sltts_cifar_loss():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    y = torch.tensor([0, 2])
    ce_ = F.cross_entropy(logits, y)
    # SLTT train_SLTT.py:340-342: target = zeros_like(out).fill_(loss_means = 1.0)
    ones = build_objective(recipe(mse_lambda=0.05, mse_target="ones"))
    torch.testing.assert_close(ones(logits, y, None),
                               0.95 * ce_ + 0.05 * ((logits - 1.0) ** 2).mean())
    one_hot = build_objective(recipe(mse_lambda=0.05))  # the default, OTTT's code
    torch.testing.assert_close(one_hot(logits, y, None),
                               0.95 * ce_ + 0.05 * ((logits - torch.eye(3)[y]) ** 2).mean())
    with pytest.raises(UserError, match="train.mse_target' must be one_hot or ones"):
        recipe(mse_target="zeros")
