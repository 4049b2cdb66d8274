"""What every benchmark script writes next to its figures: device, versions, date.

``write_record(path, script, **fields)`` writes ``{script, date (UTC), device, host_cpu, versions,
**fields}`` as JSON and prints where; ``stamped(out_dir, prefix)`` names a file by GPU and UTC time so runs on
different machines never overwrite each other.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
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
