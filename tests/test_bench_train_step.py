"""bench/train_step.py compares like with like, and BW-ResNet's neuron inputs keep channels_last."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.usefixtures("one_thread")


def _neuron_inputs(model, x):
    from sj_bwsnn.neuron import LIFNode

    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: seen.append((name, inp[0])))
             for name, m in model.named_modules() if isinstance(m, LIFNode)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_every_neuron_input_of_bw_resnet_stays_channels_last():
    from spikingjelly.activation_based import functional

    from sj_bwsnn.models.bw_resnet import bw_resnet_tiny

    torch.manual_seed(0)
    model = bw_resnet_tiny(T=3, num_classes=4).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 8, 8).to(memory_format=torch.channels_last)
    seen = _neuron_inputs(model, x)
    functional.reset_net(model)
    assert len(seen) == 7
    for name, inp in seen:
        T = inp.shape[0]
        assert T == 3 and inp.stride(0) == inp[0].numel(), name  # time-major and dense
        assert all(inp[t].is_contiguous(memory_format=torch.channels_last) for t in range(T)), name


def test_encode_repeats_the_stem_output_over_T_with_its_gradient():
    from sj_bwsnn.models.bw_resnet import bw_resnet_tiny

    model = bw_resnet_tiny(T=3, num_classes=4).double().to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last)
    y = model.stem(x)
    enc = model._encode(x)
    assert torch.equal(enc, y.unsqueeze(0).repeat(3, 1, 1, 1, 1))
    w = torch.randn_like(enc)
    (g_new,) = torch.autograd.grad((model._encode(x) * w).sum(), model.stem[0].weight)
    (g_old,) = torch.autograd.grad((model.stem(x).unsqueeze(0).repeat(3, 1, 1, 1, 1) * w).sum(),
                                   model.stem[0].weight)
    torch.testing.assert_close(g_new, g_old, rtol=1e-12, atol=1e-12)  # float64: summation order only
    frames = torch.randn(3, 2, 1, 8, 8, dtype=torch.float64)  # [T', N, C, H, W] input still runs the stem per frame
    assert model._encode(frames).shape == (3, 2, 32, 8, 8)


def test_defaults_quick_modes_and_run_order():
    ts = importlib.import_module("train_step")
    gpu = ts.parse_args([])
    assert (gpu.batch, gpu.T, gpu.img, gpu.stem, gpu.amp) == (64, 2, 224, "imagenet", "bf16")
    assert gpu.models == list(ts.MODELS) and "sj_spiking_resnet18_precision" not in gpu.compile_models
    cpu = ts.parse_args(["--device", "cpu"])
    assert (cpu.batch, cpu.T, cpu.img, cpu.stem, cpu.amp) == (16, 4, 32, "cifar", "off")
    assert ts.runs(cpu) == [("bw_resnet18", False), ("sj_spiking_resnet18", False),
                            ("bw_resnet18", True), ("sj_spiking_resnet18", True)]
    quick = ts.parse_args(["--models", "bw_resnet18", "torchvision_resnet18", "--no-compile", "--reps", "3"])
    assert ts.runs(quick) == [("bw_resnet18", False), ("torchvision_resnet18", False)] and quick.reps == 3
    some = ts.parse_args(["--models", "bw_resnet18", "sj_spiking_resnet18", "--compile-models", "bw_resnet18"])
    assert ts.runs(some)[-1] == ("bw_resnet18", True) and len(ts.runs(some)) == 3
    note = ts.stem_note(gpu)
    assert note["ours_images"] == 64 and note["sj_images"] == 128
    assert note["ours_gmac"] == pytest.approx(64 * 112 * 112 * 64 * 3 * 49 / 1e9)
    assert note["sj_gmac"] == pytest.approx(2 * note["ours_gmac"])


def test_both_snns_get_the_same_neurons_and_input_layout():
    import _sj

    ts = importlib.import_module("train_step")
    args = ts.parse_args(["--device", "cpu", "--T", "2", "--img", "8"])
    ours, theirs = ts.build("bw_resnet18", args), ts.build("sj_spiking_resnet18", args)
    a, b = _sj.neuron_settings(ours), _sj.neuron_settings(theirs)
    assert _sj.same_dynamics(a, b) and a[0]["surrogate"].startswith("ATan(alpha=2.0")
    assert a[0]["detach_reset"] is True and a[0]["backend"] == "auto"
    assert theirs.net.conv1.kernel_size == (3, 3) and isinstance(theirs.net.maxpool, torch.nn.Identity)
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    rep = ts.repeat_T(x, 2)
    assert rep[1].is_contiguous(memory_format=torch.channels_last) and torch.equal(rep[0], x)


def test_cpu_run_records_everything_and_keeps_rows_when_a_model_fails(tmp_path, monkeypatch):
    ts = importlib.import_module("train_step")
    real = ts.measure

    def measure(name, compiled, args, device):
        if name == "sj_spiking_resnet18":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(name, compiled, args, device)

    monkeypatch.setattr(ts, "measure", measure)
    out = tmp_path / "ts.json"
    assert ts.main(["--device", "cpu", "--models", "bw_resnet18", "sj_spiking_resnet18", "--no-compile",
                    "--batch", "2", "--T", "2", "--img", "8", "--reps", "2", "--warmup", "1",
                    "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["compile_models"] == [] and data["autocast"] is None
    assert data["stem_difference"]["sj_images"] == 4 and data["neuron"]["detach_reset"] is True
    ours, failed = data["rows"]
    assert failed == dict(model="sj_spiking_resnet18", compiled=False, batch=2,
                          error="RuntimeError: CUDA out of memory. Tried to allocate 2 GiB")
    for key in ("ran", "lif_paths", "sj_selection", "neurons", "warmup", "reps", "warmup_s", "dtype",
                "times_ms", "median_ms", "peak_mem_gib"):
        assert key in ours, key
    assert ours["lif_paths"] == {"sj_op": 17} and len(ours["times_ms"]) == 2 and ours["dtype"] == "float32"
    assert len(ours["cpu_times_ms"]) == 2 and ours["cpu_median_ms"] > 0


def test_an_interrupted_run_leaves_partial_json(tmp_path, monkeypatch):
    ts = importlib.import_module("train_step")
    calls = []

    def measure(name, compiled, args, device):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # or a kill: what was measured before stays on disk
        return dict(model=name, compiled=compiled, batch=args.batch, median_ms=1.0, peak_mem_gib=None, ran="x")

    monkeypatch.setattr(ts, "measure", measure)
    out = tmp_path / "ts.json"
    with pytest.raises(KeyboardInterrupt):
        ts.main(["--device", "cpu", "--no-compile", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["complete"] is False and data["error"] == "KeyboardInterrupt"
    assert [r["model"] for r in data["rows"]] == ["bw_resnet18"]


def test_spikformer_step_quick_modes():
    sf = importlib.import_module("spikformer_step")
    full = sf.parse_args(["--out", "x.json"])
    assert "sj_spikformer_ti_precision" in full.models and "sj_spikformer_ti_precision" not in full.compile_models
    assert sf.runs(full)[:4] == [(m, "eager") for m in sf.MODELS] and len(sf.runs(full)) == 7
    quick = sf.parse_args(["--models", "bw_spikformer_ti", "sj_spikformer_ti", "--compile-models", "bw_spikformer_ti",
                           "--out", "x.json"])
    assert sf.runs(quick) == [("bw_spikformer_ti", "eager"), ("sj_spikformer_ti", "eager"),
                              ("bw_spikformer_ti", "compile")]
    assert sf.runs(sf.parse_args(["--no-compile", "--out", "x.json"])) == [(m, "eager") for m in sf.MODELS]
    smoke = sf.parse_args(["--smoke"])
    assert smoke.out is None and smoke.modes == ["eager"] and "sj_spikformer_ti_precision" not in smoke.models
