"""OPZO and DFA (CPU, float64): the update equals a direct computation of the paper's equations,
no autograd graph connects two layers, the feedback estimate converges to its expected value,
and the OPZO update aligns with the true spatial-BP gradient as its feedback learns (DFA's does not)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from sj_bwsnn.engine.methods import DFA, OPZO, OTTT, build_method
from sj_bwsnn.engine.methods.opzo import feedback_points, reached_parameters
from sj_bwsnn.engine.precision import Precision
from sj_bwsnn.engine.recipe import recipe_from_dict
from sj_bwsnn.errors import UserError
from sj_bwsnn.layers import BinaryLinear
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.models.plain import PlainSNN
from sj_bwsnn.neuron import LIFNode

pytestmark = pytest.mark.usefixtures("one_thread")
NEURON = dict(tau=2.0, decay_input=False, v_reset=None, detach_reset=True)  # OTTT's neuron


def ce(logits, y, x):
    return F.cross_entropy(logits, y)


class Chain(nn.Module):
    """x -> Linear -> LIF -> BinaryLinear -> LIF -> Linear; the neurons are the cuts."""

    def __init__(self, T=3):
        super().__init__()
        torch.manual_seed(0)
        self.T = T
        self.fc1 = nn.Linear(4, 6)
        self.sn1 = LIFNode(step_mode="m", **NEURON)
        self.fc2 = BinaryLinear(6, 5, step_mode="m")
        self.sn2 = LIFNode(step_mode="m", **NEURON)
        self.fc3 = nn.Linear(5, 3)

    def forward_seq(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1) if x.dim() == 2 else x
        return self.fc3(self.sn2(self.fc2(self.sn1(2.0 * self.fc1(x)))))


def step(method, model, x, y, precision=None):
    model.zero_grad(set_to_none=True)
    loss, logits = method.train_step(model, x, y, ce, torch.optim.SGD(model.parameters(), lr=0.0),
                                     precision)
    functional.reset_net(model)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def record(model):
    """Per call of each module: its output (``out``) and its input (``in``)."""
    seen = {}
    for name, m in model.named_children():
        m.register_forward_hook(lambda mod, inp, out, n=name: seen.setdefault(n, []).append(
            (inp[0].detach(), out.detach())))
    return seen


def psi(h, alpha=4.0):
    """Sigmoid surrogate derivative (SpikingJelly's Sigmoid(alpha=4)) at H - V_th, V_th = 1."""
    sg = torch.sigmoid(alpha * (h - 1.0))
    return alpha * sg * (1 - sg)


def lif_h(xs):
    """H[t] of OTTT's LIF (no input decay, soft reset, tau 2) for the inputs X[t]."""
    v, out = 0.0, []
    for x in xs:
        h = v * 0.5 + x
        out.append(h)
        v = h - (h >= 1.0).to(h.dtype)
    return out


def traces(xs, lam):
    out, a = [], None
    for x in xs:
        a = x if a is None else lam * a + x
        out.append(a)
    return out


@pytest.mark.parametrize("antithetic", [False, True])
def test_opzo_update_is_the_paper_formula(antithetic):
    """M <- lam M + (1-lam) mean_b z o~^T / alpha, g = M e / (1 - lam^k), and
    dW_l = sum_t (psi(u_l) * g_l) a_hat^T, computed directly from the recorded forward."""
    T, lam, alpha, tr = 4, 0.9, 0.3, 0.5
    model = Chain(T).double()
    method = OPZO(noise_scale=alpha, momentum=lam, antithetic=antithetic, trace_decay=tr)
    seen = record(model)
    g = torch.Generator().manual_seed(2)
    M = [torch.zeros(6, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64)]
    k = 0
    for batch in range(2):  # the feedback carries over from batch to batch
        x = 2.0 * torch.rand(7, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (7,), generator=g)
        for v in seen.values():
            v.clear()
        got = step(method, model, x, y)
        s = [o for _, o in seen["sn1"]], [o for _, o in seen["sn2"]]
        noisy = [i for i, _ in seen["fc2"]], [i for i, _ in seen["fc3"]]
        z = [[(a - b)[0] / alpha for a, b in zip(noisy[l], s[l])] for l in range(2)]
        if antithetic:
            for l in range(2):
                for t in (0, 2):
                    torch.testing.assert_close(z[l][t + 1], -z[l][t])
        o = [out[0] for _, out in seen["fc3"]]
        h = lif_h([2.0 * out[0] for _, out in seen["fc1"]]), lif_h([out[0] for _, out in seen["fc2"]])
        want = {n: 0.0 for n in got}
        delta = [[], []]
        for t in range(T):
            e = (F.softmax(o[t], 1) - F.one_hot(y, 3)) / (7 * T)
            k += 1
            for l in range(2):
                M[l] = lam * M[l] + (1 - lam) * z[l][t].T @ o[t] / (7 * alpha)
                delta[l].append(psi(h[l][t]) * (e @ (M[l] / (1 - lam ** k)).T))
            want["fc3.weight"] = want["fc3.weight"] + e.T @ traces([n[0] for n in noisy[1]], tr)[t]
            want["fc3.bias"] = want["fc3.bias"] + e.sum(0)
        # fc1 sees the raw input: plain input, no trace (as OTTT's first conv, traced_layers)
        a1, a2 = [x] * T, traces([n[0] for n in noisy[0]], tr)
        want["fc1.weight"] = 2.0 * sum(d.T @ a for d, a in zip(delta[0], a1))
        want["fc1.bias"] = 2.0 * sum(d.sum(0) for d in delta[0])
        gb = sum(d.T @ a for d, a in zip(delta[1], a2))  # w.r.t. the binarized weight, then the STE
        (want["fc2.weight"],) = torch.autograd.grad(model.fc2.binarized_weight(), model.fc2.weight, gb)
        want["fc2.bias"] = sum(d.sum(0) for d in delta[1])
        for n in want:
            torch.testing.assert_close(got[n], want[n], msg=lambda m, n=n: f"{n}: {m}")
        for l in range(2):
            torch.testing.assert_close(method.matrices[l], M[l])
        assert method.updates == k
    assert 0 < sum(v.sum() for v in s[0]) < sum(v.numel() for v in s[0])  # some spikes, not all


def test_dfa_sends_the_error_through_fixed_random_matrices():
    T = 3
    model = Chain(T).double()
    seen = record(model)
    gen = torch.Generator().manual_seed(1)
    x, y = 2.0 * torch.rand(5, 4, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    method = DFA(trace_decay=0.5, seed=7)
    got = step(method, model, x, y)
    b_gen = torch.Generator().manual_seed(7)
    B = [(torch.randn(n, 3, generator=b_gen) / math.sqrt(n)).double() for n in (6, 5)]
    for l in range(2):
        torch.testing.assert_close(method.matrices[l], B[l])
    s1 = [o[0] for _, o in seen["sn1"]]
    assert all(torch.equal(i[0], o) for (i, _), o in zip(seen["fc2"], s1))  # no noise
    o = [out[0] for _, out in seen["fc3"]]
    h2 = lif_h([out[0] for _, out in seen["fc2"]])
    gb = sum((psi(h2[t]) * (((F.softmax(o[t], 1) - F.one_hot(y, 3)) / (5 * T)) @ B[1].T)).T
             @ traces(s1, 0.5)[t] for t in range(T))
    (want,) = torch.autograd.grad(model.fc2.binarized_weight(), model.fc2.weight, gb)
    torch.testing.assert_close(got["fc2.weight"], want)
    again = step(method, model, x, y)  # fixed: the same matrices, the same update
    torch.testing.assert_close(again["fc2.weight"], got["fc2.weight"])


def tiny(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        return PlainSNN("mlp", (12, 10), in_chans=1, input_size=4, num_classes=4, T=2,
                        neuron=LIFNode, neuron_kwargs=NEURON).double()
    if kind == "cnn":
        return PlainSNN("cnn", (4, 6, 6), pool_after=(1,), in_chans=1, input_size=4,
                        num_classes=4, T=2, neuron=LIFNode, neuron_kwargs=NEURON).double()
    return BWResNet((1, 1), (4, 8), stem="cifar", in_chans=1, num_classes=4, T=2,
                    neuron=LIFNode, neuron_kwargs=NEURON).double()


@pytest.mark.parametrize("kind", ["mlp", "cnn", "bw_resnet"])
@pytest.mark.parametrize("name", ["opzo", "dfa"])
def test_no_autograd_graph_connects_two_layers(kind, name):
    """Per time step: the graphs of the layer outputs and of the loss reach disjoint parameter
    sets that cover the model, and the gradient arriving at each layer's output is exactly its
    top-down signal g_l = B_l e (nothing flows in from the layers above)."""
    model = tiny(kind)
    method = OPZO(noise_scale=0.2, momentum=0.5) if name == "opzo" else DFA()
    points = [m for _, m in feedback_points(model)]
    arrived, roots, used = [], [], []
    for i, m in enumerate(points):
        def hook(mod, inp, out, i=i):
            roots.append((i, out))
            out.register_hook(lambda g, i=i: arrived.append((i, g.clone())))
        m.register_forward_hook(hook)
    def head_hook(mod, inp, out):
        roots.append(("head", out))
        out.register_hook(lambda g: arrived.append(("head", g.clone())))

    model.get_classifier().register_forward_hook(head_hook)
    matrix = method._matrix
    method._matrix = lambda i: used.append(matrix(i)) or used[-1]
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    step(method, model, x, torch.tensor([0, 1, 3]))
    n = len(points)
    trainable = {id(p) for p in model.parameters()}
    for t in range(model.T):
        step_roots = roots[t * (n + 1):(t + 1) * (n + 1)]
        owned = [reached_parameters(r) for _, r in step_roots]
        assert sum(len(o) for o in owned) == len(set().union(*owned)) == len(trainable)
        got = dict(arrived[t * (n + 1):(t + 1) * (n + 1)])
        e = got.pop("head")
        for i in range(n):
            signal = (e @ used[t * n + i].T).view(got[i].shape)
            assert torch.equal(got[i], signal), f"layer {i}, step {t}"


class Residual(nn.Module):
    T = 2

    def __init__(self):
        super().__init__()
        self.fc1, self.sn1 = nn.Linear(4, 4), LIFNode(step_mode="m")
        self.fc2, self.sn2 = nn.Linear(4, 4), LIFNode(step_mode="m")
        self.head = nn.Linear(4, 2)

    def forward_seq(self, x):
        h = self.fc1(x)
        return self.head(self.sn2(self.fc2(self.sn1(h)) + h))  # fc1 reaches sn2 around sn1


def test_models_with_paths_around_the_cuts_are_refused():
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    with pytest.raises(UserError, match=r"train.method opzo: Residual has paths around its feedback "
                                        r"points .*fc1|train.method opzo: Residual has paths"):
        step(OPZO(), Residual(), x, y)
    with pytest.raises(UserError, match="has no spiking neurons"):
        feedback_points(nn.Linear(2, 2))


def test_feedback_estimate_converges_to_the_expected_value():
    """E_z[z o~^T / alpha] is the transposed Jacobian; behind the last cut the read-out is linear,
    so the one-step estimate (momentum 0) converges to head.weight^T, error ~ 1/sqrt(draws)."""
    model = tiny("mlp")
    x, y = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    W = model.head.weight.detach().T
    errors = {}
    for noise in ("gaussian", "rademacher", "sphere"):
        for draws in (16, 4096):
            torch.manual_seed(3)
            method = OPZO(noise_scale=0.5, momentum=0.0, noise=noise, samples=draws)
            model.T = 1
            step(method, model, x, y)
            errors[noise, draws] = ((method.matrices[-1] - W).norm() / W.norm()).item()
    for noise in ("gaussian", "rademacher", "sphere"):
        assert errors[noise, 4096] < 0.1, errors
        assert errors[noise, 4096] < errors[noise, 16] / 8, errors  # sqrt(256) = 16 in theory


def cosine(a: dict, b: dict, names) -> float:
    va = torch.cat([a[n].flatten() for n in names])
    vb = torch.cat([b[n].flatten() for n in names])
    return F.cosine_similarity(va, vb, 0).item()


def test_opzo_aligns_with_spatial_bp_as_its_feedback_learns_and_beats_dfa():
    """Fixed weights, a stream of batches: the cosine between the OPZO update of the hidden layers
    and OTTT's spatial-BP gradient (same weights, same batch) grows as M learns and ends far above
    DFA's, whose random feedback has no reason to align with it."""
    model = tiny("mlp")  # train mode: BN puts the membranes near threshold, where ZO sees spikes
    hidden = [n for n, p in model.named_parameters() if p.dim() > 1 and not n.startswith("head")]
    gen = torch.Generator().manual_seed(0)
    proto = torch.randn(4, 1, 4, 4, generator=gen, dtype=torch.float64)
    opzo, dfa, bp = OPZO(noise_scale=0.2, momentum=0.99, antithetic=True), DFA(), OTTT(0.5)
    torch.manual_seed(0)
    curve, dfa_cos = [], []
    for k in range(160):
        y = torch.randint(0, 4, (8,), generator=gen)
        x = proto[y] + 0.3 * torch.randn(8, 1, 4, 4, generator=gen, dtype=torch.float64)
        true = step(bp, model, x, y)
        curve.append(cosine(step(opzo, model, x, y), true, hidden))
        dfa_cos.append(cosine(step(dfa, model, x, y), true, hidden))
    early, late = sum(curve[:5]) / 5, sum(curve[-40:]) / 40
    dfa_mean = sum(dfa_cos[-40:]) / 40
    print(f"cosine with spatial BP: opzo first 5 steps {early:.3f}, last 40 {late:.3f}; "
          f"dfa last 40 {dfa_mean:.3f}")
    assert late > early + 0.3, (early, late)
    assert late > 0.6 and late > dfa_mean + 0.4, (late, dfa_mean)


def test_amp_bf16_and_fp16_steps_train():
    """bf16: finite from the first step. fp16: the grad scaler starts at 2^16, where the early
    (noisy) top-down signals overflow half precision; it backs off as for any overflow and the
    steps then train."""
    x, y = torch.randn(3, 1, 4, 4), torch.tensor([0, 1, 3])
    for amp in ("bf16", "fp16"):
        model = tiny("cnn").float()
        torch.manual_seed(0)
        precision, method = Precision(amp, "cpu"), OPZO()
        for _ in range(8):
            got = step(method, model, x, y, precision)
            if all(torch.isfinite(g).all() for g in got.values()):
                break
        else:
            pytest.fail(f"{amp}: no finite step in 8 (scale {precision.scaler.get_scale()})")
        assert any(g.abs().sum() > 0 for n, g in got.items() if n.startswith("stem")), amp
        if amp == "bf16":
            assert precision.scaler is None and method.updates == model.T


def test_samples_copy_the_batch_and_report_its_mean_logits():
    model = tiny("mlp")
    x, y = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 3])
    loss, logits = OPZO(samples=4).train_step(model, x, y, ce, torch.optim.SGD(model.parameters(), 0.0))
    assert logits.shape == (3, 4) and torch.isfinite(loss)


def test_recipe_keys_reach_the_methods():
    r = recipe_from_dict({"T": 4, "seed": 5, "train": {"method": "opzo", "online_update": True},
                          "opzo": {"noise_scale": 0.2, "momentum": 0.9, "noise": "sphere",
                                   "antithetic": True, "samples": 2}})
    m = build_method(r)
    assert isinstance(m, OPZO) and m.online_update and m.samples == 2 and m.antithetic
    assert (m.alpha, m.momentum, m.noise, m.trace_decay) == (0.2, 0.9, "sphere", 0.5)
    d = build_method(recipe_from_dict({"seed": 5, "train": {"method": "dfa"},
                                       "neuron": {"type": "if"}, "opzo": {"trace_decay": 0.25}}))
    assert isinstance(d, DFA) and d.seed == 5 and d.trace_decay == 0.25
    for bad, match in [({"momentum": 1.0}, "opzo.momentum"), ({"noise_scale": 0}, "noise_scale"),
                       ({"noise": "uniform"}, "opzo.noise"), ({"samples": 0}, "opzo.samples"),
                       ({"trace_decay": 2}, "opzo.trace_decay"), ({"nois": "x"}, "did you mean")]:
        with pytest.raises(UserError, match=match):
            recipe_from_dict({"opzo": bad})


@pytest.mark.parametrize("method", ["opzo", "dfa"])
def test_resume_restores_the_feedback_and_continues_exactly(tmp_path, method):
    """2 epochs straight == 1 epoch + --resume: weights and feedback matrices bitwise equal (a
    resumed run that restarted M from zero, or drew new DFA matrices, would differ)."""
    from sj_bwsnn.cli import find_recipe, main
    from sj_bwsnn.engine import Trainer, load_checkpoint, load_recipe

    sets = ["data.max_train=64", "data.max_test=32", "data.batch_size=16", "T=2", "seed=1",
            "train.plot=false", "train.tensorboard=false", "train.device=cpu", "train.epochs=2",
            "model.kwargs={widths: [16, 16], input_size: 8}", f"train.method={method}"]
    flags = [a for s in sets for a in ("--set", s)]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "digits_opzo", "--out", str(a), *flags]) == 0
    b.mkdir()
    Trainer(load_recipe(find_recipe("digits_opzo"), sets), b).fit(until=1)
    assert main(["train", "digits_opzo", "--out", str(b), "--resume", *flags]) == 0
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] == 2
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    fa, fb = ca["method"], cb["method"]
    assert fa["method"] == method and len(fa["feedback"]) == 2  # stem and the hidden layer
    assert all(torch.equal(x, y) for x, y in zip(fa["feedback"], fb["feedback"]))
    assert fa.get("updates") == fb.get("updates") == (2 * 4 * 2 if method == "opzo" else None)


@pytest.mark.parametrize("method", [OPZO, DFA])
def test_online_update_steps_after_every_time_step(method):
    class Counting(torch.optim.SGD):
        steps = 0

        def step(self, closure=None):
            Counting.steps += 1
            return super().step(closure)

    x, y = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    for online, steps in ((True, 2), (False, 1)):
        model = tiny("cnn")
        before = model.stem[0].weight.detach().clone()
        Counting.steps = 0
        method(online_update=online).train_step(model, x, y, ce, Counting(model.parameters(), lr=0.1))
        functional.reset_net(model)
        assert Counting.steps == steps and not torch.equal(before, model.stem[0].weight)
