"""A scripted transport in virtual time, to test the scheduler alone: no process, no thread,
no sleep, the same outcome on every machine.

Each slave runs the batches it is sent one after the other, in the order sent; a batch takes
half a round trip to reach its slave and half to come back. What each command does is read
from a ``Script``: how long it takes, whether it fails, whether its slave dies under it (on its
first few attempts) or it never ends. ``receive`` moves the clock to the next event. At every
``receive`` the transport checks the scheduler's promises about who holds what (see
``check_breadth_first``), so that every test and every generated case checks them.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from multi import wire
from multi.errors import Failure, UnpicklableError
from multi.slave import SETUP_ID, Report, batch_from_wire
from multi.transport import Message, Payload, Slave_ended, Slave_lost, Transport


@dataclass
class Script:
    """What each command of a run does, by index."""

    seconds: Sequence[float]
    fails: set[int] = field(default_factory=set)
    deaths: dict[int, int] = field(default_factory=dict)  # index -> attempts its slave dies on
    hangs: set[int] = field(default_factory=set)
    frozen: set[int] = field(default_factory=set)  # never end, and their slave stops beating
    unreadable: set[int] = field(default_factory=set)  # their batch cannot be rebuilt
    #: Commands whose slave dies as their batch arrives, outside any command, having written
    #: (a thread of an earlier command, as descriptors point into the capture files still).
    dies_before: set[int] = field(default_factory=set)
    #: Commands whose unpickling kills their slave, every time their batch arrives.
    kills_unpickling: set[int] = field(default_factory=set)
    #: Commands whose slave dies once, as the report of their batch has just left (it shows
    #: that it returns that batch's results still).
    dies_after_report: set[int] = field(default_factory=set)
    round_trip: float = 5e-4
    start_seconds: float = 0.05  # for a replacement to start
    dies_on_start: int = 0  # replacements that die as they start, before running anything
    bytes_per_command: int = 100

    def __len__(self) -> int:
        return len(self.seconds)

    def long(self) -> bool:
        """Whether every command is long next to the round trip (no second batch is due)."""
        return all(seconds >= 100 * self.round_trip for seconds in self.seconds)


class Clock:
    """Virtual time: what the scheduler reads as ``time.perf_counter`` and ``time.monotonic``."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class Fake_command:
    """Stands for a command of the run: the script says what it does."""

    def __init__(self, index: int, payload: bytes = b"") -> None:
        self.index = index
        self.payload = payload

    def __repr__(self) -> str:
        return f"Fake_command({self.index})"


@dataclass
class _Slave:
    incarnation: int
    free_at: float  # when it has run every batch it was sent
    ready_at: float  # when it has started
    held: int = 0  # batches sent whose report (or loss) has not been received
    #: Each command it ran or will run: start, end, task, and whether it waited behind others.
    runs: list[tuple[float, float, int, bool]] = field(default_factory=list)
    dead_at: float = math.inf
    silent_from: float = math.inf  # when it stopped beating


class Fake_transport(Transport):
    """Slaves in virtual time, running what the script says."""

    def __init__(
        self,
        script: Script,
        slaves: int,
        clock: Clock,
        replaceable: bool = True,
        window: int = 2,
        pickled: bool = False,
        largest_message: int | None = None,
    ) -> None:
        self.script = script
        self.largest_message = largest_message
        self.clock = clock
        self.replaceable = replaceable
        self.window = window
        self.pickled = pickled
        self.heartbeats = True
        self.attempts: Counter[int] = Counter()
        self.sent: list[tuple[float, int, list[int]]] = []  # when, to whom, which commands
        self.replaced: list[int] = []
        self.ended: list[int] = []
        self.unpickled: list[list[int]] = []  # the batches whose unpickling killed their slave
        self.run: Any = None  # the Run, for the checks of check_breadth_first
        self._incarnations = itertools.count()
        self._slaves = {rank: self._new_slave(0.0) for rank in range(1, slaves + 1)}
        self._events: list[tuple[float, int, int, int, Message]] = []
        self._order = itertools.count()
        self._start_deaths = 0
        self._idle_waits = 0

    def _new_slave(self, ready_at: float) -> _Slave:
        return _Slave(next(self._incarnations), ready_at, ready_at)

    @property
    def ranks(self) -> list[int]:
        return sorted(self._slaves)

    def send(self, rank: int, payload: Payload) -> None:
        if self.pickled:
            if self.largest_message is not None:  # (a promise of the engine)
                assert wire.size(payload) <= self.largest_message  # type: ignore[arg-type]
            self.traffic[rank, "sent"] += wire.size(payload)  # type: ignore[arg-type]
            payload = batch_from_wire(wire.loads(payload))
        ids, _ = payload  # type: ignore[misc]
        slave = self._slaves[rank]
        slave.held += 1
        now = self.clock.now
        self.sent.append((now, rank, list(ids)))
        arrival = now + self.script.round_trip / 2
        start = max(arrival, slave.free_at)
        if start >= slave.dead_at:
            return  # the slave died before it got there: its loss covers this batch
        if ids[0] in self.script.dies_before and not self.attempts[ids[0]]:
            self.script.dies_before.discard(ids[0])
            slave.dead_at = slave.free_at = start
            output = [(1, f"written before command {ids[0]}\n")]
            self._post(start, rank, slave, Slave_lost(rank, "(fake) exited", None, True, output))
            return
        if any(task in self.script.kills_unpickling for task in ids):
            slave.dead_at = slave.free_at = start
            self.unpickled.append(list(ids))
            lost = Slave_lost(rank, "(fake) exited with status 3", stage="unpickling")
            self._post(start + self.script.round_trip / 2, rank, slave, lost)  # (after its report)
            return
        if any(task in self.script.unreadable for task in ids):
            failure = Failure(UnpicklableError("cannot rebuild"), "While receiving")
            unreadable = Report(rank, [], 0, [], unreadable=failure)
            slave.free_at = start
            self._post(start + self.script.round_trip / 2, rank, slave, unreadable)
            return
        results: list[Any] = []
        seconds: list[float] = []
        failures: dict[int, Failure | BaseException] = {}
        clock = start
        for position, task in enumerate(ids):
            if task == SETUP_ID:
                seconds.append(0.0)
                continue
            self.attempts[task] += 1
            queued = clock > max(arrival, slave.ready_at)  # behind another command
            if task in self.script.hangs or task in self.script.frozen:
                slave.runs.append((clock, math.inf, task, queued))
                slave.dead_at = slave.free_at = math.inf
                if task in self.script.frozen:
                    slave.silent_from = clock
                return
            length = self.script.seconds[task]
            if self.attempts[task] <= self.script.deaths.get(task, 0):
                slave.runs.append((clock, clock + length / 2, task, queued))
                slave.dead_at = slave.free_at = clock + length / 2
                lost = Slave_lost(rank, "(fake) was killed by signal 9 (SIGKILL)", task)
                self._post(slave.dead_at, rank, slave, lost)
                return
            slave.runs.append((clock, clock + length, task, queued))
            clock += length
            seconds.append(length)
            if task in self.script.fails:
                failures[position] = ValueError(f"command {task} fails")
            else:
                results.append(("result", task))
        slave.free_at = clock
        counts = 0 if any(task == SETUP_ID for task in ids) else 1
        if failures:
            counts = [0 if p in failures else 1 for p in range(len(ids))]
        report = Report(rank, results, counts, seconds, failures=failures or None)
        self._post(clock + self.script.round_trip / 2, rank, slave, report)
        after = self.script.dies_after_report & set(ids)
        if after:
            self.script.dies_after_report -= after
            slave.dead_at = slave.free_at = clock
            stage = "returning the results of"
            lost = Slave_lost(rank, "(fake) was killed", stage=stage, stage_of=ids[0])
            self._post(clock + self.script.round_trip / 2, rank, slave, lost)  # (after it)

    def _post(self, when: float, rank: int, slave: _Slave, message: Message) -> None:
        heapq.heappush(self._events, (when, next(self._order), rank, slave.incarnation, message))

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        self.check_breadth_first()
        self._idle_waits = self._idle_waits + 1 if not timeout and not self._events else 0
        assert self._idle_waits < 1000, "the scheduler spins: it waits for nothing, again"
        while self._events:
            when, _, rank, incarnation, message = self._events[0]
            if timeout is not None and when > self.clock.now + timeout:
                break
            heapq.heappop(self._events)
            slave = self._slaves.get(rank)
            if slave is None or slave.incarnation != incarnation:
                continue  # from a slave that was stopped since
            self.clock.now = max(self.clock.now, when)
            if isinstance(message, Slave_lost):
                del self._slaves[rank]
            else:
                slave.held -= 1
            return rank, message
        if timeout is None:
            raise AssertionError("the scheduler waits for a message that will never come")
        self.clock.now += timeout
        return None

    def running(self, rank: int) -> tuple[int, float] | None:
        slave = self._slaves.get(rank)
        if slave is None:
            return None
        now = self.clock.now
        for start, end, task, _ in slave.runs:
            if start <= now < end:
                return task, start
        return None

    def silent_for(self, rank: int) -> float | None:
        slave = self._slaves.get(rank)
        if slave is None:
            return None
        return max(0.0, self.clock.now - slave.silent_from)

    def end_slave(self, rank: int) -> Slave_ended:
        self.ended.append(rank)
        del self._slaves[rank]
        return Slave_ended("(fake)")

    def replace(self, rank: int) -> None:
        assert rank not in self._slaves, f"slave {rank} replaced while it lives"
        self.replaced.append(rank)
        slave = self._slaves[rank] = self._new_slave(self.clock.now + self.script.start_seconds)
        if self._start_deaths < self.script.dies_on_start:
            self._start_deaths += 1
            slave.dead_at = slave.free_at
            self._post(
                slave.dead_at,
                rank,
                slave,
                Slave_lost(rank, "(fake) exited with status 1", idle=True),
            )

    def stop(self, timeout: float, status: int = 0) -> None:
        self._slaves.clear()

    # The scheduler's promises ------------------------------------------------------------

    def check_breadth_first(self) -> None:
        """Whenever the scheduler waits: a slave that holds nothing means nothing waits to be
        sent; and for commands long next to the round trip, no slave holds a command that has
        not started while another slave holds nothing."""
        run = self.run
        if run is None or run.stopped is not None:
            return
        idle = [rank for rank, slave in self._slaves.items() if slave.held == 0]
        if not idle:
            return
        assert run.waiting() == 0, f"slaves {idle} idle while {run.waiting()} commands wait"
        if self.script.long():
            now = self.clock.now
            for rank, slave in self._slaves.items():
                waiting = [task for start, _, task, queued in slave.runs if queued and start > now]
                assert not waiting, (
                    f"slave {rank} holds commands {waiting} that have not started "
                    f"while slaves {idle} hold nothing"
                )
