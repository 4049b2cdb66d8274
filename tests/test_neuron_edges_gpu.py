"""The fused neurons' edges on a GPU with CuPy (the CPU versions run the g++ build of the kernel in
``test_neuron_edges.py``): double backward, fp16 far from threshold, a CUDA machine without CuPy under
``torch.compile(fullgraph=True)``, and the bound kernels of the per-node plan."""

from __future__ import annotations

import sys

import pytest
import torch
from spikingjelly.activation_based import functional, surrogate

from sj_bwsnn.neuron import LIFNode, fused, nodes

from _neuron_util import make_node


def _gpu_ok() -> bool:
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _gpu_ok(), reason="needs CUDA and CuPy")]


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_double_backward_matches_sj_reference(v_reset):
    cfg = dict(tau=2.0, decay_input=True, v_reset=v_reset, detach_reset=False,
               surrogate_function=surrogate.Sigmoid(alpha=4.0))
    gen = torch.Generator().manual_seed(0)
    inp = torch.randn(4, 16, 8, generator=gen).double()
    w0 = torch.randn(8, 32, generator=gen).double()
    out = []
    for backend, dtype, device in (("cupy", torch.float32, "cuda"), ("torch", torch.float64, "cpu")):
        node = make_node("lif", backend=backend, **cfg).to(device)
        w = w0.to(device, dtype).requires_grad_()
        x = inp.to(device, dtype) @ w
        s = node(x)
        loss = (s.double().sum(0) ** 2).sum() + (node.v.double() ** 2).sum() + 0.1 * (x.double() ** 2).sum()
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        (gg,) = torch.autograd.grad((g.double() ** 2).sum(), w)
        out.append((g.detach().cpu().double(), gg.cpu().double()))
    (g, gg), (g64, gg64) = out
    torch.testing.assert_close(g, g64, rtol=1e-4, atol=1e-4)
    assert (gg - gg64).norm() <= 1e-4 * gg64.norm()


def test_fp16_hard_reset_far_from_threshold():
    node, ref = LIFNode(step_mode="m", backend="cupy"), LIFNode(step_mode="m", backend="torch")
    state = torch.tensor([-1e5, 1e5, -7e4, 3e4])
    node.v, ref.v = state.cuda(), state.double()
    x = torch.tensor([[0.5, -0.25, 0.75, 0.1]]).repeat(3, 1).half()
    xg, x64 = x.cuda().requires_grad_(), x.double().requires_grad_()
    (node(xg).double().sum() + node.v.double().sum()).backward()
    (ref(x64).sum() + ref.v.sum()).backward()
    assert torch.isfinite(xg.grad).all()
    torch.testing.assert_close(xg.grad.cpu().double(), x64.grad, rtol=2e-3, atol=1e-3)


def test_compile_fullgraph_on_cuda_without_cupy(monkeypatch):
    """The situation of a CUDA machine without CuPy: backend auto falls back to SpikingJelly's path
    under torch.compile(fullgraph=True) instead of failing on the import."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(nodes, "_CUPY_OK", None)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), LIFNode(step_mode="m")).cuda()
    assert nodes._CUPY_OK is False  # probed when the node was built

    def step(inp):
        functional.reset_net(net)
        return net(inp).sum()

    torch._dynamo.reset()
    x = torch.randn(4, 8, 16, device="cuda")
    # aot_eager: the failure was Dynamo's (tracing the import); Inductor would only add compile time
    assert torch.equal(torch.compile(step, backend="aot_eager", fullgraph=True)(x), step(x))
    torch._dynamo.reset()


def test_bound_kernels_match_per_call_launches():
    """The plan's bound CuPy kernels give what the launcher's per-call methods give, bind once, and
    follow the current stream."""
    node = LIFNode(step_mode="m", backend="cupy")
    x = torch.randn(4, 8, 64, device="cuda", requires_grad=True)
    s = node(x)
    s.sum().backward()
    plan = node._sjb_plan
    launcher = fused.get_launcher()
    spike, m = torch.empty_like(x), torch.empty_like(x)
    v_last = torch.empty_like(x[0])
    launcher.forward(plan.cfg, x.detach(), None, 0.0, spike, m, v_last, None, plan.tau, plan.v_threshold,
                     plan.v_reset)
    grad_x = torch.empty_like(x)
    launcher.backward(plan.cfg, torch.ones_like(x), None, None, m, grad_x, None, plan.tau, plan.v_threshold,
                      plan.v_reset, plan.alpha)
    assert torch.equal(s, spike) and torch.equal(x.grad, grad_x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        functional.reset_net(node)
        s_side = node(x.detach())
    torch.cuda.current_stream().wait_stream(side)
    assert node._sjb_plan is plan and torch.equal(s_side, s)
