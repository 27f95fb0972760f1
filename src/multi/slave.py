"""The slave's side: run a batch of commands, each with its output captured and its
exception packed, and seal the outcomes for the trip back to the master.

Every fabric runs commands through ``execute``, whether the slave is the master itself (uni), a
thread of it, or another process.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from multi import capture, wire
from multi.errors import Failure, UnpicklableError, describe
from multi.wire import unpicklable_error

if TYPE_CHECKING:
    from multi.commands import Slave_command
    from multi.processor import Data_store, Processor

Batch = Sequence[tuple[int, "Slave_command"]]

RESULT_ADVICE = (
    "Results travel to the master: give them plain data (numbers, strings, arrays, and lists "
    "or dicts of those), and keep other objects in the command's Memo on the master."
)


@dataclass(slots=True)
class Outcome:
    """What running one command gave: its results, its output, its exception, its time."""

    task_id: int
    rank: int
    results: list[Any] = field(default_factory=list)
    output: list[capture.Chunk] = field(default_factory=list)
    failure: Failure | BaseException | None = None
    seconds: float = 0.0

    def __reduce__(self) -> tuple[Any, ...]:  # a plain call: faster than the slots protocol
        fields = (self.task_id, self.rank, self.results, self.output, self.failure, self.seconds)
        return (Outcome, fields)


@dataclass(slots=True)
class Slave_context:
    """What a slave knows while it works: who it is, its data store, and its current command."""

    rank: int
    slaves: int
    data_store: Data_store
    outcome: Outcome | None = None
    host: str = field(default_factory=socket.gethostname)

    def where(self) -> str:
        return f"slave {self.rank} of {self.slaves} (host {self.host}, pid {os.getpid()})"


def execute(
    processor: Processor,
    context: Slave_context,
    batch: Batch,
    running: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Run each command of a batch in turn; nothing a command does stops the others.

    ``running`` is told the id of each command as it starts, and -1 when the batch is done.
    """
    outcomes = []
    with processor.slave_context(context):
        for task_id, command in batch:
            if running is not None:
                running(task_id)
            outcome = context.outcome = Outcome(task_id, context.rank)
            start = time.perf_counter()
            previous = capture.redirect(outcome.output)
            try:
                command.run(processor, True)
            except (Exception, SystemExit) as exc:
                if exc.__traceback__ is not None:  # start the traceback at the command's run()
                    exc.__traceback__ = exc.__traceback__.tb_next
                header = (
                    f"Traceback of {context.where()}, running {describe(command)} "
                    f"(command {task_id} of the run):"
                )
                outcome.failure = Failure(exc, header, context.rank, context.where())
            finally:
                capture.redirect(previous)
                context.outcome = None
            outcome.seconds = time.perf_counter() - start
            outcomes.append(outcome)
    if running is not None:
        running(-1)
    return outcomes


def seal(outcomes: list[Outcome], commands: dict[int, Any]) -> wire.Frames:
    """Pickle outcomes for the master; a result that does not pickle fails its command."""
    try:
        return wire.dumps(outcomes)
    except Exception:
        for outcome in outcomes:
            _drop_unpicklable_results(outcome, commands.get(outcome.task_id))
        return wire.dumps(outcomes)


def _drop_unpicklable_results(outcome: Outcome, command: Any) -> None:
    """Keep the results that pickle; the first that does not fails the command."""
    good = [result for result in outcome.results if wire.find_unpicklable(result) is None]
    if len(good) == len(outcome.results):
        return
    bad = next(result for result in outcome.results if not any(result is g for g in good))
    outcome.results = good
    if outcome.failure is None:
        error = unpicklable_error(
            f"result {describe(bad)} of command {describe(command)}", bad, RESULT_ADVICE
        )
        outcome.failure = Failure(error, f"While returning the results of {describe(command)}:")


#: The task id of the one outcome a slave sends for a batch it could not rebuild.
UNREADABLE = -1

UNREADABLE_ADVICE = (
    "The classes of commands must be importable on the slaves: define them in a module, or in "
    "a script run as a file that starts its program under `if __name__ == '__main__':`."
)


def unreadable(context: Slave_context, error: Exception) -> list[Outcome]:
    """The reply to a batch that could not be rebuilt: one outcome that fails all of it."""
    exc = UnpicklableError(
        f"{context.where()} could not rebuild the commands it received: "
        f"{type(error).__name__}: {error}. {UNREADABLE_ADVICE}"
    )
    exc.__cause__ = error
    failure = Failure(exc, f"While {context.where()} received a batch:", context.rank)
    return [Outcome(UNREADABLE, context.rank, failure=failure)]


def serve(
    processor: Processor,
    context: Slave_context,
    receive: Callable[[], Batch | Exception | None],
    reply: Callable[[list[Outcome], Batch], None],
    running: Callable[[int], None] | None = None,
) -> None:
    """The loop of a slave process: receive a batch, run it, reply; until told to stop."""
    with capture.routing():
        while (batch := receive()) is not None:
            if isinstance(batch, Exception):
                reply(unreadable(context, batch), [])
                continue
            reply(execute(processor, context, batch, running), batch)
