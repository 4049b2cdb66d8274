"""What every benchmark script shares: the preflight, the environment record, partial JSON, timing.

* :func:`preflight` — checks CUDA (and CuPy) and imports the modules a script needs *before* the script
  imports SpikingJelly or sj_bwsnn itself, so a missing package is one line and exit code 2, not a
  traceback; it also refuses a session-wide ``SJ_*_CUDA_IMPLEMENTATION`` (non-auto values make
  SpikingJelly's bf16 fallbacks raise; ``lif.py`` sets it per contender in its own subprocess).
* :func:`environment` — device, GPU (name, compute capability, memory, driver), versions (Python,
  torch, CUDA, cuDNN, Triton, torchvision, SpikingJelly, timm, CuPy, NumPy), git commit, the cuDNN /
  TF32 switches, host CPU and threads. Never raises: a package without a dist-info reads
  ``"unknown (no dist-info)"``, a missing one ``None``.
* :class:`Recorder` — the JSON record of a run, rewritten atomically after every row with
  ``complete: false`` and once more at the end, so a late failure (or a kill on timeout) keeps every
  row measured so far.
* :func:`event_times_ms`, :func:`host_issue_us`, :func:`free_memory` — timing and cleanup.

``write_record(path, script, **fields)`` and ``stamped(out_dir, prefix)`` keep their old meaning.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# import name -> what to bring to a machine without a package index (see bench/README.md)
WHEELS = {
    "spikingjelly": "spikingjelly==2.0.0", "loguru": "loguru", "h5py": "h5py", "yaml": "PyYAML",
    "timm": "timm", "torchvision": "torchvision (matching torch)", "triton": "triton (matching torch)",
    "cupy": "cupy-cuda12x or cupy-cuda13x (matching the driver)", "numpy": "numpy",
    "pytest": "pytest pluggy iniconfig packaging pygments", "huggingface_hub": "huggingface_hub",
    "safetensors": "safetensors", "PIL": "pillow", "tqdm": "tqdm",
}
# what sj_bwsnn's benchmarks import at import time, beyond torch (issue 20: SpikingJelly's model
# package imports h5py through spikformer -> distributed/vision/inference.py; the recipe engine yaml)
BENCH_IMPORTS = ("numpy", "yaml", "loguru", "h5py", "timm", "torchvision", "spikingjelly.activation_based.neuron",
                 "spikingjelly.activation_based.model.spiking_resnet",
                 "spikingjelly.activation_based.model.spikformer", "spikingjelly.activation_based.precision",
                 "sj_bwsnn", "sj_bwsnn.engine.trainer")
GPU_IMPORTS = ("triton", "cupy")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def check_imports(modules) -> list[str]:
    """One line per module of ``modules`` that does not import, naming the wheel to bring."""
    problems = []
    for name in modules:
        try:
            __import__(name)
        except BaseException as exc:  # noqa: BLE001 - a broken install may raise anything
            if isinstance(exc, KeyboardInterrupt):
                raise
            missing = getattr(exc, "name", None) or name
            top = missing.split(".")[0]
            bring = WHEELS.get(top, top)
            problems.append(f"cannot import {name} ({_first_line(exc)}); bring the wheel: {bring} "
                            "(see bench/README.md)")
    return problems


def forced_sj_implementations(environ=None) -> dict[str, str]:
    """The ``SJ_*_CUDA_IMPLEMENTATION`` variables set to something other than ``auto``."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if k.startswith("SJ_") and k.endswith("_CUDA_IMPLEMENTATION") and v.strip().lower() not in ("", "auto")}


def preflight(script: str, *, cuda: bool = True, cupy: bool = False, modules=(), allow_forced_sj: bool = False):
    """One line and exit 2 unless CUDA (``cuda``), CuPy (``cupy``) and every module import."""
    if cuda and not torch.cuda.is_available():
        print(f"{script}: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(2)
    if not allow_forced_sj and (forced := forced_sj_implementations()):
        print(f"{script}: unset {', '.join(f'{k}={v}' for k, v in forced.items())}: a forced SpikingJelly "
              "implementation makes its bf16 fallbacks raise (bench/lif.py sets it per contender itself)",
              file=sys.stderr)
        sys.exit(2)
    problems = check_imports([*modules, *(["cupy"] if cupy else [])])
    if problems:
        print(f"{script}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
              file=sys.stderr)
        sys.exit(2)


def refuse_without_gpu(script: str, cupy: bool = True) -> None:
    """One line and exit 2 unless CUDA (and, with ``cupy``, CuPy) is there."""
    preflight(script, cuda=True, cupy=cupy, allow_forced_sj=True)


def _version(module: str, dists=()) -> str | None:
    """``module``'s version; None if it does not import; never raises."""
    try:
        mod = __import__(module)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None
    found = getattr(mod, "__version__", None)
    if isinstance(found, str):
        return found
    for dist in (*dists, module):
        try:
            return metadata.version(dist)
        except Exception:  # noqa: BLE001 - PackageNotFoundError, a broken dist-info
            continue
    return "unknown (no dist-info)"


def versions() -> dict:
    """Python, torch, CUDA, cuDNN, Triton, torchvision, SpikingJelly, timm, CuPy, NumPy versions
    (None where not installed)."""
    found = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda)
    try:
        found["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001
        found["cudnn"] = None
    for module, dists in (("triton", ()), ("torchvision", ()), ("spikingjelly", ()), ("timm", ()),
                          ("cupy", ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x")), ("numpy", ())):
        found[module] = _version(module, dists)
    return found


def cpu_model() -> str:
    """The host CPU's model name (host-side costs depend on it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return platform.processor() or "cpu"


def driver_version() -> str | None:
    """The NVIDIA driver version (nvidia-smi, else CuPy's driver API number), None without one."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    if "cupy" in sys.modules or torch.cuda.is_available():
        try:
            import cupy

            return f"CUDA driver API {cupy.cuda.runtime.driverGetVersion()}"
        except Exception:  # noqa: BLE001
            pass
    return None


def git_commit() -> str | None:
    """``HEAD`` of the checkout (``+dirty`` with uncommitted changes to tracked files), else the
    ``BENCH_GIT_COMMIT`` environment variable (a copy without .git), else None."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=20).stdout.strip()
            return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("BENCH_GIT_COMMIT")


def gpu_info() -> dict | None:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return dict(name=props.name, compute_capability=f"{props.major}.{props.minor}",
                memory_gib=round(props.total_memory / 2**30, 1), count=torch.cuda.device_count(),
                driver=driver_version())


def environment() -> dict:
    """Everything about the machine and the software a figure depends on (see the module docstring)."""
    return dict(device=device_name(), gpu=gpu_info(), host_cpu=cpu_model(), torch_threads=torch.get_num_threads(),
                versions=versions(), git_commit=git_commit(),
                cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                tf32=dict(matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                          cudnn=bool(torch.backends.cudnn.allow_tf32)),
                sj_env={k: v for k, v in os.environ.items() if k.startswith("SJ_")})


def stamped(out_dir: str | Path, prefix: str) -> Path:
    """``out_dir/<prefix>_<device>_<UTC time>.json``."""
    now = dt.datetime.now(dt.timezone.utc)
    return Path(out_dir) / f"{prefix}_{device_name().replace(' ', '_')}_{now:%Y%m%dT%H%M%SZ}.json"


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_record(path: str | Path, script: str, **fields) -> Path:
    """Write ``{script, date (UTC), device, host_cpu, versions, environment, **fields}`` and say so."""
    env = environment()
    record = dict(script=script, date=_utc_now(), device=env["device"], host_cpu=env["host_cpu"],
                  versions=env["versions"], environment=env, **fields)
    write_json(path, record)
    print(f"wrote {path}")
    return path


class Recorder:
    """A run's JSON record, saved after every row (``complete: false``) and at the end.

    ``rec = Recorder(path, script, config=...)``; ``rec.add(row)`` appends and saves;
    ``rec.fail(exc)`` notes a failure that ended the run; ``rec.finish(**extra)`` saves with
    ``complete: true`` (unless a failure was noted). ``path`` None keeps everything in memory;
    ``rows_key`` names the list of rows in the JSON."""

    def __init__(self, path: str | Path | None, script: str, rows_key: str = "rows", **fields):
        self.path = None if path is None else Path(path)
        self.rows_key = rows_key
        self.data = dict(script=script, date=_utc_now(), complete=False, error=None,
                         environment=environment(), **fields)
        self.data.setdefault(rows_key, [])
        self.save()

    @property
    def rows(self) -> list:
        return self.data[self.rows_key]

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, self.data)

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        self.save()
        return row

    def fail(self, exc: BaseException | str) -> None:
        self.data["error"] = exc if isinstance(exc, str) else _first_line(exc)
        self.save()

    def finish(self, **extra) -> None:
        self.data.update(extra)
        self.data["complete"] = self.data["error"] is None
        self.data["finished"] = _utc_now()
        self.save()
        if self.path is not None:
            print(f"wrote {self.path}")


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (what a row records for a configuration that failed)."""
    return _first_line(exc)


def free_memory(dynamo: bool = False) -> None:
    """Drop what a finished configuration left: Python garbage, CUDA's cached blocks and, with
    ``dynamo``, torch.compile's compiled graphs (and their CUDA graphs)."""
    if dynamo:
        try:
            torch._dynamo.reset()
        except Exception:  # noqa: BLE001
            pass
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def event_times_ms(fn, reps: int, warmup: int = 3, cuda: bool | None = None) -> list[float]:
    """Milliseconds of each of ``reps`` calls of ``fn`` after ``warmup`` calls: CUDA events around
    the Python call (host work counts; one synchronisation after all of them) when ``cuda``
    (default: CUDA is available), else ``perf_counter``."""
    for _ in range(warmup):
        fn()
    if not (torch.cuda.is_available() if cuda is None else cuda):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return times
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    torch.cuda.synchronize()
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in pairs]


def wall_and_cpu_times_ms(fn, reps: int) -> tuple[list[float], list[float]]:
    """CPU runs: per call, the wall time (``perf_counter``) and this process's CPU time
    (``process_time``, all its threads). On a shared machine the CPU time leaves out the time the
    process waited for a core; with one thread it is the compute the call took."""
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return wall, cpu


def host_issue_us(fn, bursts: int = 10, burst: int = 3, sync=None) -> dict:
    """Host time to issue one call of ``fn``, in µs: ``bursts`` short bursts of ``burst`` calls, each
    started on an idle device (``sync`` before it, default ``torch.cuda.synchronize``) and timed with
    ``perf_counter`` without a synchronisation inside. Short bursts keep the launch queue from filling,
    so a call with long device time (SpikingJelly's Torch reference) cannot turn into waiting.
    Returns ``{median_us, min_us, per_burst_us, bursts, burst}``."""
    sync = torch.cuda.synchronize if sync is None else sync
    per_call = []
    for _ in range(bursts):
        sync()
        t0 = time.perf_counter()
        for _ in range(burst):
            fn()
        per_call.append((time.perf_counter() - t0) / burst * 1e6)
    sync()
    return dict(median_us=statistics.median(per_call), min_us=min(per_call), per_burst_us=per_call,
                bursts=bursts, burst=burst)


def summary_ms(times: list[float]) -> dict:
    """``median_ms``, ``min_ms``, ``p10_ms``, ``p90_ms`` and the per-rep ``times_ms``."""
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [times[0]] * 9
    return dict(median_ms=statistics.median(times), min_ms=min(times), p10_ms=q[0], p90_ms=q[-1],
                times_ms=list(times))
