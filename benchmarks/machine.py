"""What the figures were measured on, and how fast this machine spins, so that anyone can tell
whether their figures are comparable."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.tasks import spin

PACKAGES = ("multi-fabric", "numpy", "loky", "schwimmbad", "mpi4py", "mpich", "matplotlib")
CALIBRATION_ITERATIONS = 1_000_000


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), or what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def mpi_library() -> str:
    """The MPI library's own version line, asked of a separate process so that MPI is never
    initialised in the harness."""
    code = "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0].strip())"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return done.stdout.strip() or "not available"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe() -> dict[str, Any]:
    """Cores, CPU, Python, library versions, and the load when the run started."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu": cpu_model(),
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "start_method": _start_method(),
        "versions": {package: version(package) for package in PACKAGES},
        "mpi_library": mpi_library(),
        "load_average": load_average(),
    }


def _start_method() -> str:
    import multiprocessing

    return multiprocessing.get_start_method()


def load_average() -> list[float] | None:
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return None


def spin_rate(repeats: int = 5) -> float:
    """Loop iterations per second of ``tasks.spin`` here: the median of a few short runs.

    Every backend is then given the same number of iterations, so that they all do the same
    work whatever the load while they run.
    """
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        spin(CALIBRATION_ITERATIONS)
        rates.append(CALIBRATION_ITERATIONS / (time.perf_counter() - start))
    return statistics.median(rates)
