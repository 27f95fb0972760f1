"""The state of one ``run_queue``: its commands, where each one is, what came back, what failed.

A command is known by its index in the run. It waits in one of four places before it is sent:
the fresh part of the queue (indices not sent yet, in order), the commands handed back by a
lost slave (sent again first, in batches), those that must travel alone (a command whose slave
died under it, the members of a batch that could not be rebuilt), and, for a command run on
every slave, the queue of its slave. Once sent it is in flight on one slave until a report
brings its outcome, which waits in its slot until every command before it has been delivered.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from multi.batching import Batch_sizer
from multi.errors import describe
from multi.slave import Report
from multi.statistics import Run_statistics


@dataclass(slots=True)
class Sent:
    """A batch in flight: the indices of its commands, when it left, whether its round trip
    tells the scheduler anything, whether it restores a new slave's data rather than
    running commands of the run, and whether it left before any command of the run had
    finished (``blind``: one command, sized on nothing)."""

    indices: Sequence[int]
    sent_at: float
    timed: bool  # its slave had answered before, and held nothing else when it was sent
    setup: bool = False
    blind: bool = False


class Run:
    """Everything one ``run_queue`` knows; the scheduler keeps nothing of a finished run."""

    __slots__ = ("_rank_of", "alone", "attempts", "closed", "commands", "count", "delivered",
                 "failed_first", "failures", "fresh", "in_flight", "in_order", "left_output",
                 "memo_ids", "on_error", "on_failure", "outcomes", "pinned", "positions",
                 "ready", "returned", "settled", "sizer", "source", "started", "statistics",
                 "stopped", "succeeded", "unrun")  # fmt: skip

    def __init__(
        self,
        commands: list[Any],
        memo_ids: list[int | None],
        ranks: Sequence[int],
        sizer: Batch_sizer,
        pinned: Sequence[int] | None = None,
        in_order: bool = True,
    ) -> None:
        count = len(commands)
        self.commands = commands
        self.memo_ids = memo_ids
        self.count = count
        #: Indices from here to the end have never been sent (commands pinned to a rank aside).
        self.fresh = count if pinned is not None else 0
        # (made on first use: most runs never need them, and a deque costs about four times
        # as much to make as an empty list)
        self.returned: deque[int] | tuple[()] = ()
        self.alone: deque[int] | tuple[()] = ()
        self.pinned: dict[int, deque[int]] = {}  # the commands that must run on a given slave
        self._rank_of = pinned  # the slave each command must run on, if any
        if pinned is not None:
            for index, rank in enumerate(pinned):
                self.pinned.setdefault(rank, deque()).append(index)
        self.attempts: dict[int, int] = {}
        #: What commands wrote before their slave died under them: (rank, chunks) per attempt.
        self.left_output: dict[int, list[tuple[int, list[tuple[int, str]]]]] = {}
        #: The batches each live slave holds, oldest first: one or two, so a list serves (a
        #: deque per slave costs 2.5 times as much to make, at every run).
        self.in_flight: dict[int, list[Sent]] = {}
        for rank in ranks:  # (a comprehension is a call of its own)
            self.in_flight[rank] = []
        #: A finished command's report (or the exception that ended it) and its place there.
        self.outcomes: list[Report | BaseException | None] = [None] * count
        self.positions: list[int] = [0] * count
        self.delivered = 0
        #: Whether outcomes are delivered in queue order (else as they come), and, if not,
        #: the finished commands waiting for delivery and a mark for each delivered command.
        self.in_order = in_order
        self.ready: list[int] = []
        self.settled = bytearray(0 if in_order else count)
        #: Where an open run gets more commands while it goes on (see ``extend``): called with
        #: the run and how many it could take; False once nothing more will come (``closed``).
        self.source: Callable[[Run, int], bool] | None = None
        self.closed = False
        #: Who is told of each failure as it is delivered; with one, the run raises none.
        self.on_error: Callable[[int, BaseException], None] | None = None
        #: The failure policy of this run, where it is not the scheduler's.
        self.on_failure: str | None = None
        #: Commands passed over at the end because they never ran, in queue order.
        self.unrun: list[int] = []
        self.failures: list[tuple[int, BaseException]] = []
        self.succeeded = 0  # commands that finished without failing
        #: Commands that failed before any succeeded, in the order they finished (a batch's
        #: commands finish in its order): the early stop of the failure policy counts them.
        self.failed_first = 0
        #: Why dispatch stopped before the queue was empty, or None.
        self.stopped: str | None = None
        self.started = time.perf_counter()
        #: What the run has learnt of its commands, for the size of its batches.
        self.sizer = sizer
        self.statistics = Run_statistics(set(ranks))

    # The queue ---------------------------------------------------------------------------

    def extend(self, commands: list[Any], memo_ids: list[int | None]) -> None:
        """Add commands at the end of an open run's queue."""
        added = len(commands)
        self.commands += commands
        self.memo_ids += memo_ids
        self.count += added
        self.outcomes += [None] * added
        self.positions += [0] * added
        if not self.in_order:
            self.settled += bytes(added)

    def named(self, index: int, noun: bool = False) -> str:
        """Words that name the command at ``index`` in a message, led by "command" with
        ``noun``; an open run's commands (an executor's calls) name themselves, as their
        place in the run means nothing to the program."""
        text = describe(self.commands[index])
        if self.source is not None:
            return text
        return f"{'command ' if noun else ''}{text}{self.place(index)}"

    def place(self, index: int) -> str:
        """Words that say where the command at ``index`` stands in the run, after its name;
        none for an open run's."""
        return "" if self.source is not None else f" (command {index} of the run)"

    def undelivered(self) -> list[int]:
        """The commands whose outcome was never delivered, in queue order."""
        if self.in_order:
            return [*self.unrun, *range(self.delivered, self.count)]
        return [index for index in range(self.count) if not self.settled[index]]

    def waiting(self) -> int:
        """Commands not sent yet, pinned ones aside."""
        return self.count - self.fresh + len(self.returned) + len(self.alone)

    def take(self, rank: int, size: int) -> Sequence[int]:
        """Up to ``size`` commands for a slave to run next: its pinned ones (one at a time),
        then one that must travel alone, then those handed back, then fresh ones."""
        pinned = self.pinned.get(rank)
        if pinned:
            index = pinned.popleft()
            if not pinned:  # (an empty queue left there would keep dispatch looking)
                del self.pinned[rank]
            return [index]
        alone, returned = self.alone, self.returned
        if alone:
            return [alone.popleft()]
        if returned:
            return [returned.popleft() for _ in range(min(size, len(returned)))]
        start = self.fresh
        end = min(start + size, self.count)
        self.fresh = end
        return range(start, end)

    def again(self, indices: Sequence[int], alone: bool = False) -> None:
        """Commands a lost slave held, to be sent again first: to their own slave if they are
        pinned to one (it is replaced), else to any, in batches or, with ``alone``, one by one."""
        if self._rank_of is not None:
            for index in reversed(indices):
                self.pinned.setdefault(self._rank_of[index], deque()).appendleft(index)
        elif alone:
            self.alone = _in_front(self.alone, indices)
        else:
            self.returned = _in_front(self.returned, indices)

    def put_back(self, indices: Sequence[int]) -> None:
        """Return commands that were taken but not sent, to the front of where they came from."""
        if isinstance(indices, range) and indices.stop == self.fresh:
            self.fresh = indices.start
        else:
            self.returned = _in_front(self.returned, indices)

    def in_flight_indices(self, rank: int) -> list[int]:
        return [i for sent in self.in_flight.get(rank, ()) if not sent.setup for i in sent.indices]

    def busy(self) -> bool:
        return any(self.in_flight.values())

    # Outcomes ----------------------------------------------------------------------------

    def finish(self, indices: Sequence[int], report: Report, count: int) -> None:
        """Note the report of the first ``count`` commands of a batch."""
        outcomes, positions = self.outcomes, self.positions
        if count == 1:  # (a round trip of one command: a slice costs a list and a range)
            outcomes[indices[0]] = report
            positions[indices[0]] = 0
        elif type(indices) is range and indices.step == 1:  # the usual batch: a stretch at once
            start = indices.start
            outcomes[start : start + count] = [report] * count
            positions[start : start + count] = range(count)
        else:
            for position in range(count):
                index = indices[position]
                outcomes[index] = report
                positions[index] = position
        if not self.in_order:
            self.ready += indices[:count]
        failures = report.failures
        if not failures:
            self.succeeded += count
            return
        if not self.succeeded:
            first = 0
            while first < count and first in failures:
                first += 1
            self.failed_first += first
        self.succeeded += count - len(failures)

    def fail(self, index: int, error: BaseException) -> None:
        """Note that a command ended in ``error`` without a report (decided on the master)."""
        self.outcomes[index] = error
        if not self.succeeded:
            self.failed_first += 1
        if not self.in_order:
            self.ready.append(index)


def _in_front(queue: deque[int] | tuple[()], indices: Sequence[int]) -> deque[int]:
    """``queue`` with ``indices`` in front of it, in their order (a deque from then on)."""
    if not queue:
        return deque(indices)
    queue.extendleft(reversed(indices))
    return queue
