"""Shared test helpers: run the real CLI in a subprocess, skip GPU tests cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Seconds before a subprocess is declared hung. A guard against hangs, not a timing check: it is
# 20-60x what the runs take on 2 idle cores, so a loaded machine never trips it.
HANG_GUARD_S = 1200


def _cuda_and_cupy() -> bool:
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import cupy  # noqa: F401
    except Exception:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    if _cuda_and_cupy():
        return
    skip = pytest.mark.skip(reason="needs CUDA and CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def wait_for_line(proc, prefix: str, timeout: float = HANG_GUARD_S) -> str:
    """Read ``proc``'s stdout until a line starts with ``prefix`` (a hang guard, not a time bar)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line starting with {prefix!r}: {proc.stderr.read()}")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = HANG_GUARD_S, env: dict | None = None):
    """Run ``python -m sj_bwsnn ARGS`` with this checkout on the path; returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "sj_bwsnn", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny ops: thread hand-offs cost more than they save on shared CI cores. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli():
    return run_cli
