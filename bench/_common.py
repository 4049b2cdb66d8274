"""What every benchmark script writes next to its figures: device, versions, date.

``write_record(path, script, **fields)`` writes ``{script, date (UTC), device, host_cpu, versions,
**fields}`` as JSON and prints where; ``stamped(out_dir, prefix)`` names a file by GPU and UTC time so runs on
different machines never overwrite each other.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import torch


def versions() -> dict:
    """Python, torch, CUDA, SpikingJelly, timm and CuPy versions (None where not installed)."""
    found = {}
    for name in ("spikingjelly", "timm", "cupy"):
        try:
            module = __import__(name)
        except Exception:
            found[name] = None
            continue
        # spikingjelly has no __version__; CuPy's distribution name varies (cupy-cuda12x, ...)
        found[name] = getattr(module, "__version__", None) or metadata.version(name)
    return dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                **found)


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


def stamped(out_dir: str | Path, prefix: str) -> Path:
    """``out_dir/<prefix>_<device>_<UTC time>.json``."""
    now = dt.datetime.now(dt.timezone.utc)
    return Path(out_dir) / f"{prefix}_{device_name().replace(' ', '_')}_{now:%Y%m%dT%H%M%SZ}.json"


def write_record(path: str | Path, script: str, **fields) -> Path:
    """Write the record (see the module docstring) to ``path`` and say so."""
    record = dict(script=script, date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  device=device_name(), host_cpu=cpu_model(), versions=versions(), **fields)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def refuse_without_gpu(script: str, cupy: bool = True) -> None:
    """One line and exit 2 unless CUDA (and, with ``cupy``, CuPy) is there."""
    if not torch.cuda.is_available():
        print(f"{script}: needs a CUDA GPU (torch.cuda.is_available() is False)")
        sys.exit(2)
    if cupy:
        try:
            import cupy  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - any import failure means "no CuPy"
            print(f"{script}: needs CuPy (pip install 'sj-bwsnn[cuda]'): {exc}")
            sys.exit(2)


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
