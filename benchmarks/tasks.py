"""What the workers run: the same work for every backend, as functions and as multi commands.

Workers in other processes import this module, so it holds nothing but the work itself. The
CPU-bound work is a fixed number of loop iterations (calibrated once by the harness), not a
wall-clock spin, so that every backend does exactly the same work and a slave that shares its
core with the master takes longer, as it should.
"""

from __future__ import annotations

import time
from typing import Any

from multi import Memo, Result_command, Slave_command


def noop(_: Any = None) -> None:
    """The tiny command: nothing to do, nothing to return."""


def echo(payload: Any) -> Any:
    """Carry ``payload`` to the worker and back."""
    return payload


def spin(iterations: int) -> int:
    """Burn the CPU for ``iterations`` loop turns (pure Python, holds the GIL)."""
    total = 0
    for i in range(iterations):
        total += i & 7
    return total


def timed_spin(iterations: int) -> float:
    """Spin, and return how long it took on the worker (for the ideal of unequal work)."""
    start = time.perf_counter()
    spin(iterations)
    return time.perf_counter() - start


def nap(seconds: float) -> None:
    """Sleep: used to warm pools up so that every worker has started before timing."""
    time.sleep(seconds)


# The same work as multi commands -------------------------------------------------------------


class Tally(Memo):
    """Master-side counters that the results add to."""

    def __init__(self) -> None:
        self.count = 0
        self.nbytes = 0
        self.seconds: list[float] = []


class Share(Memo):
    """A command's own memo, as applications give each command one: it points at the tally
    that every result of the run adds to."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally


class Echo_result(Result_command):
    """Brings a payload back; on the master, counts it."""

    def __init__(self, processor: Any, payload: Any) -> None:
        super().__init__(processor=processor, completed=True)
        self.payload = payload

    def run(self, processor: Any, memo: Share | None) -> None:
        if memo is not None:
            memo.tally.count += 1
            memo.tally.nbytes += getattr(self.payload, "nbytes", 0)


class Seconds_result(Result_command):
    """Brings back how long a command worked on its slave."""

    def __init__(self, processor: Any, seconds: float) -> None:
        super().__init__(processor=processor, completed=True)
        self.seconds = seconds

    def run(self, processor: Any, memo: Share | None) -> None:
        if memo is not None:
            memo.tally.count += 1
            memo.tally.seconds.append(self.seconds)


class Done_result(Result_command):
    """Says a command is done (the counterpart of a pool's ``None``); the master counts it."""

    def run(self, processor: Any, memo: Share | None) -> None:
        if memo is not None:
            memo.tally.count += 1


class Noop_command(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Done_result(processor))


class Nap_command(Slave_command):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def run(self, processor: Any, completed: bool) -> None:
        nap(self.seconds)
        processor.return_object(Done_result(processor))


class Echo_command(Slave_command):
    def __init__(self, payload: Any) -> None:
        super().__init__()
        self.payload = payload

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Echo_result(processor, self.payload))


class Spin_command(Slave_command):
    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations = iterations

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Seconds_result(processor, timed_spin(self.iterations)))
