"""The master's dispatch loop, shared by every fabric.

::

    run_queue ──> tasks ──> Scheduler.run ──send(batch)──> transport ──> slaves
                                 ^                                          │
                                 └───────receive(outcomes | Slave_lost)─────┘
                                 │
                       deliver(task, outcome), in queue order, on the master's thread

Scheduling is dynamic: each slave holds ``transport.window`` batches, and gets the next as soon
as it hands one back. Batches grow from one command to as many as run in about
``TARGET_BATCH_SECONDS``, measured on the slaves, so tiny commands do not pay a message each;
they shrink near the end of the queue so that the last ones spread over every slave.

A failed command stops the dispatch; the commands in flight finish and everything that
finished is delivered before the first failure, in queue order, is raised. A lost slave's
commands go back to the queue: the one it was running counts an attempt, and fails for good
after ``retries`` more.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from multi import wire
from multi.errors import SlaveDiedError, UnpicklableError, add_note, describe
from multi.slave import UNREADABLE, Outcome
from multi.statistics import Run_statistics, Slave_statistics
from multi.transport import Slave_lost, Transport

TARGET_BATCH_SECONDS = 0.01
MAX_BATCH = 4096


@dataclass(slots=True, eq=False)
class Task:
    """A queued command as the scheduler tracks it; only ``(id, command)`` travels."""

    id: int
    command: Any
    memo_id: int | None = None
    rank: int | None = None  # a slave it must run on, or None for any
    attempts: int = 0
    outcome: Outcome | None = None
    delivered: bool = False


class Scheduler:
    """Runs the tasks of one ``run_queue`` on a transport's slaves."""

    def __init__(
        self,
        transport: Transport,
        deliver: Callable[[Task, Outcome], None],
        retries: int,
    ) -> None:
        self.transport = transport
        self.deliver = deliver
        self.retries = retries
        self.statistics = Run_statistics()
        self.drained = False
        self._mean_seconds: float | None = None

    def run(self, tasks: Sequence[Task]) -> None:
        """Run every task and deliver its outcome; raise the first failure at the end.

        The estimate of a command's time carries over from one run to the next.
        """
        start = time.perf_counter()
        ranks = self.transport.ranks
        self._tasks = tasks
        self._queue: deque[Task] = deque(task for task in tasks if task.rank is None)
        self._pinned: dict[int, deque[Task]] = {rank: deque() for rank in ranks}
        self._in_flight: dict[int, deque[list[Task]]] = {rank: deque() for rank in ranks}
        self.statistics = Run_statistics({rank: Slave_statistics() for rank in ranks})
        moved = dict(self.transport.traffic)
        for task in tasks:
            if task.rank is not None:
                self._pinned[task.rank].append(task)
        self._next = 0
        self._errors: list[tuple[int, BaseException]] = []
        self._stopping = False
        self.drained = False
        try:
            self._dispatch()
            while any(self._in_flight.values()):
                rank, message = self.transport.receive()
                if isinstance(message, Slave_lost):
                    self._on_lost(rank, message)
                else:
                    self._on_outcomes(rank, message)
                self._deliver_ready()
                self._dispatch()
            self._deliver_ready(everything=True)
            self.drained = True
        finally:
            self.statistics.seconds = time.perf_counter() - start
            traffic = self.transport.traffic
            for rank, slave in self.statistics.slaves.items():
                slave.bytes_sent = traffic[rank, "sent"] - moved.get((rank, "sent"), 0)
                slave.bytes_received = traffic[rank, "received"] - moved.get((rank, "received"), 0)
        if self._errors:
            self._raise_first()

    # Dispatch ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        window = self.transport.window
        for rank, batches in self._in_flight.items():
            pinned = self._pinned[rank]
            while len(batches) < window and (pinned or self._queue) and not self._stopping:
                if pinned:
                    batch = [pinned.popleft()]
                else:
                    size = min(self._batch_size(), len(self._queue))
                    batch = [self._queue.popleft() for _ in range(size)]
                batch = self._send(rank, batch)
                if batch:
                    batches.append(batch)

    def _send(self, rank: int, batch: list[Task]) -> list[Task]:
        """Send a batch; a command that does not pickle fails, and the others go without it."""
        try:
            self.transport.send(rank, [(task.id, task.command) for task in batch])
            return batch
        except UnpicklableError:
            pass
        sendable = []
        for task in batch:
            if wire.find_unpicklable(task.command) is None:
                sendable.append(task)
                continue
            what = f"command {describe(task.command)} (command {task.id} of the run)"
            error = wire.unpicklable_error(what, task.command, wire.COMMAND_ADVICE)
            task.outcome = Outcome(task.id, rank, failure=error)
            self._stopping = True
        if sendable:
            self.transport.send(rank, [(task.id, task.command) for task in sendable])
        return sendable

    def _batch_size(self) -> int:
        if not self.transport.batching or self._mean_seconds is None:
            return 1
        wanted = int(TARGET_BATCH_SECONDS / max(self._mean_seconds, 1e-7))
        spread = len(self._queue) // (2 * len(self._in_flight))
        return max(1, min(wanted, spread, MAX_BATCH))

    # Receipt -------------------------------------------------------------------------------

    def _on_outcomes(self, rank: int, outcomes: list[Outcome]) -> None:
        batch = self._in_flight[rank].popleft()
        if outcomes and outcomes[0].task_id == UNREADABLE:  # the slave could not rebuild it
            outcomes = [replace(outcomes[0], task_id=task.id) for task in batch]
        slave = self.statistics.slaves[rank]
        slave.batches += 1
        for task, outcome in zip(batch, outcomes, strict=True):
            if outcome.task_id != task.id:
                raise RuntimeError(f"slave {rank} answered command {outcome.task_id} for {task.id}")
            task.outcome = outcome
            slave.commands += 1
            slave.busy_seconds += outcome.seconds
            if outcome.failure is not None:
                self._stopping = True
        seconds = sum(outcome.seconds for outcome in outcomes) / max(len(outcomes), 1)
        mean = self._mean_seconds
        self._mean_seconds = seconds if mean is None else 0.7 * mean + 0.3 * seconds

    def _on_lost(self, rank: int, lost: Slave_lost) -> None:
        self.statistics.slaves[rank].lost += 1
        tasks = [task for batch in self._in_flight[rank] for task in batch]
        self._in_flight[rank].clear()
        culprit = next((t for t in tasks if t.id == lost.task_id), tasks[0] if tasks else None)
        if culprit is not None:
            culprit.attempts += 1
            if culprit.attempts > self.retries:
                error = SlaveDiedError(
                    rank, lost.reason, describe(culprit.command), culprit.attempts
                )
                culprit.outcome = Outcome(culprit.id, rank, failure=error)
                self._stopping = True
            else:
                self.statistics.slaves[rank].retries += 1
        retry = [task for task in tasks if task.outcome is None]
        if not lost.replaced:
            del self._in_flight[rank]
            retry += self._pinned.pop(rank)
        for task in reversed(retry):
            if task.rank is None:
                self._queue.appendleft(task)
            elif task.rank in self._pinned:
                self._pinned[task.rank].appendleft(task)
            else:
                task.outcome = Outcome(
                    task.id,
                    rank,
                    failure=SlaveDiedError(
                        rank, lost.reason, describe(task.command), task.attempts
                    ),
                )
                self._stopping = True
        if not self._in_flight:
            for task in self._queue:
                task.outcome = Outcome(
                    task.id,
                    rank,
                    failure=SlaveDiedError(
                        rank, lost.reason + " and no slave is left", describe(task.command), 0
                    ),
                )
            self._queue.clear()
            self._stopping = True

    # Delivery ------------------------------------------------------------------------------

    def _deliver_ready(self, everything: bool = False) -> None:
        """Deliver finished tasks in queue order; at the end, those after a gap too."""
        tasks = self._tasks
        while self._next < len(tasks):
            task = tasks[self._next]
            if task.outcome is not None:
                self._deliver(task)
            elif not everything:
                return
            self._next += 1

    def _deliver(self, task: Task) -> None:
        task.delivered = True
        try:
            self.deliver(task, task.outcome)  # type: ignore[arg-type]
        except Exception as exc:
            self._errors.append((task.id, exc))
            self._stopping = True

    def _raise_first(self) -> None:
        _, first = self._errors[0]
        others = len(self._errors) - 1
        if others:
            names = ", ".join(
                f"{type(exc).__name__} from command {self._tasks[task_id].id}"
                for task_id, exc in self._errors[1:4]
            )
            more = f" and {others - 3} more" if others > 3 else ""
            add_note(first, f"{others} more command(s) of this run failed: {names}{more}")
        raise first
