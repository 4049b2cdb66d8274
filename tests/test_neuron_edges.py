"""Edges of the fused neurons, on the CPU through the g++ build of the kernel (the CPU stand-in for
CuPy): double backward, fp16 overflow of the saved ``H - V_th``, the CuPy probe under
``torch.compile``, and the per-node plan cache (reuse and invalidation)."""

from __future__ import annotations

import copy
import pickle
import sys

import pytest
import torch
from spikingjelly.activation_based import functional, surrogate
from spikingjelly.activation_based import neuron as sj_neuron

from sj_bwsnn.errors import UserError
from sj_bwsnn.neuron import IFNode, LIFNode, fused, nodes
from sj_bwsnn.neuron.kernels import host

from _neuron_util import make_node, random_config


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """Route the fused path to the g++ build of multistep.cu (one build directory per session)."""
    if host.compiler() is None:
        pytest.skip("needs g++")
    previous = fused._launcher
    fused.set_launcher(host.HostLauncher(str(tmp_path_factory.getbasetemp() / "sjb_host")))
    yield fused._launcher
    fused.set_launcher(previous)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cpu_cupy(monkeypatch):
    """``backend='cupy'`` accepted for CPU tensors (the device check is what stops it otherwise)."""
    monkeypatch.setattr(nodes, "check_backend_available", lambda backend, device: None)


# --- (a) double backward -----------------------------------------------------------------------

def _penalty_grad(kind, cfg, backend, dtype, w_in, inp, weights, two_calls=False):
    """d/dW of a gradient penalty ||dL/dW||^2 where x = inp @ W feeds the node; L reaches the spikes
    (non-linearly, so dL/dS depends on the spikes), the final state and v_seq."""
    node = make_node(kind, backend=backend, **cfg)
    w = w_in.to(dtype).requires_grad_()
    x = inp.to(dtype) @ w
    if two_calls:  # the state of the first call is in the graph of the second
        s = torch.cat([node(x[:2]), node(x[2:])])
    else:
        s = node(x)
    w_s, w_v, w_seq = (t.to(torch.float64) for t in weights)
    loss = ((s.double() * w_s).sum(0) ** 2).sum() + (node.v.double() * w_v).sum() ** 2
    if node.store_v_seq:
        seq = node.v_seq.double()
        loss = loss + (seq * w_seq[-seq.shape[0]:]).sum()
    loss = loss + 0.1 * (x.double() ** 2).sum()
    (g,) = torch.autograd.grad(loss, w, create_graph=True)
    penalty = (g.double() ** 2).sum()
    (gg,) = torch.autograd.grad(penalty, w)
    return g.detach().double(), gg.double()


@pytest.mark.parametrize("seed", range(8))
def test_double_backward_matches_sj_reference(host_kernels, cpu_cupy, seed):
    """create_graph=True through the fused path: first and second-order gradients of a gradient
    penalty equal SpikingJelly's Torch reference differentiated twice (float64)."""
    cfg = random_config(seed, t_choices=(1, 3, 4))
    kind, T = cfg.pop("kind"), cfg.pop("T")
    gen = torch.Generator().manual_seed(seed)
    inp = torch.randn(T, 6, 5, generator=gen, dtype=torch.float64)
    w_in = torch.randn(5, 9, generator=gen, dtype=torch.float64) * 1.5
    weights = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ((6, 9), (6, 9), (T, 6, 9))]
    w_in = w_in.float().double()  # both sides start from the same fp32 numbers
    g, gg = _penalty_grad(kind, cfg, "cupy", torch.float32, w_in, inp.float().double(), weights)
    g64, gg64 = _penalty_grad(kind, cfg, "torch", torch.float64, w_in, inp.float().double(), weights)
    torch.testing.assert_close(g, g64, rtol=1e-4, atol=1e-5)
    assert (gg - gg64).norm() <= 1e-4 * gg64.norm(), float((gg - gg64).norm() / gg64.norm())


def test_double_backward_through_the_state_across_calls(host_kernels, cpu_cupy):
    cfg = dict(tau=2.0, decay_input=False, v_reset=0.0, detach_reset=False, store_v_seq=True,
               surrogate_function=surrogate.ATan(alpha=2.0))
    gen = torch.Generator().manual_seed(5)
    inp = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64).float().double()
    w_in = torch.randn(5, 9, generator=gen, dtype=torch.float64).float().double() * 1.5
    weights = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ((6, 9), (6, 9), (4, 6, 9))]
    g, gg = _penalty_grad("lif", dict(cfg), "cupy", torch.float32, w_in, inp, weights, two_calls=True)
    g64, gg64 = _penalty_grad("lif", dict(cfg), "torch", torch.float64, w_in, inp, weights, two_calls=True)
    torch.testing.assert_close(g, g64, rtol=1e-4, atol=1e-5)
    assert (gg - gg64).norm() <= 1e-4 * gg64.norm()


def test_first_order_backward_still_runs_the_kernel(host_kernels, cpu_cupy, monkeypatch):
    """Only a recorded backward (create_graph) or a gradient w.r.t. M takes the torch-op path."""
    calls = []
    real = fused.differentiable_backward

    def spy(*args):
        calls.append("torch ops")
        return real(*args)

    monkeypatch.setattr(fused, "differentiable_backward", spy)
    node = LIFNode(step_mode="m", backend="cupy")
    x = torch.randn(3, 4, 5, requires_grad=True)
    node(x).sum().backward()
    assert calls == [] and x.grad is not None
    functional.reset_net(node)
    (g,) = torch.autograd.grad(node(x).sum(), x, create_graph=True)
    assert calls == ["torch ops"]


# --- (b) fp16: |H - V_th| above the fp16 range --------------------------------------------------

@pytest.mark.parametrize("kind", ["if", "lif"])
@pytest.mark.parametrize("sur", [surrogate.Sigmoid(alpha=4.0), surrogate.ATan(alpha=2.0),
                                 surrogate.SuperSpike(alpha=1.0)], ids=["sigmoid", "atan", "superspike"])
def test_fp16_hard_reset_far_from_threshold_has_finite_gradients(host_kernels, cpu_cupy, kind, sur):
    """fp16 storage, hard reset not detached, states of +-1e5 (H - V_th beyond 65504): the backward
    gives the fp64 reference's gradient (about 1 through a neuron far below threshold, about 0
    through one far above) instead of NaN."""
    cfg = dict(v_reset=0.0, detach_reset=False, surrogate_function=sur, tau=2.0, decay_input=False)
    x = torch.tensor([[0.5, -0.25, 0.75, 0.1]]).repeat(3, 1)
    state = torch.tensor([-1e5, 1e5, -7e4, 3e4])
    ours, ref = make_node(kind, backend="cupy", **cfg), make_node(kind, backend="torch", **cfg)
    ours.v, ref.v = state.clone(), state.double()
    x16, x64 = x.half().requires_grad_(), x.half().double().requires_grad_()
    s16, s64 = ours(x16), ref(x64)
    assert torch.equal(s16.double(), s64)
    (s16.double().sum() + ours.v.double().sum()).backward()
    (s64.sum() + ref.v.sum()).backward()
    assert torch.isfinite(x16.grad).all(), x16.grad
    torch.testing.assert_close(x16.grad.double(), x64.grad, rtol=2e-3, atol=1e-3)


def test_fp16_saturated_m_keeps_the_spike(host_kernels, cpu_cupy):
    """The saved M saturates at +-65504 in fp16 (never inf) and keeps its sign: spikes, v and the
    first-order gradient of a soft-reset node are those of the fp64 reference."""
    seen = []
    real = fused.get_launcher()

    class Spy:
        def forward(self, cfg, x, v0, v_init, spike, m, *rest):
            real.forward(cfg, x, v0, v_init, spike, m, *rest)
            seen.append(m.clone())

        backward = real.backward

    fused.set_launcher(Spy())
    try:
        node = IFNode(step_mode="m", backend="cupy", v_reset=0.0)
        node.v = torch.tensor([-1e5, 1e5, 0.0])
        node(torch.tensor([[1.0, 1.0, 2.0]]).half().requires_grad_())
    finally:
        fused.set_launcher(real)
    assert seen[0].tolist() == [[-65504.0, 65504.0, 1.0]]


# --- (c) the CuPy probe never runs inside traced code ---------------------------------------------

@pytest.fixture
def without_cupy(monkeypatch):
    """``import cupy`` fails and CuPy has not been probed yet."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    monkeypatch.setattr(nodes, "_CUPY_OK", None)


@pytest.fixture
def cuda_machine_without_cupy(without_cupy, monkeypatch):
    """What a CUDA machine without CuPy looks like to nodes.py (not to Dynamo: no tracing with it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_cupy_probe_runs_when_a_node_is_built(cuda_machine_without_cupy):
    LIFNode(step_mode="m", backend="torch")
    assert nodes._CUPY_OK is None  # the torch backend never needs CuPy
    LIFNode(step_mode="m")  # backend auto
    assert nodes._CUPY_OK is False  # probed eagerly, before any forward


def test_backend_resolution_probes_cupy(cuda_machine_without_cupy):
    nodes.check_backend_available("auto", "cuda")
    assert nodes._CUPY_OK is False


def test_cupy_probe_inside_a_fullgraph_trace(without_cupy):
    """Were the first probe to happen while tracing, Dynamo runs it eagerly instead of tracing the
    failing import (which is ``Unsupported: Import failure`` under fullgraph=True, as the control
    shows)."""

    def naive_probe():
        try:
            import cupy  # noqa: F401
        except Exception:
            return False
        return True

    def branch(probe):
        return lambda x: x + 1 if probe() else x - 1

    x = torch.zeros(2)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="Import failure"):
        torch.compile(branch(naive_probe), backend="eager", fullgraph=True)(x)
    torch._dynamo.reset()
    out = torch.compile(branch(nodes._cupy_available), backend="eager", fullgraph=True)(x)
    assert torch.equal(out, x - 1) and nodes._CUPY_OK is False
    torch._dynamo.reset()


# --- (B) per-node plan: reused while nothing changes, rebuilt when something does ----------------

class CountingLauncher:
    """The host launcher, counting ``bind`` calls and launches."""

    def __init__(self, real):
        self.real, self.binds, self.launches = real, 0, 0

    def bind(self, *args):
        self.binds += 1
        bound = self.real.bind(*args)
        outer = self

        class Bound:
            def forward(self, *a):
                outer.launches += 1
                bound.forward(*a)

            def backward(self, *a):
                outer.launches += 1
                bound.backward(*a)

        return Bound()


def test_plan_is_reused_between_calls(host_kernels, cpu_cupy):
    counting = CountingLauncher(host_kernels)
    fused.set_launcher(counting)
    try:
        node = LIFNode(step_mode="m", backend="cupy")
        x = torch.randn(3, 4, 5, requires_grad=True)
        for _ in range(4):
            functional.reset_net(node)
            node(x).sum().backward()
        plan = node._sjb_plan
        node(x.detach())  # state carried, no grad
        assert node._sjb_plan is plan and counting.binds == 1 and counting.launches == 9
    finally:
        fused.set_launcher(host_kernels)


CHANGES = {
    "tau": lambda n: setattr(n, "tau", 3.0),
    "decay_input": lambda n: setattr(n, "decay_input", False),
    "v_threshold": lambda n: setattr(n, "v_threshold", 0.7),
    "v_reset": lambda n: setattr(n, "v_reset", None),
    "detach_reset": lambda n: setattr(n, "detach_reset", True),
    "temporal_grad": lambda n: setattr(n, "temporal_grad", False),
    "store_v_seq": lambda n: setattr(n, "store_v_seq", True),
    "surrogate": lambda n: setattr(n, "surrogate_function", surrogate.ATan(alpha=2.0)),
    "surrogate alpha": lambda n: setattr(n.surrogate_function, "alpha", 1.0),
    "unsupported surrogate": lambda n: setattr(n, "surrogate_function", surrogate.Sigmoid(alpha=4.0,
                                                                                          spiking=False)),
    "backend": lambda n: setattr(n, "backend", "torch"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_plan_follows_attribute_changes(host_kernels, cpu_cupy, change):
    """After an attribute change the node computes what a copy with the new attributes and no cached
    plan computes (spikes, state, v_seq, input gradient), in fp32 and after a change to bf16."""
    kw = dict(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=False,
              surrogate_function=surrogate.Sigmoid(alpha=4.0), store_v_seq=False)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 7, generator=gen) * 1.5 + 0.5
    w = torch.randn(x.shape, generator=gen)
    node = LIFNode(step_mode="m", backend="cupy", **kw)
    node(x)  # builds the plan for the original attributes
    plan = node._sjb_plan
    CHANGES[change](node)
    fresh = copy.deepcopy(node)  # copies leave the plan out
    assert "_sjb_plan" not in fresh.__dict__
    for dtype in (torch.float32, torch.bfloat16):
        functional.reset_net(node), functional.reset_net(fresh)
        xa, xb = (x.to(dtype, copy=True).requires_grad_() for _ in range(2))
        if change == "unsupported surrogate":
            with pytest.raises(UserError, match="does not support surrogate"):
                node(xa)
            return
        sa, sb = node(xa), fresh(xb)
        assert torch.equal(sa, sb) and torch.equal(node.v, fresh.v)
        if node.store_v_seq:
            assert torch.equal(node.v_seq, fresh.v_seq)
        ((sa.float() * w).sum() + node.v.sum()).backward()
        ((sb.float() * w).sum() + fresh.v.sum()).backward()
        assert torch.equal(xa.grad, xb.grad)
    if node.backend == "cupy":  # (SpikingJelly's path needs no plan)
        assert node._sjb_plan is not plan


def test_plan_follows_the_launcher_and_device(host_kernels, cpu_cupy):
    node = LIFNode(step_mode="m", backend="cupy")
    x = torch.randn(2, 3, 4)
    node(x)
    plan = node._sjb_plan
    counting = CountingLauncher(host_kernels)
    fused.set_launcher(counting)
    try:
        node(x)
        assert node._sjb_plan is not plan and counting.binds == 1 and counting.launches == 1
    finally:
        fused.set_launcher(host_kernels)
    on_meta = fused._fingerprint(node, x.to("meta"))
    assert on_meta != fused._fingerprint(node, x) and on_meta[:1] == (torch.float32,)


def test_copies_and_pickles_leave_the_plan_out(host_kernels, cpu_cupy):
    node = LIFNode(step_mode="m", backend="cupy", surrogate_function=surrogate.ATan())
    x = torch.randn(2, 3, 4)
    node(x)
    assert "_sjb_plan" in node.__dict__
    again = pickle.loads(pickle.dumps(node))
    assert "_sjb_plan" not in again.__dict__ and "_sjb_plan" in node.__dict__
    functional.reset_net(node), functional.reset_net(again)
    assert torch.equal(node(x), again(x))


@pytest.mark.parametrize("store", [False, True])
def test_reset_is_spikingjellys(store):
    """The nodes' fast reset leaves the same state as SpikingJelly's own."""
    ours = LIFNode(step_mode="m", backend="torch", store_v_seq=store, v_reset=-0.2)
    ours(torch.randn(3, 4))
    sj = copy.deepcopy(ours)
    ours.reset()
    sj_neuron.LIFNode.reset(sj)  # SpikingJelly's own
    assert ours.v == sj.v == -0.2 and ours.v_seq is None and sj.v_seq is None
    assert ours._memories.keys() == sj._memories.keys()
