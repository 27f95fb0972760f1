"""The targets that the fabric issues set in their "Performance" sections, checked against the
medians of a run, each against peers measured in the same run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Medians of a run: (workload, backend) -> metric -> value ("value" is the headline figure).
Medians = dict[tuple[str, str], dict[str, float]]

MP, MPI, MT = "multi-multiprocessing", "multi-mpi4py", "multi-thread"
EXECUTOR = "multi-executor"


@dataclass(frozen=True)
class Verdict:
    figure: str  # the measured figure, e.g. "3.4×"
    status: str  # "met", "not met", or "not measured: <why>"


@dataclass(frozen=True)
class Goal:
    backend: str  # the fabric, as a backend name
    workload: str
    text: str
    check: Callable[[Medians], Verdict]


def _value(medians: Medians, workload: str, backend: str, metric: str = "value") -> float:
    try:
        return medians[(workload, backend)][metric]
    except KeyError:
        raise LookupError(f"no {workload} figure for {backend}") from None


def _judged(figure: float, met: bool, unit: str) -> Verdict:
    return Verdict(f"{figure:.2f}{unit}", "met" if met else "not met")


def _goal(
    figure_of: Callable[[Medians], float], passes: Callable[[float], bool], unit: str
) -> Callable[[Medians], Verdict]:
    """A check: the figure from the medians, judged by ``passes``; "not measured" if missing."""

    def check(medians: Medians) -> Verdict:
        try:
            figure = figure_of(medians)
        except LookupError as exc:
            return Verdict("—", f"not measured: {exc}")
        return _judged(figure, passes(figure), unit)

    return check


def ratio_at_least(
    workload: str, slow: str, fast: str, target: float
) -> Callable[[Medians], Verdict]:
    """``slow``'s time over ``fast``'s time (how many times faster ``fast`` is) >= target."""
    return _goal(
        lambda m: _value(m, workload, slow) / _value(m, workload, fast),
        lambda figure: figure >= target,
        "×",
    )


def ratio_at_most(
    workload: str, backend: str, reference: str, target: float, strict: bool = False
) -> Callable[[Medians], Verdict]:
    """``backend``'s figure over ``reference``'s <= target (< with ``strict``)."""
    return _goal(
        lambda m: _value(m, workload, backend) / _value(m, workload, reference),
        lambda figure: figure < target if strict else figure <= target,
        "×",
    )


def metric_at_least(
    workload: str, backend: str, metric: str, target: float
) -> Callable[[Medians], Verdict]:
    """A metric at least ``target``."""
    return _goal(lambda m: _value(m, workload, backend, metric), lambda f: f >= target, "")


def metric_within(
    workload: str, backend: str, metric: str, target: float, unit: str, strict: bool
) -> Callable[[Medians], Verdict]:
    """A metric at most ``target`` (below it if ``strict``)."""
    return _goal(
        lambda m: _value(m, workload, backend, metric),
        lambda figure: figure < target if strict else figure <= target,
        unit,
    )


def same_fabric_at_most(
    workload: str, backend: str, reference_workload: str, target: float
) -> Callable[[Medians], Verdict]:
    """``backend``'s figure on ``workload`` over its own on ``reference_workload`` <= target."""
    return _goal(
        lambda m: _value(m, workload, backend) / _value(m, reference_workload, backend),
        lambda figure: figure <= target,
        "×",
    )


GOALS: tuple[Goal, ...] = (
    Goal(MP, "noop", "no-op rate ≥ 4× multiprocessing.Pool.imap(chunksize=1)",
         ratio_at_least("noop", "pool-1", MP, 4.0)),
    Goal(EXECUTOR, "map", "Executor.map rate ≥ ProcessPoolExecutor.map(chunksize=len/4·workers)",
         ratio_at_least("map", "ppe-chunked", EXECUTOR, 1.0)),
    Goal(EXECUTOR, "map", "Executor.map time ≤ 2× chunked multiprocessing.Pool.imap",
         ratio_at_most("map", EXECUTOR, "pool-chunked", 2.0)),
    Goal(MP, "million", "a million commands: run_queue ≤ 1.5× the application's time to "
         "create and queue them",
         metric_within("million", MP, "ratio", 1.5, "×", strict=False)),
    Goal(MP, "million", "a million commands: the master's own cost ≤ 2 µs per command",
         metric_within("million", MP, "master_us_per_command", 2.0, " µs", strict=False)),
    Goal(MP, "million", "a million commands: peak during the run ≤ 1.6× what was queued",
         metric_within("million", MP, "peak_over_queued", 1.6, "×", strict=False)),
    Goal("multi-uni", "latency", "a single-command run_queue on uni ≤ 10 µs",
         metric_within("latency", "multi-uni", "value", 10.0, " µs", strict=False)),
    Goal(MP, "latency", "round trip ≤ 1.5× a raw multiprocessing.Pipe ping-pong",
         ratio_at_most("latency", MP, "raw-pipe", 1.5)),
    Goal(MP, "latency_wide", "round trip on 16 slaves ≤ 1.25× on 2",
         same_fabric_at_most("latency_wide", MP, "latency", 1.25)),
    Goal(MT, "latency_wide", "round trip on 16 slaves ≤ 1.25× on 2",
         same_fabric_at_most("latency_wide", MT, "latency", 1.25)),
    Goal(MP, "arrays", "1 MiB arrays both ways ≥ 3× multiprocessing.Pool's rate",
         ratio_at_least("arrays", "pool-1", MP, 3.0)),
    Goal(MP, "cpu", "CPU-bound speed-up over uni ≥ 1.9",
         ratio_at_least("cpu", "multi-uni", MP, 1.9)),
    Goal(MP, "uneven", "unequal commands within 10 % of the ideal (wall / ideal ≤ 1.10)",
         metric_within("uneven", MP, "over_ideal", 1.10, "×", strict=False)),
    Goal(MP, "master_cpu", "master < 5 % of a core while slaves compute",
         metric_within("master_cpu", MP, "value", 5.0, " %", strict=True)),
    Goal(EXECUTOR, "master_cpu", "the Executor's master < 5 % of a core while calls compute",
         metric_within("master_cpu", EXECUTOR, "value", 5.0, " %", strict=True)),
    Goal(MP, "balance", "as many equal commands as slaves: efficiency ≥ 0.9",
         metric_at_least("balance", MP, "efficiency", 0.9)),
    Goal(MP, "sleep", "sleeping commands on 16 slaves: efficiency ≥ 0.9",
         metric_at_least("sleep", MP, "efficiency", 0.9)),
    Goal(MT, "sleep", "sleeping commands on 16 slaves: efficiency ≥ 0.9",
         metric_at_least("sleep", MT, "efficiency", 0.9)),
    Goal(MP, "arrays_after_tiny", "1 MiB arrays after tiny commands as fast as without "
         "(time ≤ 1.1× after arrays, paired in one process)",
         metric_within("arrays_after_tiny", MP, "slowdown", 1.1, "×", strict=False)),
    Goal(MPI, "noop", "no-op rate ≥ 40× mpi4py.futures.MPIPoolExecutor",
         ratio_at_least("noop", "mpi4py-futures", MPI, 40.0)),
    Goal(MPI, "latency", "round trip ≤ 8× a raw mpi4py ping-pong",
         ratio_at_most("latency", MPI, "raw-mpi-pingpong", 8.0)),
    Goal(MPI, "latency_wide", "round trip on 16 slaves ≤ 1.25× on 2",
         same_fabric_at_most("latency_wide", MPI, "latency", 1.25)),
    Goal(MPI, "master_cpu", "master < 5 % of a core during long commands",
         metric_within("master_cpu", MPI, "value", 5.0, " %", strict=True)),
    Goal(MPI, "arrays", "1 MiB arrays ≥ 2× a raw pickled comm.send loop",
         ratio_at_least("arrays", "raw-mpi-send", MPI, 2.0)),
    Goal(MPI, "cpu", "CPU-bound speed-up over uni ≥ 1.9",
         ratio_at_least("cpu", "multi-uni", MPI, 1.9)),
    Goal(MPI, "balance", "as many equal commands as slaves: efficiency ≥ 0.9",
         metric_at_least("balance", MPI, "efficiency", 0.9)),
    Goal(MPI, "sleep", "sleeping commands on 16 slaves: efficiency ≥ 0.9",
         metric_at_least("sleep", MPI, "efficiency", 0.9)),
    Goal(MPI, "arrays_after_tiny", "1 MiB arrays after tiny commands as fast as without "
         "(time ≤ 1.1× after arrays, paired in one process)",
         metric_within("arrays_after_tiny", MPI, "slowdown", 1.1, "×", strict=False)),
)  # fmt: skip
