"""``sj-bwsnn doctor``: can this setup train, and with which neuron backend?

Reports versions (Python, torch, torchvision, spikingjelly, timm, CuPy, and the optional NIR
packages nir / nirtorch / snntorch of ``sj-bwsnn export --format nir``), whether CUDA is visible
(driver, GPU name), runs sj_bwsnn's fused neuron kernels on the GPU against SpikingJelly's Torch
reference when CUDA and CuPy are there (:mod:`sj_bwsnn.neuron.selfcheck`: spikes identical, input
gradients within 1e-5 in float32 and 1e-2 in bfloat16), names the backend ``backend: auto`` picks,
and runs one training step of a tiny BW-ResNet.

Verdict: ok (exit 0) when torch, spikingjelly and timm import and the training step runs, on the
GPU or else on the CPU. CUDA without CuPy still trains (backend torch). CuPy that imports but cannot
run the kernels on a visible GPU, or kernels that disagree with the reference, are a failure:
``auto`` would pick them. Exit 1 comes with one line
naming what is missing and how to fix it.
"""

from __future__ import annotations

import importlib
import platform
import time
from dataclasses import dataclass, field

REQUIRED = ("torch", "spikingjelly", "timm", "yaml")
OPTIONAL = ("torchvision", "cupy", "sklearn", "matplotlib", "nir", "nirtorch", "snntorch")
# optional packages of `export --format nir`: shown as "not installed (how)" when absent
NIR_HINT = {"nir": "pip install 'sj-bwsnn[nir]'", "nirtorch": "pip install 'sj-bwsnn[nir]'",
            "snntorch": "pip install 'sj-bwsnn[nir-test]': second NIR reader for the tests"}
FIX = {
    "torch": "pip install torch (see https://pytorch.org for the CUDA build)",
    "spikingjelly": "pip install spikingjelly==2.0.0",
    "timm": "pip install timm",
    "yaml": "pip install pyyaml",
}


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (label, value)
    problem: str | None = None  # the first blocking problem, one line with its fix

    def add(self, label: str, value: str) -> None:
        self.lines.append((label, value))

    def fail(self, why: str) -> None:
        self.problem = self.problem or why


def _version(mod_name: str) -> tuple[str | None, str | None]:
    """``(version, None)`` if the module imports, else ``(None, error)``."""
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or a broken install raising anything
        return None, f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if mod_name == "spikingjelly":
        try:
            from importlib.metadata import version

            return version("spikingjelly"), None
        except Exception:
            pass
    return str(getattr(mod, "__version__", "unknown")), None


class KernelMismatch(RuntimeError):
    """The fused kernels ran but disagree with SpikingJelly's reference."""


def _cupy_kernel() -> str:
    """Run sj_bwsnn's fused neuron kernels with CuPy on the GPU against SpikingJelly's Torch
    reference (:func:`sj_bwsnn.neuron.selfcheck.check_fused`); the summary line, or raises
    (ImportError without CuPy, :class:`KernelMismatch` on a disagreement, CuPy's errors)."""
    import cupy  # noqa: F401 - ImportError means "not installed"

    from sj_bwsnn.neuron import selfcheck

    checks = selfcheck.check_fused("cuda")
    line = selfcheck.summary(checks)
    if not all(c.ok for c in checks):
        raise KernelMismatch(line)
    return line


def _driver_version() -> str:
    """The NVIDIA driver version from ``nvidia-smi`` (or CuPy), else 'unknown'."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import cupy

        return f"CUDA driver API {cupy.cuda.runtime.driverGetVersion()}"
    except Exception:
        return "unknown (no nvidia-smi, no CuPy)"


def _train_step(device) -> float:
    """One forward/backward/step of a tiny BW-ResNet on random data; returns seconds."""
    import timm
    import torch
    from spikingjelly.activation_based import functional

    import sj_bwsnn.models  # noqa: F401  (registers the models)

    model = timm.create_model("bw_resnet_tiny", num_classes=10, T=2).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 1, 8, 8, device=device)
    y = torch.randint(0, 10, (4,), device=device)
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    functional.reset_net(model)
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is {loss.item()}")
    return time.perf_counter() - t0


def diagnose() -> Report:
    """Run every check; see the module docstring for the verdict."""
    rep = Report()
    rep.add("python", f"{platform.python_version()} ({platform.machine()})")
    missing = []
    for name in REQUIRED + OPTIONAL:
        ver, err = _version(name)
        if ver is None and name in NIR_HINT and err.startswith("ModuleNotFoundError"):
            rep.add(name, f"not installed ({NIR_HINT[name]})")
        else:
            rep.add(name, ver if ver else f"not available ({err})")
        if ver is None and name in REQUIRED:
            missing.append(name)
    if missing:
        rep.fail(f"missing {', '.join(missing)}: " + "; ".join(FIX[m] for m in missing))
        return rep

    import torch

    from sj_bwsnn.neuron import LIFNode

    cuda = torch.cuda.is_available()
    rep.add("cuda", f"visible (torch built for CUDA {torch.version.cuda})" if cuda
            else f"not visible (torch built for CUDA {torch.version.cuda or 'none: CPU-only build'})")
    if cuda:
        rep.add("gpu", f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})")
        rep.add("driver", _driver_version())
        try:
            rep.add("cupy kernel", _cupy_kernel())
        except ImportError:
            rep.add("cupy kernel", "skipped (CuPy not installed; pip install cupy-cuda12x for "
                    "the fused kernels)")
        except KernelMismatch as e:
            rep.add("cupy kernel", f"FAILED: {e}")
            rep.fail("the fused CuPy kernels disagree with SpikingJelly's reference on this GPU, and "
                     "backend auto would pick them: set neuron.backend: torch (and report it)")
        except Exception as e:
            rep.add("cupy kernel", f"FAILED: {e.__class__.__name__}: {str(e).splitlines()[0]}")
            rep.fail("CuPy imports but cannot run a kernel, and backend auto would pick it: "
                     "install the cupy-cudaXXx wheel matching the driver (or uninstall cupy)")
    else:
        rep.add("cupy kernel", "skipped (no CUDA)")
    device = torch.device("cuda" if cuda else "cpu")
    probe = torch.zeros(1, device=device)
    rep.add("neuron backend", f"auto -> {LIFNode(backend='auto').resolved_backend(probe)} "
            f"(on {device.type} tensors)")
    try:
        dt = _train_step(device)
        rep.add("train step", f"ok on {device.type} (tiny BW-ResNet, {dt * 1000:.0f} ms)")
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        rep.add("train step", f"FAILED on {device.type}: {e.__class__.__name__}: {first}")
        rep.fail(f"a training step fails on {device.type} ({e.__class__.__name__}: {first}); "
                 f"reinstall torch / spikingjelly / timm, or run with SJ_BWSNN_DEBUG=1")
    return rep


def format_report(rep: Report) -> str:
    w = max(len(k) for k, _ in rep.lines)
    lines = [f"{k:<{w}}  {v}" for k, v in rep.lines]
    lines.append("verdict".ljust(w) + "  " + ("ok: this setup can train" if rep.problem is None
                                             else f"cannot train: {rep.problem}"))
    return "\n".join(lines)
