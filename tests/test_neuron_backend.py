"""Neuron backends on the CPU: dispatch, errors, and the fused kernel's math.

The fused kernel (``sj_bwsnn/neuron/kernels/multistep.cu``) is built here as host C++ with g++
(:class:`HostLauncher`) and driven through the same custom ops and autograd glue as on the GPU, then
compared with SpikingJelly's Torch reference: spikes identical in fp32, gradients against fp64.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, surrogate

from sj_bwsnn.errors import UserError
from sj_bwsnn.neuron import LIFNode, fused, nodes
from sj_bwsnn.neuron.kernels import host

from _neuron_util import loss_of, make_node, random_config

needs_gxx = pytest.mark.skipif(host.compiler() is None, reason="needs g++ to build the kernel on the host")


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """Route the fused ops to the g++ build of multistep.cu for the duration of this module."""
    if host.compiler() is None:
        pytest.skip("needs g++")
    previous = fused._launcher
    fused.set_launcher(host.HostLauncher(str(tmp_path_factory.getbasetemp() / "sjb_host")))
    yield
    fused.set_launcher(previous)


def run(node, x, fused_path):
    """Spikes of one multi-step call, through the fused kernel or the node's own (torch) path."""
    if fused_path:
        return fused.multi_step(node, x)
    return node(x)


CONFIGS = [random_config(seed) for seed in range(14)]


@needs_gxx
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"c{i}" for i in range(len(CONFIGS))])
def test_fused_kernel_matches_sj_reference(host_kernels, cfg):
    """fp32: spikes and v identical to SJ's fp32 reference; input gradients within 1e-5 of fp64."""
    cfg = dict(cfg)
    kind, T = cfg.pop("kind"), cfg.pop("T")
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(T, 3, 5, 7, generator=gen) * 1.5 + 0.3)
    weights = tuple(torch.randn(s, generator=gen, dtype=torch.float64)
                    for s in (x.shape, x.shape[1:], x.shape))

    ours, ref32, ref64 = (make_node(kind, **cfg) for _ in range(3))
    x_ours, x_ref64 = x.clone().requires_grad_(), x.double().requires_grad_()
    s_ours = run(ours, x_ours, fused_path=True)
    s_ref32 = run(ref32, x.clone(), fused_path=False)
    s_ref64 = run(ref64, x_ref64, fused_path=False)

    assert s_ours.dtype == torch.float32 and s_ours.shape == x.shape
    assert torch.equal(s_ours, s_ref32)
    assert torch.equal(ours.v, ref32.v)
    if cfg["store_v_seq"]:
        assert torch.equal(ours.v_seq, ref32.v_seq)
    loss_of(s_ours, ours, weights).backward()
    loss_of(s_ref64, ref64, weights).backward()
    assert torch.equal(s_ours.double(), s_ref64), "fp64 reference spikes differ; pick another seed"
    torch.testing.assert_close(x_ours.grad.double(), x_ref64.grad, rtol=1e-5, atol=1e-6)


@needs_gxx
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("soft", [True, False])
def test_fused_kernel_half_precision(host_kernels, dtype, soft):
    """fp16 / bf16 storage, fp32 arithmetic: gradients within 1e-2 (norm-relative) of fp64, state fp32."""
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 64, 16, generator=gen) + 0.4).to(dtype)
    kw = dict(tau=2.0, decay_input=True, v_reset=None if soft else 0.0,
              surrogate_function=surrogate.ATan(alpha=2.0), store_v_seq=False)
    ours, ref = make_node("lif", **kw), make_node("lif", **kw)
    x_ours, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
    s_ours, s_ref = run(ours, x_ours, True), run(ref, x_ref, False)
    assert s_ours.dtype == dtype and ours.v.dtype == torch.float32
    assert (s_ours.double() != s_ref).float().mean() < 1e-3
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    (s_ours.double() * w).sum().backward()
    (s_ref * w).sum().backward()
    assert x_ours.grad.dtype == dtype
    err = (x_ours.grad.double() - x_ref.grad).norm() / x_ref.grad.norm()
    assert err < 1e-2, err


@needs_gxx
def test_fused_state_across_calls_and_reset(host_kernels):
    """v carries across calls (and so does the gradient), reset_net restores the initial state."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 4, 9, generator=gen, dtype=torch.float64).float()
    ours, ref = make_node("lif", v_reset=0.0), make_node("lif", v_reset=0.0)
    xa, xr = x.clone().requires_grad_(), x.double().requires_grad_()
    s_ours = torch.cat([run(ours, xa[:3], True), run(ours, xa[3:], True)])
    s_ref = run(ref, xr, False)
    assert torch.equal(s_ours.double(), s_ref)
    torch.testing.assert_close(ours.v.double(), ref.v, rtol=1e-6, atol=1e-6)
    w = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    (s_ours.double() * w).sum().backward()
    (s_ref * w).sum().backward()
    torch.testing.assert_close(xa.grad.double(), xr.grad, rtol=1e-5, atol=1e-6)

    functional.reset_net(ours)
    assert ours.v == 0.0
    s_again = run(ours, x[:3], True)
    assert torch.equal(s_again, s_ours[:3].detach())


@needs_gxx
def test_fused_channels_last_layout(host_kernels):
    """A time-major channels_last input is used in place; outputs keep its strides and values."""
    x = torch.randn(2 * 3, 4, 5, 5).to(memory_format=torch.channels_last).view(2, 3, 4, 5, 5)
    assert not x.is_contiguous() and fused._time_major_dense(x)
    a, b = make_node("lif"), make_node("lif")
    s = run(a, x, True)
    assert s.stride() == x.stride()
    assert torch.equal(s, run(b, x.contiguous(), True))
    assert not fused._time_major_dense(x.transpose(0, 1))


@needs_gxx
def test_fused_ops_compile_without_graph_breaks(host_kernels):
    """The custom ops trace under torch.compile(fullgraph=True) with fake tensors and autograd."""
    node = make_node("lif", v_reset=None)

    def step(x):
        functional.reset_net(node)
        return run(node, x, True).sum(0)

    x = torch.randn(3, 2, 8)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_c, out_e = compiled(xc), step(xe)
    assert torch.equal(out_c, out_e)
    out_c.sum().backward()
    out_e.sum().backward()
    assert torch.equal(xc.grad, xe.grad)


# --- dispatch and errors (no kernel needed) -------------------------------------------------------

def test_auto_uses_sj_path_on_cpu():
    node, sj = LIFNode(step_mode="m"), LIFNode(step_mode="m", backend="torch")
    x = torch.randn(4, 2, 6)
    assert node.resolved_backend(x) == "torch"
    assert torch.equal(node(x), sj(x)) and torch.equal(node.v, sj.v)


def test_cupy_on_cpu_tensor_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(nodes, "_cupy_available", lambda: True)
    with pytest.raises(UserError, match="needs CUDA tensors, got a cpu tensor"):
        LIFNode(step_mode="m", backend="cupy")(torch.randn(2, 3))


def test_cupy_without_cupy_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(nodes, "_cupy_available", lambda: False)
    # on a CUDA device (checked before any tensor exists, as the trainer does)
    with pytest.raises(UserError, match=r"needs CuPy: pip install 'sj-bwsnn\[cuda\]'"):
        nodes.check_backend_available("cupy", "cuda")
    nodes.check_backend_available("auto", "cuda")  # auto falls back instead of failing


def test_unknown_backend_rejected():
    with pytest.raises(UserError, match="one of auto, cupy, torch"):
        LIFNode(backend="cuda")


def test_kernel_refuses_unsupported_configurations():
    node = LIFNode(step_mode="m", surrogate_function=surrogate.Sigmoid(alpha=4.0))
    assert fused.unsupported_reason(node, torch.randn(2, 3)) is None
    assert "float64" in fused.unsupported_reason(node, torch.randn(2, 3, dtype=torch.float64))
    node.surrogate_function = surrogate.Rect(alpha=1.0) if hasattr(surrogate, "Rect") else lambda x: x
    with pytest.raises(UserError, match="does not support surrogate"):
        fused.multi_step(node, torch.randn(2, 3))


@pytest.mark.parametrize("store", [False, True])
def test_temporal_grad_false_drops_the_temporal_path(store):
    """temporal_grad=False: dL/dx[t] only sees step t (here: spikes at t and v_seq at t)."""
    x = torch.randn(5, 20, dtype=torch.float64, requires_grad=True)
    node = LIFNode(step_mode="m", backend="torch", temporal_grad=False, store_v_seq=store)
    spikes = node(x)
    (spikes[-1].sum()).backward()
    assert x.grad[:-1].abs().sum() == 0 and x.grad[-1].abs().sum() > 0
    full = LIFNode(step_mode="m", backend="torch", store_v_seq=store)
    x2 = x.detach().clone().requires_grad_()
    assert torch.equal(full(x2), spikes)
    if store:
        assert torch.equal(node.v_seq, full.v_seq) and node.v_seq.shape == x.shape


def test_cupy_launcher_packs_arguments_like_the_kernel_signatures(monkeypatch):
    """CupyLauncher against a stand-in CuPy: options, per-config caching, one stream, argument types."""
    import re
    import sys
    import types

    import numpy as np

    from sj_bwsnn.neuron import kernels
    from sj_bwsnn.neuron.kernels import CupyLauncher, KernelConfig, source

    calls, modules = [], []

    class Fn:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args, shared_mem, stream):
            calls.append((self.name, grid, block, args, stream))

    class RawModule:
        def __init__(self, code, options):
            modules.append(options)

        def get_function(self, name):
            return types.SimpleNamespace(kernel=Fn(name))

    devices = []

    class Device:
        def __init__(self, index):
            devices.append(index)

        __enter__ = lambda self: self  # noqa: E731
        __exit__ = lambda self, *exc: None  # noqa: E731

    fake = types.SimpleNamespace(RawModule=RawModule, cuda=types.SimpleNamespace(
        Device=Device, ExternalStream=lambda ptr, device: ("stream", ptr, device)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(kernels, "current_stream_ptr", lambda device: 1234)
    x = torch.randn(3, 600)
    launcher = CupyLauncher()
    cfg = KernelConfig(True, True, False, 0, 2, False, True)
    for _ in range(2):
        launcher.forward(cfg, x, None, 0.5, x, x, x[0], None, 2.0, 1.0, 0.0)
        launcher.backward(cfg, x, x, None, x, x, x[0], 2.0, 1.0, 0.0, 4.0)
    assert len(modules) == 1 and "-DSJB_SURROGATE=2" in modules[0]
    n_params = {name: len(re.search(name + r"\((.*?)\)\s*{", source(), re.S).group(1).split(","))
                for name in ("sjb_multistep_forward", "sjb_multistep_backward")}
    for name, grid, block, args, stream in calls:
        assert grid == (3,) and block == (256,) and stream == ("stream", 1234, None)
        assert len(args) == n_params[name]
        assert all(isinstance(a, (np.uint64, np.int64, np.float64)) for a in args)
    fwd = calls[0][3]
    assert fwd[1] == 0 and fwd[5] == 0 and fwd[6] == 600 and fwd[7] == 3 and fwd[11] == 0.5

    # bound kernels (what the nodes call): the same arguments; module, device context and packed
    # scalars made once by bind
    legacy, n_devices = list(calls), len(devices)
    calls.clear()
    bound = launcher.bind(cfg, None, 2.0, 1.0, 0.0, 4.0)
    assert len(modules) == 1 and len(devices) == n_devices + 1
    for _ in range(2):
        bound.forward(x, None, 0.5, x, x, x[0], None)
        bound.backward(x, x, None, x, x, x[0])
    assert len(devices) == n_devices + 1 and len(calls) == len(legacy)
    for (name, grid, block, args, stream), old in zip(calls, legacy):
        assert (name, grid, block, stream) == old[:3] + old[4:]
        assert [type(a) for a in args] == [type(a) for a in old[3]] and list(args) == list(old[3])


@needs_gxx
def test_fused_no_grad_path_matches(host_kernels):
    """Without autograd (no_grad / evaluation) the kernel skips saving M and gives the same outputs."""
    x = torch.randn(4, 3, 10)
    a, b = make_node("if", v_reset=None, store_v_seq=True), make_node("if", v_reset=None, store_v_seq=True)
    with torch.no_grad():
        s_a = run(a, x, True)
    s_b = run(b, x.clone().requires_grad_(), True)
    assert s_b.requires_grad and not s_a.requires_grad
    assert torch.equal(s_a, s_b.detach()) and torch.equal(a.v, b.v.detach())
    assert torch.equal(a.v_seq, b.v_seq.detach())


@needs_gxx
def test_selfcheck_passes_on_the_host_build_and_catches_broken_kernels(host_kernels):
    """``sj-bwsnn doctor``'s kernel check: all pass on a correct kernel; a 1% gradient error or one
    flipped spike is reported as a disagreement."""
    from sj_bwsnn.neuron import selfcheck

    checks = selfcheck.check_fused("cpu")
    assert len(checks) == 2 * len(selfcheck.CASES) and all(c.ok for c in checks), checks
    assert all(c.compared > 0.9 * 4 * 8 * 33 * 17 for c in checks)  # few neurons left out
    assert selfcheck.summary(checks).startswith("fused kernels match")

    real = fused.get_launcher()

    class GradOff:
        forward = real.forward

        def backward(self, cfg, *args):
            real.backward(cfg, *args)
            args[4].mul_(1.01)  # grad_x

    class SpikeFlipped:
        backward = real.backward

        def forward(self, cfg, x, v0, v_init, spike, *args):
            real.forward(cfg, x, v0, v_init, spike, *args)
            spike.view(-1)[7] = 1 - spike.view(-1)[7]

    for broken, failing in ((GradOff(), {"float32"}), (SpikeFlipped(), {"float32", "bfloat16"})):
        fused.set_launcher(broken)
        try:
            checks = selfcheck.check_fused("cpu")
        finally:
            fused.set_launcher(real)
        assert all(not c.ok for c in checks if c.dtype in failing), checks
        assert "DISAGREE" in selfcheck.summary(checks)


@needs_gxx
def test_detached_state_gets_no_state_gradient(host_kernels, monkeypatch):
    """After detach_net (every step of sltt / ottt) the state needs no gradient: the backward kernel
    is not asked for dL/dV[-1]; with a state in the graph it is, and the gradient reaches it."""
    asked = []
    real = fused.get_launcher()

    class Spy:
        forward = real.forward

        def backward(self, cfg, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0, *rest):
            asked.append(grad_v0 is not None)
            real.backward(cfg, grad_spike, grad_v_seq, grad_v_last, m, grad_x, grad_v0, *rest)

    monkeypatch.setattr(fused, "_launcher", Spy())
    node = make_node("lif", v_reset=None)
    x = torch.randn(2, 3, 5, requires_grad=True)
    run(node, x, True)
    node.v = node.v.detach()
    run(node, x, True).sum().backward()
    assert asked == [False]
    node.v = node.v.detach()
    x2 = torch.randn(2, 3, 5, requires_grad=True)
    first = run(node, x2, True)  # the state now carries x2's graph
    (first.sum() + run(node, x, True).sum()).backward()
    assert asked == [False, True, False] and x2.grad is not None
