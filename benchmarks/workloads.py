"""The seven workloads of issue 6: their sizes, and how each is measured on any backend.

A workload is measured against the small ``Runner`` interface (run many tasks of a kind, or
one at a time), so that the procedure, and therefore what is timed, is the same for every
backend; only ``backends`` knows how each tool runs a task. Pool start-up is never timed: the
runner starts and warms its workers before the first measurement.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from benchmarks.tasks import Tally

MIB = 1024 * 1024


class Runner(Protocol):
    """What a backend offers a workload (see ``backends.Runner`` for the implementations)."""

    slaves: int

    def many(self, kind: str, items: Sequence[Any]) -> Tally:
        """Run one task of ``kind`` ("noop", "echo", "spin") per item; tally the results."""

    def one(self, kind: str, item: Any) -> None:
        """Run a single task and wait for its result."""

    def queue_cost(self, count: int) -> dict[str, float]:
        """The master's time and memory for queuing ``count`` no-op commands (multi only)."""

    def million(self, count: int) -> dict[str, float]:
        """A run of ``count`` commands, each with its memo and result: time, memory (multi)."""


@dataclass(frozen=True)
class Workload:
    """A workload: what it measures, its unit, and its sizes in full and quick mode."""

    key: str
    title: str  # formatted with the parameters of the mode, e.g. "{count:,} no-op commands"
    short: str  # for the chart's panels
    metric: str  # what ``value`` is: lower is better for every workload
    unit: str
    full: dict[str, Any]
    quick: dict[str, Any]
    needs_spin_rate: bool = False
    notes: str = ""
    measure: Callable[[Runner, dict[str, Any]], dict[str, Any]] | None = field(
        default=None, compare=False, repr=False
    )

    def params(self, quick: bool) -> dict[str, Any]:
        return dict(self.quick if quick else self.full)

    def slaves(self, default: int) -> int:
        """The workers this workload runs on (those of its sizes, else ``default``)."""
        return int(self.full.get("slaves", default))

    def heading(self, params: dict[str, Any] | None) -> str:
        """The title with the sizes that were run."""
        try:
            return self.title.format(**(params or self.full))
        except (KeyError, ValueError):
            return self.title.format(**self.full)


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    outcome = call()
    return time.perf_counter() - start, outcome


def _check(tally: Tally, expected: int) -> None:
    if tally.count != expected:
        raise RuntimeError(f"expected {expected} results, got {tally.count}")


def measure_noop(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """Throughput of tiny commands: queue them all, wait for all (queuing is timed)."""
    seconds, tally = _timed(lambda: runner.many("noop", range(p["count"])))
    _check(tally, p["count"])
    return {"value": seconds, "rate": p["count"] / seconds}


def measure_latency(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """Round trip of one command at a time: median and 99th percentile, in microseconds."""
    samples = []
    for _ in range(p["count"]):
        seconds, _ = _timed(lambda: runner.one("noop", None))
        samples.append(seconds * 1e6)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return {"value": statistics.median(samples), "p99": p99}


def measure_arrays(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """Bulk data both ways: each command carries an array to its worker and brings it back."""
    _warm_for_arrays(runner)
    return _timed_arrays(runner, p)


def measure_arrays_after_tiny(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """Bulk data right after a run of tiny commands: what a scheduler learnt of the tiny ones
    must not shape the batches of the big ones.

    Timed in pairs in one process: the arrays after a run of arrays, then after a run of tiny
    commands. The slowdown is the median of each pair's ratio: set against the arrays cell,
    another process at another moment, it moved by 15 % either way between rounds on a quiet
    machine, more than the 10 % it is judged by."""
    _warm_for_arrays(runner)
    alone, after = [], []
    for _ in range(p["pairs"]):
        alone.append(_timed_arrays(runner, p)["value"])
        _check(runner.many("noop", range(p["tiny"])), p["tiny"])
        after.append(_timed_arrays(runner, p)["value"])
    seconds = statistics.median(after)
    return {
        "value": seconds,
        "mib_per_s": 2 * p["count"] * p["mib"] / seconds,
        "slowdown": statistics.median(b / a for a, b in zip(alone, after, strict=True)),
    }


def _timed_arrays(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    import numpy

    array = numpy.random.default_rng(6).random(p["mib"] * MIB // 8)
    seconds, tally = _timed(lambda: runner.many("echo", [array] * p["count"]))
    _check(tally, p["count"])
    if tally.nbytes != p["count"] * array.nbytes:
        raise RuntimeError(f"expected {p['count'] * array.nbytes} bytes back, got {tally.nbytes}")
    return {"value": seconds, "mib_per_s": 2 * p["count"] * p["mib"] / seconds}


def _warm_for_arrays(runner: Runner) -> None:
    """Have every worker import numpy before the arrays are timed, as a warm pool would have:
    a worker imports it as it receives its first array, 0.13 s here, which counted as much as
    the whole transfer of 200 arrays on two workers. (A few tiny arrays each: workers that
    take them as they come each get some.)"""
    import numpy

    warm = 4 * runner.slaves
    _check(runner.many("echo", [numpy.zeros(8)] * warm), warm)


def measure_balance(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """As many equal CPU-bound commands as slaves: the wall time against the ideal, the longest
    command's own time (as measured on its worker), which needs one command on every slave;
    two on one slave would read 0.5."""
    iterations = round(p["seconds"] * p["spin_rate"])
    seconds, tally = _timed(lambda: runner.many("spin", [iterations] * runner.slaves))
    _check(tally, runner.slaves)
    ideal = max(tally.seconds)
    return {"value": seconds, "ideal": ideal, "efficiency": ideal / seconds}


def measure_sleep(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """Commands that sleep on many slaves: the scheduler alone, not the CPU. The ideal is
    ceil(N / P) times a command's sleep."""
    seconds, tally = _timed(lambda: runner.many("nap", [p["seconds"]] * p["count"]))
    _check(tally, p["count"])
    ideal = math.ceil(p["count"] / runner.slaves) * p["seconds"]
    return {"value": seconds, "ideal": ideal, "efficiency": ideal / seconds}


def measure_cpu(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """Equal CPU-bound commands: the wall time, which the speed-up over uni is taken from."""
    iterations = round(p["seconds"] * p["spin_rate"])
    seconds, tally = _timed(lambda: runner.many("spin", [iterations] * p["count"]))
    _check(tally, p["count"])
    return {"value": seconds, "work": sum(tally.seconds)}


def uneven_iterations(p: dict[str, Any]) -> list[int]:
    """Exponentially distributed command lengths, the same for every backend (fixed seed)."""
    generator = random.Random(p["seed"])
    return [round(generator.expovariate(1 / p["mean"]) * p["spin_rate"]) for _ in range(p["count"])]


def measure_uneven(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """Unequal commands: the wall time against the ideal, total work / slaves.

    The work is what the commands measured on their workers, so the ideal follows the machine's
    speed during this very run.
    """
    seconds, tally = _timed(lambda: runner.many("spin", uneven_iterations(p)))
    _check(tally, p["count"])
    ideal = sum(tally.seconds) / runner.slaves
    return {"value": seconds, "ideal": ideal, "over_ideal": seconds / ideal}


def measure_master_cpu(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """The master's CPU time (its own process, every thread) over the wall time, in percent of
    a core, while the slaves run long CPU-bound commands."""
    iterations = round(p["seconds"] * p["spin_rate"])
    cpu_before = time.process_time()
    seconds, tally = _timed(lambda: runner.many("spin", [iterations] * p["count"]))
    cpu = time.process_time() - cpu_before
    _check(tally, p["count"])
    return {"value": 100 * cpu / seconds, "wall": seconds}


def measure_million(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """A run of many tiny commands written as applications write them (see Multi.million)."""
    figures = runner.million(p["count"])
    return {"value": figures["seconds"], **figures}


def measure_queue(runner: Runner, p: dict[str, Any]) -> dict[str, Any]:
    """The master's cost of queuing many commands: time, and memory per command."""
    cost = runner.queue_cost(p["count"])
    return {"value": cost["seconds"], **cost}


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "map",
        "{count:,} tiny calls through an executor's map",
        "map of tiny calls",
        "wall time of map over them all, values in order",
        "s",
        {"count": 100_000},
        {"count": 10_000},
        measure=measure_noop,
    ),
    Workload(
        "noop",
        "{count:,} no-op commands",
        "no-op commands",
        "wall time to queue and run them all",
        "s",
        {"count": 20_000},
        {"count": 2_000},
        measure=measure_noop,
    ),
    Workload(
        "latency",
        "Round trip of one command at a time ({count:,} in a row)",
        "round trip, one at a time",
        "median round trip (p99 beside it)",
        "µs",
        {"count": 2_000},
        {"count": 300},
        measure=measure_latency,
    ),
    Workload(
        "latency_wide",
        "Round trip of one command at a time on {slaves} slaves ({count:,} in a row)",
        "round trip on 16 slaves",
        "median round trip (p99 beside it)",
        "µs",
        {"slaves": 16, "count": 1_000},
        {"slaves": 16, "count": 200},
        notes="the same as the round trip on 2 slaves, but for the 14 slaves more that idle",
        measure=measure_latency,
    ),
    Workload(
        "arrays",
        "{count:,} commands carrying a {mib} MiB numpy array there and back",
        "1 MiB arrays there and back",
        "wall time",
        "s",
        {"count": 200, "mib": 1},
        {"count": 40, "mib": 1},
        measure=measure_arrays,
    ),
    Workload(
        "arrays_after_tiny",
        "{count:,} commands carrying a {mib} MiB numpy array there and back, after a run of "
        "{tiny:,} tiny commands, against the same after a run of arrays ({pairs} pairs)",
        "1 MiB arrays after tiny commands",
        "wall time of the arrays",
        "s",
        {"count": 200, "mib": 1, "tiny": 2_000, "pairs": 5},
        {"count": 40, "mib": 1, "tiny": 500, "pairs": 1},
        measure=measure_arrays_after_tiny,
    ),
    Workload(
        "balance",
        "{slaves} CPU-bound commands of about {seconds} s on {slaves} slaves",
        "as many commands as slaves",
        "wall time (efficiency beside it: the longest command's time / wall)",
        "s",
        {"slaves": 2, "seconds": 1.0},
        {"slaves": 2, "seconds": 0.3},
        needs_spin_rate=True,
        measure=measure_balance,
    ),
    Workload(
        "sleep",
        "{count} commands sleeping {seconds} s on {slaves} slaves",
        "sleeping commands on 16 slaves",
        "wall time (efficiency beside it: ceil(N/P) x sleep / wall)",
        "s",
        {"slaves": 16, "count": 40, "seconds": 0.2},
        {"slaves": 16, "count": 20, "seconds": 0.1},
        measure=measure_sleep,
    ),
    Workload(
        "cpu",
        "{count} CPU-bound commands of about {seconds} s",
        "equal CPU-bound commands",
        "wall time",
        "s",
        {"count": 64, "seconds": 0.05},
        {"count": 16, "seconds": 0.03},
        needs_spin_rate=True,
        measure=measure_cpu,
    ),
    Workload(
        "uneven",
        "{count} commands of exponentially distributed length (mean {mean} s, seed {seed})",
        "unequal CPU-bound commands",
        "wall time (the ideal, total work / slaves, beside it)",
        "s",
        {"count": 64, "mean": 0.05, "seed": 6},
        {"count": 16, "mean": 0.03, "seed": 6},
        needs_spin_rate=True,
        measure=measure_uneven,
    ),
    Workload(
        "example",
        "The example application (examples/relaxation.py, {residues} residues, "
        "{simulations} simulations)",
        "example application",
        "wall time of the whole program, start-up included",
        "s",
        {"residues": 60, "simulations": 100},
        {"residues": 4, "simulations": 10},
        notes="run as a program per fabric, so its time includes start-up and shutdown",
    ),
    Workload(
        "queue",
        "The master queuing {count:,} commands",
        "master queuing commands",
        "time for add_to_queue of every command (memory per command beside it)",
        "s",
        {"count": 100_000},
        {"count": 20_000},
        measure=measure_queue,
    ),
    Workload(
        "million",
        "A run of {count:,} commands, each with its own memo and a result run on the master",
        "a million commands",
        "run_queue wall time (its ratio to the application's time to create and queue them, "
        "the master's own CPU per command, and memory beside it)",
        "s",
        {"count": 1_000_000},
        {"count": 100_000},
        measure=measure_million,
    ),
    Workload(
        "master_cpu",
        "The master's CPU use while 2 slaves compute ({count} commands of about {seconds} s)",
        "master CPU while slaves compute",
        "master process CPU time / wall time",
        "% of a core",
        {"count": 4, "seconds": 1.0},
        {"count": 2, "seconds": 0.5},
        needs_spin_rate=True,
        measure=measure_master_cpu,
    ),
)

BY_KEY = {workload.key: workload for workload in WORKLOADS}
