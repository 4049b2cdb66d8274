"""bench/_sj.py and lif.py's per-contender processes: which SpikingJelly LIF implementation ran.

The CUDA selection is stubbed (SpikingJelly's cache entries replaced by named stand-ins); the path
counting runs SpikingJelly's real dispatch on the CPU (fp32 -> its registered op, bf16 -> the Torch
reference fallback, as under autocast on a GPU)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _sj  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def stub_selection(monkeypatch):
    """SpikingJelly's LIF selection with empty caches, restored afterwards."""
    from spikingjelly._ops.lif import _selection

    monkeypatch.setattr(_selection, "_selections", {})
    monkeypatch.setattr(_selection, "_compiled_selections", {})
    monkeypatch.setattr(_selection, "_requested", "auto")
    return _selection


def test_describe_reads_the_cached_cuda_selection(stub_selection):
    stub_selection._selections[0] = SimpleNamespace(name="triton")
    state = _sj.lif_selection()
    assert state == dict(requested="auto", eager={"0": "triton"}, compile={}, fallbacks=[])
    assert _sj.describe({"sj_op": 3}, state, "cuda") == "SJ op: triton"
    # compiled: the op resolves through the compile selection (pending until the first trace)
    assert "compile selection pending" in _sj.describe({"sj_op": 3}, state, "cuda", compiled=True)
    stub_selection._compiled_selections[0] = SimpleNamespace(name="triton")
    assert _sj.describe({"sj_op": 1}, _sj.lif_selection(), "cuda", compiled=True) == "SJ op: triton (torch.compile)"


def test_describe_names_the_bf16_fallback_and_the_forced_reference(stub_selection):
    # what _require_automatic_torch records on a GPU when a bf16 state meets the LIF
    stub_selection._selections[(0, "Torch reference implementation required")] = None
    label = _sj.describe({"sj_reference": 17}, _sj.lif_selection(), "cuda")
    assert label.startswith("SJ Torch reference (torch-reference fallback")
    assert "cuda:0: Torch reference implementation required" in label
    stub_selection._requested = "torch"
    stub_selection._selections = {0: SimpleNamespace(name="torch")}
    state = _sj.lif_selection()
    assert state["requested"] == "torch" and _sj.describe({"sj_op": 1}, state, "cuda") == "SJ op: torch"
    assert _sj.describe({"sj_precision": 2}, state, "cuda").startswith("SJ precision API: Triton")
    assert _sj.describe({"sj_bwsnn_fused": 2}, state, "cuda") == "sj_bwsnn fused CuPy kernel"
    assert _sj.describe({}, state, "cuda") == "no spiking neuron ran"


def test_path_counting_follows_spikingjelly_dispatch_and_restores_it():
    from spikingjelly._ops import lif as ops_lif
    from spikingjelly._ops.lif import reference
    from spikingjelly.activation_based import functional, neuron

    before = (ops_lif._forward, reference.multi_step)
    node = neuron.LIFNode(step_mode="m")
    seen = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 2, 5, dtype=dtype, requires_grad=True)
        with _sj.lif_paths() as counts:
            node(x).sum().backward()
            functional.reset_net(node)
        seen[dtype] = dict(counts)
    assert seen[torch.float32] == {"sj_op": 1}  # fp32 state: the registered op
    assert seen[torch.bfloat16] == {"sj_reference": 1}  # bf16 state: the Torch reference
    assert (ops_lif._forward, reference.multi_step) == before


def test_neuron_settings_compare_dynamics_not_classes():
    from spikingjelly.activation_based import neuron, surrogate

    from sj_bwsnn.neuron import LIFNode

    kw = dict(tau=2.0, detach_reset=True, surrogate_function=surrogate.ATan())
    ours, theirs = [LIFNode(step_mode="m", **kw)] * 2, torch.nn.Sequential(neuron.LIFNode(step_mode="m", **kw))
    a, b = _sj.neuron_settings(torch.nn.Sequential(*ours)), _sj.neuron_settings(theirs)
    assert a[0]["surrogate"] == b[0]["surrogate"] and a[0]["backend"] == "auto" and b[0]["backend"] is None
    assert _sj.same_dynamics(a, b)
    other = _sj.neuron_settings(torch.nn.Sequential(neuron.LIFNode(step_mode="m")))  # Sigmoid, no detach
    assert not _sj.same_dynamics(a, other)


def test_each_contender_gets_its_own_environment_without_touching_ours(monkeypatch):
    lif = importlib.import_module("lif")
    monkeypatch.delenv(_sj.LIF_ENV, raising=False)
    env = lif.child_env("torch", base={"PYTHONPATH": "/x", "HOME": "/h"})
    assert env[_sj.LIF_ENV] == "torch" and env["HOME"] == "/h"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(BENCH.parent), "/x"]
    assert _sj.LIF_ENV not in os.environ  # never exported for the session
    args = lif.parse_args(["--T", "2", "4", "--reps", "5"])
    cmd = lif.child_command("sj_torch_fp32", args, Path("/tmp/c.json"))
    assert cmd[:2] == [sys.executable, str(BENCH / "lif.py")] and cmd[cmd.index("--child") + 1] == "sj_torch_fp32"
    assert {name: requested for name, (_, requested, _) in lif.CONTENDERS.items()} == {
        "sj_bwsnn_cupy": "auto", "sj_auto_fp32": "auto", "sj_torch_fp32": "torch", "sj_auto_bf16": "auto",
        "sj_precision_bf16": "auto"}


def test_lif_runs_a_contender_in_its_own_process_and_records_what_ran(tmp_path):
    """The orchestration end to end on the CPU: the child reads SJ_LIF_CUDA_IMPLEMENTATION=torch at
    SpikingJelly's import (its selection says so), the parent's environment never has it."""
    lif = importlib.import_module("lif")
    out = tmp_path / "lif.json"
    assert lif.main(["--device", "cpu", "--shape", "2", "4", "--T", "2", "--reps", "2", "--warmup", "0",
                     "--contenders", "sj_torch_fp32", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["complete"] is True and _sj.LIF_ENV not in os.environ
    (row,) = data["rows"]
    assert row["requested"] == "torch" and row["sj_selection"]["requested"] == "torch"
    assert row["paths"] == {"sj_op": 1} and row["ran"] == "SJ op on the CPU (its Torch reference)"
    assert row["dtype"] == "float32" and row["T"] == 2 and row["warmup"] == 0 and len(row["times_ms"]) == 2
