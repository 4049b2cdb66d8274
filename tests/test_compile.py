"""``train.compile`` (issue 16): compiled training gives eager's losses, without graph breaks or
recompiles, for every method, on bw_resnet_tiny and a small BW-Spikformer.

Backend: the method matrix compiles with ``aot_eager``: dynamo captures the graphs (graph breaks,
guards and recompiles all happen there) and AOTAutograd builds the forward and backward graphs
(functionalised BatchNorm statistics and neuron state, the fused neuron's custom-op autograd).
Inductor's C++ code generation costs about a minute of CPU per graph on a 2-core machine, so it
runs once, on a one-block BW-ResNet whose neurons go through the fused kernel's host (g++) build.
Compiled models are shared across parametrisations (module-scoped), so each graph compiles once
for the whole file; every test counts only the graphs it adds.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch._dynamo
from spikingjelly.activation_based import functional
from torch._dynamo.utils import counters

import sj_bwsnn.models  # noqa: F401  (registers the models with timm)
from sj_bwsnn.engine import compile as C
from sj_bwsnn.engine.methods import METHODS, build_method
from sj_bwsnn.engine.objectives import CrossEntropyObjective
from sj_bwsnn.engine.precision import Precision
from sj_bwsnn.errors import UserError
from sj_bwsnn.models.base import SpikingClassifier
from sj_bwsnn.models.bw_resnet import BWResNet
from sj_bwsnn.neuron import fused, nodes
from sj_bwsnn.neuron.kernels import host
from sj_bwsnn.neuron.registry import NEURONS

pytestmark = pytest.mark.usefixtures("one_thread", "aot_eager")

NEURON_KW = {"lif": dict(tau=2.0, v_reset=None), "dsr_lif": {}}  # soft reset: OTTT's neuron
# method case -> (method name, build options, neuron)
CASES = {
    "bptt": ("bptt", {}, "lif"),
    "bptt_per_step": ("bptt", {"loss_on": "per_step"}, "lif"),
    "sltt": ("sltt", {}, "lif"),
    "sltt_fused": ("sltt_fused", {}, "lif"),
    "sltt_k": ("sltt_k", {"k": 1}, "lif"),
    "ottt": ("ottt", {"trace_decay": 0.5}, "lif"),
    "dsr": ("dsr", {}, "dsr_lif"),
    "bptt_bf16": ("bptt", {}, "lif"),  # under bf16 autocast (losses within 1e-2)
}
BATCHES = (8, 8, 5)  # a smaller last batch, as a loader's
objective = CrossEntropyObjective()


@pytest.fixture(scope="module")
def aot_eager():
    """Compile with aot_eager (module docstring); room for every variant of the shared models."""
    backend, C.BACKEND = C.BACKEND, "aot_eager"
    with torch._dynamo.config.patch(recompile_limit=64, accumulated_recompile_limit=512):
        yield
    C.BACKEND = backend


def make(kind: str, neuron: str = "lif") -> SpikingClassifier:
    torch.manual_seed(0)
    kw = dict(num_classes=4, in_chans=1, T=2, neuron=NEURONS[neuron], neuron_kwargs=NEURON_KW[neuron])
    if kind == "resnet":
        return timm.create_model("bw_resnet_tiny", **kw)
    if kind == "spikformer":
        return timm.create_model("bw_spikformer_4_384_cifar", embed_dim=16, depth=1, num_heads=2,
                                 img_size=8, patch_size=4, **kw)
    return BWResNet((1,), (8,), stem="cifar", **kw)  # "block": one multi-shortcut block


def batches(sizes=BATCHES):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 1, 8, 8, generator=g) * 2, torch.randint(0, 4, (n,), generator=g))
            for n in sizes]


def train(model, method, data, amp: str = "off", run: C.CompiledRun | None = None) -> list[float]:
    """Losses of ``method`` training ``model`` (Adam) on ``data``, batch by batch (``run``: its
    ``begin_batch`` before each, as the trainer calls it)."""
    torch.manual_seed(5)  # sltt_k draws its steps from torch's stream
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    precision = Precision(amp, data[0][0].device)
    model.train()
    losses = []
    for x, y in data:
        if run is not None:
            run.begin_batch()
        loss, _ = method.train_step(model, x, y, objective, opt, precision)
        functional.reset_net(model)
        losses.append(loss.item())
    return losses


def evaluate(model, x) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(x)
    functional.reset_net(model)
    return out


def method_for(case: str):
    name, options, _ = CASES[case]
    return METHODS[name](**options)


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def breaks() -> int:
    return sum(counters["graph_break"].values())


@pytest.fixture(scope="module")
def compiled():
    """``(kind, neuron, entry) -> (model, its initial state, CompiledRun)``, built on first use and
    shared by the tests of this module."""
    cache = {}

    def get(kind, neuron, entry):
        key = (kind, neuron, entry)
        if key not in cache:
            model = make(kind, neuron)
            method = type("Declared", (), {"compile_entry": entry, "name": "test"})()
            run = C.compile_run("default", True, method, [model], train_batch=8, test_batch=8)
            state = {k: v.clone() for k, v in model.state_dict().items()}
            cache[key] = model, state, run
        model, state, run = cache[key]
        model.load_state_dict(state)
        for m in model.modules():  # sltt_fused switches the temporal path off; start as built
            if hasattr(m, "temporal_grad"):
                m.temporal_grad = True
        functional.reset_net(model)
        return model, run

    return get


# every method on both models; the loss placement and AMP variants of bptt on the ResNet only
MATRIX = [(kind, case) for kind in ("resnet", "spikformer") for case in CASES
          if kind == "resnet" or case not in ("bptt_per_step", "bptt_bf16")]


@pytest.mark.parametrize("kind,case", MATRIX)
def test_compiled_method_matches_eager(compiled, kind, case):
    """Losses within 1e-4 of eager over 3 batches (the last one smaller), then the same again (a
    second epoch) without compiling anything; no graph break (fullgraph=True would raise);
    evaluation through the compiled entry equals eager (its graph is shared by the cases of an
    entry)."""
    neuron, amp = CASES[case][2], "bf16" if case.endswith("bf16") else "off"
    eager_losses = train(make(kind, neuron), method_for(case), batches(), amp)
    method = method_for(case)
    model, run = compiled(kind, neuron, method.compile_entry)
    breaks0 = breaks()
    got = train(model, method, batches(), amp)
    assert run.active, run.failure
    assert got == pytest.approx(eager_losses, abs=1e-2 if amp == "bf16" else 1e-4)
    first_epoch = graphs()
    train(model, method, batches(), amp)
    assert graphs() == first_epoch, "the second epoch compiled again"
    assert breaks() == breaks0
    if case in ("sltt_fused", "dsr", "bptt_bf16"):
        return  # their eval graphs (temporal_grad off, DSR neurons) would be compiled for this only
    x = batches((8,))[0][0]
    eager_model = make(kind, neuron)
    eager_model.load_state_dict(model.state_dict())
    torch.testing.assert_close(evaluate(model, x), evaluate(eager_model, x), rtol=0, atol=1e-5)
    assert run.active and graphs() <= first_epoch + 1  # at most the eval graph (shared by cases)


@pytest.mark.parametrize("kind", ["resnet", "spikformer"])
def test_explain_finds_no_graph_break(kind):
    """torch._dynamo.explain of the training forward: one graph, no break (the other entries and
    states are compiled with fullgraph=True above, where a break would fail the test)."""
    model = make(kind)
    report = torch._dynamo.explain(model.forward)(batches((8,))[0][0])
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


@pytest.fixture
def host_kernels(tmp_path_factory, monkeypatch):
    """The fused kernel built with g++ for the CPU (as in tests/test_neuron_backend.py); nodes
    set to ``backend='cupy'`` (:func:`fused_block`) run it on CPU tensors, eager and compiled."""
    if host.compiler() is None:
        pytest.skip("needs g++")
    previous = fused._launcher
    fused.set_launcher(host.HostLauncher(str(tmp_path_factory.mktemp("sjb_host"))))
    monkeypatch.setattr(nodes, "check_backend_available", lambda backend, device: None)
    yield
    fused.set_launcher(previous)


def fused_block() -> SpikingClassifier:
    """The one-block BW-ResNet with every neuron on the fused kernel (``backend='cupy'``)."""
    model = make("block")
    for m in model.modules():
        if isinstance(m, nodes._BackendMixin):
            m.backend = "cupy"
    return model


@pytest.mark.parametrize("case,backend", [("bptt", "inductor"), ("sltt", "aot_eager")])
def test_fused_neuron_compiled_through_host_build(host_kernels, case, backend):
    """The fused kernel's custom ops under compile (inductor: the generated code calls the op;
    sltt: the state ``v0`` enters as a tensor after the first step) equal the eager fused path."""
    calls = {"n": 0}
    launcher = fused.get_launcher()
    bind = launcher.bind

    class Counted:  # the bound kernels of one configuration, forward launches counted
        def __init__(self, bound):
            self.bound, self.backward = bound, bound.backward

        def forward(self, *args):
            calls["n"] += 1
            return self.bound.forward(*args)

    launcher.bind = lambda *args: Counted(bind(*args))
    eager_losses = train(fused_block(), method_for(case), batches())
    assert calls["n"] > 0, "the eager run did not use the fused kernel"
    model, method = fused_block(), method_for(case)
    run = C.compile_run("default", True, method, [model], train_batch=8, test_batch=8,
                        backend=backend)
    calls["n"] = 0
    got = train(model, method, batches())
    assert run.active, run.failure
    assert calls["n"] > 0, "the compiled run did not use the fused kernel"
    assert got == pytest.approx(eager_losses, abs=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["bptt", "sltt"])
def test_reduce_overhead_cuda_graphs_with_fused_neurons(case):
    """``reduce-overhead`` (inductor + CUDA graphs) on the GPU with the fused CuPy neurons
    (``backend='cupy'``): the kernels launch on the current stream (the capture's) and NVRTC
    compiles them in the eager warm-up run before the capture; losses equal eager's fused path
    within 1e-4 (fp32) and a second epoch records nothing new."""
    dev = torch.device("cuda")
    data = [(x.to(dev), y.to(dev)) for x, y in batches()]

    def block():
        model = make("block").to(dev)
        for m in model.modules():
            if isinstance(m, nodes._BackendMixin):
                m.backend = "cupy"
        return model

    eager_losses = train(block(), method_for(case), data)
    model, method = block(), method_for(case)
    run = C.compile_run("reduce-overhead", True, method, [model], train_batch=8, test_batch=8,
                        backend="inductor")
    got = train(model, method, data, run=run)
    assert run.active, run.failure
    assert got == pytest.approx(eager_losses, abs=1e-4)
    first_epoch = graphs()
    train(model, method, data, run=run)
    assert run.active and graphs() == first_epoch


# -- failures and refusals -------------------------------------------------------------------


class _Breaks(SpikingClassifier):
    """A model whose forward_seq has a graph break."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(64, 4)
        self.T = 2

    def forward_seq(self, x):
        h = self.fc(x.flatten(1))
        torch._dynamo.graph_break()
        return torch.stack([h, 2 * h])


def _fails(*_):
    raise RuntimeError("backend exploded")


def _fails_backward():
    from torch._dynamo.backends.common import aot_autograd

    def forward_ok(gm, example_inputs):
        return gm.forward

    def backward_fails(gm, example_inputs):
        raise RuntimeError("backward lowering exploded")

    return aot_autograd(fw_compiler=forward_ok, bw_compiler=backward_fails)


@pytest.mark.parametrize("why", ["graph break under fullgraph", "backend", "backward lowering"])
def test_a_compile_failure_warns_once_and_trains_eagerly(capsys, why):
    """The failure surfaces at the first call, before any of it runs (the backward is lowered
    with the forward), so the eager fallback gives exactly eager's losses."""
    eager_losses = train(_Breaks(), build_method("bptt"), batches())
    model, method = _Breaks(), build_method("bptt")
    backend = {"backend": _fails, "backward lowering": _fails_backward()}.get(why, "aot_eager")
    run = C.compile_run("default", True, method, [model], backend=backend)
    got = train(model, method, batches())
    assert got == eager_losses
    assert not run.active
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: torch.compile (train.compile: default) "
                                               "failed, training continues eagerly: "), err


def test_graph_breaks_without_fullgraph_are_reported_once(capsys):
    model, method = _Breaks(), build_method("bptt")
    run = C.compile_run("default", False, method, [model])
    for x, y in batches():
        run.begin_batch()
        method.train_step(model, x, y, objective, torch.optim.SGD(model.parameters(), lr=0.1))
    assert run.active
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: torch.compile split the model at "), err


def test_a_model_error_is_not_a_compile_failure():
    """A wrong input is the model's own one-line error, compiled or not; compilation stays on."""
    model, method = make("resnet"), build_method("bptt")
    run = C.compile_run("default", False, method, [model], train_batch=8)
    with pytest.raises(UserError, match="with C=1 at dimension 2"):
        model(torch.randn(2, 8, 3, 8, 8))  # batch 8 at dimension 1: the compiled path
    assert run.active


def test_a_method_that_declares_nothing_is_refused_in_one_line():
    class NoEntry:
        name = "mine"

    with pytest.raises(UserError, match="train.compile is not supported with train.method mine: "
                                        "it does not declare what to compile"):
        C.compile_run("default", False, NoEntry(), [make("block")])
    assert C.compile_run("off", False, NoEntry(), [make("block")]).active is False


REFUSED = {"ide": "digits_ide", "spide": "digits_spide", "opzo": "digits_opzo",
           "dfa": "digits_opzo"}


def test_every_method_compiles_or_is_refused():
    """Each registered method declares its compiled entry, or is one of the refused ones."""
    for name in METHODS:
        entry = build_method(name).compile_entry
        assert (entry is None) == (name in REFUSED), name
        assert entry is None or entry in C.ENTRIES


@pytest.mark.parametrize("name", list(REFUSED))
def test_feedback_and_direct_feedback_methods_refuse_compile_at_build_time(tmp_path, capsys, name):
    """ide, spide, opzo, dfa with train.compile: one line from build_method (the Trainer builds
    the method before the data), through the CLI: exit 2, no run folder; compile off builds."""
    from sj_bwsnn.cli import main, recipe_dirs
    from sj_bwsnn.engine import load_recipe

    path = recipe_dirs()[0] / f"{REFUSED[name]}.yaml"
    sets = [f"train.method={name}", "train.device=cpu"]
    assert build_method(load_recipe(path, sets)).compile_entry is None
    with pytest.raises(UserError, match=f"^train.compile is not supported with train.method "
                                        f"{name}: .+; set train.compile: off$"):
        build_method(load_recipe(path, [*sets, "train.compile=default"]))
    capsys.readouterr()
    argv = ["train", str(path), "--out", str(tmp_path / "run")]
    assert main(argv + [a for s in [*sets, "train.compile=reduce-overhead"] for a in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: train.compile is not supported with "
                                               f"train.method {name}: "), err
    assert not (tmp_path / "run").exists()


def test_compiled_entry_keeps_state_dict_keys_and_can_be_removed():
    model = make("block")
    keys = list(model.state_dict())
    run = C.compile_run("default", False, build_method("sltt"), [model])
    assert list(model.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    assert isinstance(model.forward_seq, C.CompiledEntry)
    run.remove()
    assert model.forward_seq.__func__ is BWResNet.forward_seq


# -- through the Trainer ------------------------------------------------------------------------


def _digits(*sets: str):
    from sj_bwsnn.cli import recipe_dirs
    from sj_bwsnn.engine import load_recipe

    # 80 training images in batches of 32, 40 test images in 32: both end with a smaller batch
    return load_recipe(recipe_dirs()[0] / "digits_bwsnn.yaml", [
        "T=2", "data.max_train=80", "data.max_test=40", "data.batch_size=32", "train.epochs=2",
        "train.device=cpu", "train.plot=false", "train.tensorboard=false", *sets])


def test_trainer_compiles_once_and_matches_eager_with_ema_kd_and_resume(tmp_path):
    """bptt through the Trainer with channels_last, EMA and distillation: the compiled run's
    metrics match eager's (fp32: within 1e-4), epoch 2 compiles nothing, a compiled run resumed from epoch 1's
    checkpoint ends exactly like the uninterrupted one, and the checkpoint's keys are clean."""
    import shutil

    from sj_bwsnn.engine import Trainer, load_checkpoint, save_checkpoint

    teacher = Trainer(_digits(), None)  # untrained: distillation's mechanics, not its quality
    save_checkpoint(tmp_path / "teacher.pt", teacher.state())
    sets = ["train.channels_last=true", "train.ema_decay=0.9",
            f"teacher.checkpoint={tmp_path / 'teacher.pt'}", "teacher.weight=0.5"]
    runs = {}
    for name in ("eager", "compiled", "resumed"):
        (tmp_path / name).mkdir()
        compile_mode = "off" if name == "eager" else "default"
        runs[name] = Trainer(_digits(*sets, f"train.compile={compile_mode}"), tmp_path / name)
    runs["eager"].fit()
    comp = runs["compiled"]
    assert comp.compiled.active and comp.compiled.models == [comp.model, comp.ema.module]
    comp.fit(until=1)
    after_epoch_1 = graphs()
    shutil.copy(tmp_path / "compiled" / "last.pt", tmp_path / "resumed" / "last.pt")
    comp.fit()
    assert graphs() == after_epoch_1, "epoch 2 compiled again"
    assert comp.compiled.active, comp.compiled.failure
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "test_loss_ema", "test_acc_ema")
    for e, c in zip(runs["eager"].metrics, comp.metrics):
        assert [c[k] for k in keys] == pytest.approx([e[k] for k in keys], abs=1e-4)
    ckpt = load_checkpoint(tmp_path / "compiled" / "last.pt")
    assert not any("_orig_mod" in k for k in [*ckpt["model"], *ckpt["ema"]])
    resumed = runs["resumed"]
    resumed.load_state(load_checkpoint(tmp_path / "resumed" / "last.pt"), tmp_path / "resumed")
    resumed.fit()
    assert [[r[k] for k in keys] for r in resumed.metrics] == [[r[k] for k in keys]
                                                              for r in comp.metrics]


def test_recipe_compile_keys():
    from sj_bwsnn.engine.recipe import RESUMABLE_CHANGES, setting_differences

    assert _digits().train.compile == "off"
    assert _digits("train.compile=off").train.compile == "off"  # YAML's bare off is false
    assert _digits("train.compile=true").train.compile == "default"
    with pytest.raises(UserError, match="'train.compile' must be off, default, reduce-overhead, "
                                        "max-autotune"):
        _digits("train.compile=fast")
    a, b = _digits(), _digits("train.compile=max-autotune", "train.compile_fullgraph=true")
    assert list(setting_differences(a, b)) == ["train.compile", "train.compile_fullgraph"]
    assert set(setting_differences(a, b)) <= set(RESUMABLE_CHANGES)
