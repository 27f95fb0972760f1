"""The harness: runs every backend on every workload in fresh processes, interleaved over
several rounds, then writes the report.

The machine is assumed to be noisy. Each round runs every cell once, in an order shuffled per
round, so that a slow spell hits every backend alike rather than one backend's whole series;
the report takes medians over the rounds. Each cell (a backend on a workload) is a fresh
process, timed inside, after its workers have started and warmed up. In quick mode each backend
runs all its workloads in one process, for a check in about a minute.

    python -m benchmarks [--quick] [--rounds N] [--backends a,b] [--workloads x,y]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import machine, report
from benchmarks.backends import BACKENDS, BY_NAME, LOCAL, MPI_FUTURES, Backend
from benchmarks.child import MARKER, SLAVES
from benchmarks.workloads import BY_KEY, WORKLOADS
from multi.mpi4py_processor import mapped_mpi_memory, named_mpi_memory

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "relaxation.py"
FULL_ROUNDS = 3
QUICK_ROUNDS = 1
CELL_TIMEOUT = {True: 120.0, False: 300.0}  # seconds, quick and full


@dataclass(frozen=True)
class Cell:
    """One process to run: a backend on one or more workloads."""

    backend: Backend
    workloads: tuple[str, ...]


def plan(backends: list[Backend], workloads: list[str], quick: bool) -> list[Cell]:
    """The cells of one round; the example program is a cell of its own on each fabric, and
    in quick mode a backend's workloads share a process where they run on as many slaves."""
    cells = []
    for backend in backends:
        timed = [key for key in workloads if key in backend.workloads and key != "example"]
        if quick and timed:
            by_slaves: dict[int, list[str]] = {}
            for key in timed:
                by_slaves.setdefault(BY_KEY[key].slaves(SLAVES), []).append(key)
            cells.extend(Cell(backend, tuple(keys)) for keys in by_slaves.values())
        else:
            cells.extend(Cell(backend, (key,)) for key in timed)
        if "example" in workloads and "example" in backend.workloads:
            cells.append(Cell(backend, ("example",)))
    return cells


def mpiexec() -> str | None:
    """The ``mpiexec`` beside this Python (the mpich wheel puts it there), or on the PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def unavailable(backend: Backend) -> str | None:
    """Why a backend cannot run here, or None."""
    for module in backend.requires:
        if importlib.util.find_spec(module) is None:
            return f"the module {module!r} is not installed (pip install '.[bench]')"
    if backend.launch != LOCAL and mpiexec() is None:
        return "no mpiexec found (pip install mpich)"
    if backend.fabric is not None:
        from multi import registry

        try:
            registry.load(backend.fabric).check_available()
        except Exception as exc:
            return f"multi.registry.load({backend.fabric!r}) failed: {exc}"
    return None


def child_command(backend: Backend, jobs: list[dict[str, Any]]) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.child", backend.name, json.dumps(jobs)]
    if backend.launch == LOCAL:
        return command
    slaves = BY_KEY[jobs[0]["workload"]].slaves(SLAVES)
    ranks = backend.ranks if slaves == SLAVES else slaves + 1
    launcher = [mpiexec() or "mpiexec", "-n", str(ranks), sys.executable]
    if backend.launch == MPI_FUTURES:
        launcher += ["-m", "mpi4py.futures"]
    return launcher + command[1:]


def child_environment() -> dict[str, str]:
    """The harness's environment, with this checkout importable (``benchmarks`` and ``multi``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def remove_left_mpi_memory(before: set[str]) -> list[str]:
    """Remove the files of MPICH's shared memory that appeared since ``before`` and that no
    live process maps, and return them: what the processes of a cell left (schwimmbad's
    ``MPIPool`` leaves one a cell). Memory in /dev/shm stays until the machine restarts: 3 MB
    a cell of 3 ranks, 18 MB of 17."""
    left = named_mpi_memory() - before
    if not left:
        return []
    mapped = {
        os.fsdecode(path)
        for maps in glob.glob("/proc/[0-9]*/maps")
        for path in mapped_mpi_memory(maps)
    }
    removed = sorted(left - mapped)
    for path in removed:
        with suppress(OSError):
            os.unlink(path)
    return removed


def bounded(command: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Run a command in its own session; on timeout, kill the whole session (mpiexec's ranks
    too). Returns the status (None on timeout), stdout and stderr. What it leaves of MPI's
    shared memory is removed."""
    memory = named_mpi_memory()
    try:
        return _bounded(command, timeout)
    finally:
        remove_left_mpi_memory(memory)


def _bounded(command: list[str], timeout: float) -> tuple[int | None, str, str]:
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return None, out, err
    return process.returncode, out, err


def run_cell(cell: Cell, params: dict[str, dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Measure a cell; a cell that fails or times out yields an error for each workload."""
    if cell.workloads == ("example",):
        return [run_example(cell.backend, params["example"], timeout)]
    jobs = [{"workload": key, "params": params[key]} for key in cell.workloads]
    status, out, err = bounded(child_command(cell.backend, jobs), timeout)
    for line in out.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    reason = f"timed out after {timeout:.0f} s" if status is None else f"exit status {status}"
    detail = (err.strip().splitlines() or [""])[-1][:200]
    return [{"workload": key, "error": f"{reason}: {detail}"} for key in cell.workloads]


def run_example(backend: Backend, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run the example application as its users do, and time the whole program."""
    if not EXAMPLE.exists():
        return {"workload": "example", "unavailable": "examples/relaxation.py is not there yet"}
    fabric = backend.fabric or ""
    slaves = "1" if fabric == "uni" else "2"
    with tempfile.TemporaryDirectory(prefix="bench-example-") as output:
        command = [
            sys.executable, str(EXAMPLE), "--fabric", fabric, "--slaves", slaves,
            "--residues", str(params["residues"]), "--simulations", str(params["simulations"]),
            "--output", output, "--no-plot",
        ]  # fmt: skip
        if backend.launch != LOCAL:
            command = [mpiexec() or "mpiexec", "-n", str(backend.ranks), *command]
        start = time.perf_counter()
        status, _, err = bounded(command, timeout)
        seconds = time.perf_counter() - start
    if status != 0:
        reason = "timed out" if status is None else f"exit status {status}"
        detail = (err.strip().splitlines() or [""])[-1][:200]
        return {"workload": "example", "error": f"{reason}: {detail}"}
    return {"workload": "example", "value": seconds}


def workload_params(keys: list[str], quick: bool, spin_rate: float) -> dict[str, dict[str, Any]]:
    params = {}
    for key in keys:
        workload = BY_KEY[key]
        params[key] = workload.params(quick)
        if workload.needs_spin_rate:
            params[key]["spin_rate"] = spin_rate
    return params


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (~1 min)")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {FULL_ROUNDS}, quick 1)")
    parser.add_argument("--backends", help="comma-separated backend names (default: all)")
    parser.add_argument("--workloads", help="comma-separated workload keys (default: all)")
    parser.add_argument("--output", type=Path, help="Markdown report to write (PNG beside it)")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    args = parser.parse_args(argv)
    names = args.backends.split(",") if args.backends else [b.name for b in BACKENDS]
    keys = args.workloads.split(",") if args.workloads else [w.key for w in WORKLOADS]
    for name in names:
        if name not in BY_NAME:
            parser.error(f"unknown backend {name!r}; backends: {', '.join(BY_NAME)}")
    for key in keys:
        if key not in BY_KEY:
            parser.error(f"unknown workload {key!r}; workloads: {', '.join(BY_KEY)}")
    args.names, args.keys = names, keys
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    quick = args.quick
    rounds = args.rounds or (QUICK_ROUNDS if quick else FULL_ROUNDS)
    started = time.time()
    info = machine.describe()
    rate = machine.spin_rate()
    params = workload_params(args.keys, quick, rate)
    backends = [BY_NAME[name] for name in args.names]
    reasons = {backend.name: unavailable(backend) for backend in backends}
    cells = plan([b for b in backends if reasons[b.name] is None], args.keys, quick)
    runs: list[dict[str, Any]] = []
    for round_number in range(1, rounds + 1):
        order = list(cells)
        random.Random(round_number).shuffle(order)
        for cell in order:
            for result in run_cell(cell, params, CELL_TIMEOUT[quick]):
                runs.append({"round": round_number, "backend": cell.backend.name, **result})
                _progress(round_number, rounds, cell.backend.name, result)
    info["load_average_end"] = machine.load_average()
    results = {
        "mode": "quick" if quick else "full",
        "rounds": rounds,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": time.time() - started,
        "machine": info,
        "spin_rate": rate,
        "params": params,
        "backends": {
            b.name: {"label": b.label, "kind": b.kind, "unavailable": reasons[b.name]}
            for b in backends
        },
        "runs": runs,
    }
    mode = results["mode"]
    raw = ROOT / "results" / f"benchmarks-{mode}.json"
    raw.parent.mkdir(exist_ok=True)
    raw.write_text(json.dumps(results, indent=1))
    output = args.output or (ROOT / "results" / "benchmarks-quick.md" if quick else report.DOC)
    readme = None if (quick or args.no_readme) else ROOT / "README.md"
    report.write(results, output, readme)
    print(f"raw results: {raw}\nreport: {output} and {output.with_suffix('.png')}")
    print(f"{len(runs)} measurements in {results['seconds']:.0f} s")


def _progress(round_number: int, rounds: int, backend: str, result: dict[str, Any]) -> None:
    key = result["workload"]
    if "value" in result:
        text = f"{result['value']:.4g} {BY_KEY[key].unit}"
    else:
        text = result.get("error") or result.get("unavailable") or "?"
    print(f"[round {round_number}/{rounds}] {key:<10} {backend:<22} {text}", file=sys.stderr)


if __name__ == "__main__":
    main()
