"""The slave's side: run a batch of commands, each with its output captured and its
exception packed, and seal one report of the batch for the trip back to the master.

Every fabric runs commands through ``execute``, whether the slave is the master itself (uni), a
thread of it, or another process. A batch travels as ``batch_for_wire`` makes it, and is read
with ``rebuilt_batch``; its report holds
what the commands gave as a few lists for the whole batch, not an object per command, so that
tiny commands cost little to pickle and to read on the master.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from multi import capture, collector, logs, task_memory, wire
from multi.errors import Failure, MultiError, UnpicklableError, describe, exit_status
from multi.results import Result
from multi.wire import unpicklable_error

if TYPE_CHECKING:
    from multi.commands import Slave_command
    from multi.descriptors import Descriptor_capture
    from multi.logs import Log_forwarding
    from multi.processor import Data_store, Processor

#: A batch: the ids of its commands (their places in the run), and the commands. (How it is
#: pickled: ``batch_for_wire``.)
Batch = tuple[Sequence[int], Sequence["Slave_command"]]

#: How long a slave process that has replied looks for its next batch before its descriptors
#: point back out of the capture files: a master that answers at once (a round trip of one
#: command) sends it within some tens of microseconds, and pointing them back and into the
#: files again cost the slave some 5 µs on every such round trip.
NEXT_BATCH_SECONDS = 100e-6

RESULT_ADVICE = (
    "Results travel to the master: give them plain data (numbers, strings, arrays, and lists "
    "or dicts of those), and keep other objects in the command's Memo on the master."
)


class Report:
    """What running a batch gave, command by command in the batch's order.

    ``results`` holds the results of every command one after the other; ``counts`` says how
    many each returned (one number when all returned as many). ``output`` and ``failures`` map
    a command's place in the batch to its chunks of output and its failure, for the few that
    have any. ``seconds`` is each command's run time. A report may hold fewer commands than
    its batch: then ``lost`` says why the slave stopped at the next one, and a batch that could
    not be rebuilt at all has ``unreadable`` set, the failure of each of its commands.
    """

    __slots__ = ("counts", "failures", "interruption", "lost", "output", "rank", "results",
                 "seconds", "started", "unreadable")  # fmt: skip

    def __init__(
        self,
        rank: int,
        results: list[Any],
        counts: int | list[int],
        seconds: list[float],
        output: dict[int, list[capture.Chunk]] | None = None,
        failures: dict[int, Failure | BaseException] | None = None,
        started: float = 0.0,
        unreadable: Failure | None = None,
        lost: str | None = None,
    ) -> None:
        self.rank = rank
        self.results = results
        self.counts = counts
        self.seconds = seconds
        self.output = output
        self.failures = failures
        self.started = started  # the slave's wall clock when the batch started
        self.unreadable = unreadable
        self.lost = lost
        #: The KeyboardInterrupt that ended the batch, for a slave in the master's own process.
        self.interruption: BaseException | None = None

    def fields(self) -> tuple[Any, ...]:
        """What travels of a report, in the order of ``Report``'s arguments: a plain tuple
        pickles in half the time of an object, whose class pickle looks up every time."""
        return (self.rank, self.results, self.counts, self.seconds, self.output, self.failures,
                self.started, self.unreadable, self.lost)  # fmt: skip

    def __reduce__(self) -> tuple[Any, ...]:
        return (Report, self.fields())

    def finished(self) -> int:
        """How many commands of the batch ran to their end (all but those after a loss)."""
        return len(self.seconds)

    def results_of(self, position: int) -> list[Any]:
        """The results of the command at ``position`` in the batch."""
        counts = self.counts
        if isinstance(counts, int):
            if counts == 1:
                return [self.results[position]]
            return self.results[position * counts : (position + 1) * counts]
        start = sum(counts[:position])
        return self.results[start : start + counts[position]]

    def offsets(self) -> list[int] | None:
        """Where each command's results start, for reading them all in turn (None when every
        command returned as many)."""
        counts = self.counts
        if isinstance(counts, int):
            return None
        starts, total = [], 0
        for count in counts:
            starts.append(total)
            total += count
        return starts


@dataclass(slots=True)
class Slave_context:
    """What a slave knows while it works: who it is, its data store, and its current command."""

    rank: int
    slaves: int
    data_store: Data_store
    results: list[Any] | None = None  # where return_object puts the current command's results
    #: Where descriptors 1 and 2 point while a batch runs, on slaves that are processes.
    descriptors: Descriptor_capture | None = None
    #: What takes the records logged by commands, on slaves that are processes.
    logs: Log_forwarding | None = None
    #: The command that runs, and its id: log records name it (``multi.logs``).
    running: tuple[Any, int] | None = None
    #: Whether a KeyboardInterrupt that a command ended with came of a SIGINT (Ctrl-C, or on
    #: MPI the master's order to drop the work), which ends the slave; else it is the
    #: command's own failure. None: always, as for a slave that is the master itself, whom
    #: Ctrl-C interrupts as it runs the command (``uni``, on the main thread).
    signalled: Callable[[BaseException], bool] | None = None
    host: str = field(default_factory=socket.gethostname)

    def where(self) -> str:
        return f"slave {self.rank} of {self.slaves} (host {self.host}, pid {os.getpid()})"


def execute(
    processor: Processor,
    context: Slave_context,
    batch: Batch,
    running: Callable[[int], None] | None = None,
) -> Report:
    """Run each command of a batch in turn; nothing a command does stops the others.

    ``running`` is told the id of each command as it starts, and, when the batch is done,
    that its results go back (``task_memory.returning``). Any exception a command raises is
    its failure, but a KeyboardInterrupt that a signal caused (``Slave_context.signalled``),
    which ends the slave (Ctrl-C where the slave is the master itself, the master's order to
    drop the work on MPI): the report then holds the commands before it, and ``lost`` says
    what ended it.
    Descriptors 1 and 2 are left pointed into the capture files: ``serve`` points them back.
    """
    ids, commands = batch
    results: list[Any] = []
    context.results = results
    counts: list[int] = []
    seconds: list[float] = []
    output: dict[int, list[capture.Chunk]] = {}
    failures: dict[int, Failure | BaseException] = {}
    started = time.time()
    descriptors = context.descriptors
    chunks: Any = [] if descriptors is None else descriptors  # Python's writes go there
    previous = capture.redirect(chunks)
    was = processor.swap_context(context)
    clock = time.perf_counter
    logs = context.logs
    if descriptors is not None:
        descriptors.begin()
    if logs is not None:
        logs.begin()
    try:
        for position, command in enumerate(commands):
            if running is not None:
                running(ids[position])
            context.running = (command, ids[position])
            before = len(results)
            start = clock()
            try:
                command.run(processor, True)
            except BaseException as exc:
                interrupted = isinstance(exc, KeyboardInterrupt) and (
                    context.signalled is None or context.signalled(exc)
                )
                if _forked and not interrupted:
                    _end_forked_child(exc)
                if interrupted or (descriptors is None and _the_masters_exit(exc)):
                    if descriptors is not None:
                        chunks = descriptors.take()
                    if logs is not None:
                        chunks += logs.take()
                    if chunks:
                        output[position] = chunks
                    del results[before:]
                    # (which command it ran, the master knows: the error it makes names it)
                    ended = f"was ended by {type(exc).__name__}"
                    report = _report(context, results, counts, seconds, output, failures,
                                     started, lost=ended)  # fmt: skip
                    report.interruption = exc
                    return report
                failures[position] = _failure(context, command, exc)
            if _forked:
                _end_forked_child(None)
            seconds.append(clock() - start)
            counts.append(len(results) - before)
            if descriptors is not None:
                taken = descriptors.take()
                if logs is not None and logs.handler.records:
                    taken += logs.take()
                if taken:
                    output[position] = taken
            elif chunks:
                output[position] = chunks
                chunks = []
                capture.redirect(chunks)
        if descriptors is not None and seconds:
            left = descriptors.settle()
            if left:
                output.setdefault(len(seconds) - 1, []).extend(left)
    finally:
        if logs is not None:
            logs.end()
        capture.redirect(previous)
        processor.swap_context(was)
        context.results = None
        context.running = None
        if running is not None:
            running(task_memory.returning(ids[0] if ids else -1))
    return _report(context, results, counts, seconds, output, failures, started)


def never_signalled(error: BaseException) -> bool:
    """For a slave that no SIGINT reaches: a thread, or a process that ignores it."""
    return False


def raise_on_sigint() -> None:
    """Take SIGINT as Python does, with a KeyboardInterrupt that says it came of the signal
    (``by_sigint``)."""
    signal.signal(signal.SIGINT, _interrupted)


def _interrupted(number: int, frame: Any) -> None:
    error = KeyboardInterrupt()
    error.multi_sigint = True  # type: ignore[attr-defined]
    raise error


def by_sigint(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt came of a SIGINT (``raise_on_sigint``), raised again or not
    by the command it interrupted, rather than of the command's own ``raise``."""
    return getattr(error, "multi_sigint", False) is True


def _the_masters_exit(error: BaseException) -> bool:
    """Whether a command's exception is the master's own ``sys.exit``: a SystemExit that one
    of the process's signal handlers raised (a batch system's SIGTERM made an exit) as the
    command ran on the main thread, where the master runs commands itself (``uni``). It ends
    the master's program, as it would while the master waited for slaves that run them."""
    if (
        not isinstance(error, SystemExit)
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    handlers = set()
    for number in signal.valid_signals():
        handler = signal.getsignal(number)
        code = getattr(getattr(handler, "__func__", handler), "__code__", None)
        if code is not None:
            handlers.add(code)
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code in handlers:
            return True
        trace = trace.tb_next
    return False


def _report(
    context: Slave_context,
    results: list[Any],
    counts: list[int],
    seconds: list[float],
    output: dict[int, list[capture.Chunk]],
    failures: dict[int, Failure | BaseException],
    started: float,
    lost: str | None = None,
) -> Report:
    same = counts[0] if counts and counts.count(counts[0]) == len(counts) else None
    return Report(
        context.rank,
        results,
        same if same is not None else counts,
        seconds,
        output or None,
        failures or None,
        started,
        None,  # unreadable (positional: a keyword costs a run of one command 60 ns)
        lost,
    )


def _failure(context: Slave_context, command: Any, exc: BaseException) -> Failure:
    if exc.__traceback__ is not None:  # start the traceback at the command's run()
        exc.__traceback__ = exc.__traceback__.tb_next
    header = f"Traceback of {context.where()}, running {describe(command)}"
    return Failure(exc, header, context.rank, context.where())


def seal(report: Report, commands: Sequence[Any]) -> wire.Frames:
    """Pickle a report for the master (its ``fields``); a result that does not pickle fails
    its command."""
    _leave_ranks(report.results)
    try:
        return wire.dumps(_travelling(report))
    except UnpicklableError:
        _drop_unpicklable_results(report, commands)
        return wire.dumps(_travelling(report))


def _leave_ranks(results: list[Any]) -> None:
    """Take its rank off each result that holds nothing else: it travels as its class alone
    (why: ``multi.wire``, beside ``_as_queued``), and the master gives the results of a report
    the report's rank (``report_from_wire``). A result inside another's attributes keeps its
    own. (The slave lets go of its results once they are pickled.)"""
    for result in results:
        if isinstance(result, Result):  # (a result may be any object with run())
            state = result.__dict__
            if len(state) == 1 and "rank" in state:
                del state["rank"]


class Packed:
    """The results and failures of a batch, pickled apart from the rest of its report (its
    ``frames``): if they do not unpickle on the master (a class it cannot import, a
    ``__setstate__`` that raises there), what the commands wrote still does."""

    __slots__ = ("frames",)

    def __init__(self, frames: wire.Frames) -> None:
        self.frames = frames

    def __reduce__(self) -> tuple[Any, ...]:
        return (Packed, (self.frames,))


def _travelling(report: Report) -> tuple[Any, ...]:
    """What travels of a report: its ``fields``, with its results and failures ``Packed``
    where it holds output too (a second pickle, which only such batches pay)."""
    fields = report.fields()
    if report.output is None or not (report.results or report.failures):
        return fields
    packed = Packed(wire.dumps((report.results, report.failures)))
    return (fields[0], packed, *fields[2:5], None, *fields[6:])


def _drop_unpicklable_results(report: Report, commands: Sequence[Any]) -> None:
    """Keep the results that pickle; the first that does not fails its command."""
    kept: list[Any] = []
    counts: list[int] = []
    failures = report.failures or {}
    for position in range(report.finished()):
        own = report.results_of(position)
        good = [result for result in own if wire.find_unpicklable(result) is None]
        if len(good) < len(own) and position not in failures:
            bad = next(result for result in own if not any(result is g for g in good))
            command = commands[position] if position < len(commands) else None
            # (a result may say what it is to the program: an executor's, a call's value)
            what, advice = getattr(
                bad, "multi_unpicklable", (f"result {describe(bad)} of command", RESULT_ADVICE)
            )
            error = unpicklable_error(f"{what} {describe(command)}", bad, advice)
            failures[position] = Failure(
                error, f"While returning the results of {describe(command)}"
            )
        kept += good
        counts.append(len(good))
    report.results = kept
    report.counts = counts
    report.failures = failures or None


#: The id of a command run when a slave starts, to restore the data the others hold.
SETUP_ID = -2

UNREADABLE_ADVICE = (
    "A slave imports the modules that the commands' classes come from: each must be importable "
    "there, from the same environment and path (on every node of a cluster). Code of the main "
    "script, or of a notebook, travels with the commands and needs no import."
)


#: A batch as it travels (``batch_for_wire``).
Travelled = tuple[int | Sequence[int], Sequence["Slave_command"], Sequence[int | None], logs.Levels]


def batch_for_wire(batch: Batch, memo_ids: Sequence[int | None] | None = None) -> Travelled:
    """A batch as it is pickled: a stretch of the run's commands names only its first index
    (a ``range`` pickles in as much time as the rest of a batch of one command); the ids of
    their memos in the run (``memo_ids``, by index; none without it) go as one list, which a
    command that holds nothing else travels without (``wire._as_queued``); the levels of the
    master's loggers go with it, for the slave's records (``multi.logs``)."""
    ids, commands = batch
    if type(ids) is range and ids.step == 1:
        first: int | Sequence[int] = ids.start
        held = [None] * len(commands) if memo_ids is None else memo_ids[ids.start : ids.stop]
    else:
        first = ids
        held = [None] * len(commands) if memo_ids is None else [memo_ids[i] for i in ids]
    return first, commands, held, logs.master_levels()


def batch_from_wire(travelled: Travelled) -> Batch:
    """A batch as ``batch_for_wire`` made it, unpickled: its ids again, each command's
    ``memo_id`` the id of the memo it was queued with (as ``add_to_queue`` set it), the
    master's levels noted for the slave's loggers."""
    ids, commands, memo_ids, levels = travelled
    logs.want(levels)
    for command, memo_id in zip(commands, memo_ids, strict=True):
        try:  # noqa: SIM105 (suppress() would cost a call per command)
            command.memo_id = memo_id
        except AttributeError:  # (an object with run() that takes no attributes)
            pass
    if isinstance(ids, int):
        return range(ids, ids + len(commands)), commands
    return ids, commands


def rebuilt_batch(frames: Sequence[Any]) -> Batch | Exception:
    """A batch rebuilt on a slave from its frames, or why it could not be: the slave then
    reports a failure for each of its commands (``unreadable``), which the engine sends again
    alone, so that only the one that cannot travel fails."""
    try:
        return batch_from_wire(wire.loads(frames))
    except Exception as exc:
        return exc


def rebuilt_report(rank: int, frames: Sequence[Any]) -> Report:
    """A slave's report rebuilt on the master from its frames; one that does not unpickle
    fails the commands of its batch (``unreadable_on_master``)."""
    try:
        return report_from_wire(wire.loads(frames))
    except Exception as exc:  # (a report of another shape, from another version, too)
        return unreadable_on_master(rank, exc)


def report_from_wire(fields: Sequence[Any]) -> Report:
    """A report as ``seal`` pickled it (its ``fields``), unpickled. Where its results and
    failures do not unpickle, it keeps its output, and ``unreadable`` says why. Its results
    (``Result``'s, where a result may be any object with ``run``) get its rank, as the slave
    that returned them: one that held nothing else travelled without it
    (``_leave_ranks``)."""
    report = Report(*fields)
    packed: Any = report.results
    if type(packed) is Packed:
        try:
            report.results, report.failures = wire.loads(packed.frames)
        except Exception as error:
            report.results, report.counts = [], 0
            report.unreadable = Failure(_not_unpickled(report.rank, error), "On the master")
    rank = report.rank
    for result in report.results:
        if isinstance(result, Result):
            result.rank = rank
    return report


def unreadable_on_master(rank: int, error: Exception) -> Report:
    """The report of a slave that arrived whole but does not unpickle on the master."""
    exc = _not_unpickled(rank, error)
    return Report(rank, [], 0, [], unreadable=Failure(exc, "On the master", rank))


def _not_unpickled(rank: int, error: Exception) -> UnpicklableError:
    return UnpicklableError(
        f"the report of slave {rank} does not unpickle on the master: "
        f"{type(error).__name__}: {error}. The master imports the modules that results and "
        "exceptions come from: each must be importable there, and rebuild there"
    )


def unreadable(context: Slave_context, error: Exception) -> Report:
    """The report of a batch that could not be rebuilt: a failure for each of its commands."""
    exc = UnpicklableError(
        f"{context.where()} could not rebuild the commands it received: "
        f"{type(error).__name__}: {error}. {UNREADABLE_ADVICE}"
    )
    exc.__cause__ = error
    failure = Failure(exc, f"While {context.where()} received a batch", context.rank)
    return Report(context.rank, [], 0, [], unreadable=failure)


def run_batch(
    processor: Processor,
    context: Slave_context,
    batch: Batch | Exception,
    running: Callable[[int], None] | None = None,
) -> Report:
    """Run a batch (``execute``), or report why it could not be rebuilt (``rebuilt_batch``)."""
    if isinstance(batch, Exception):
        return unreadable(context, batch)
    return execute(processor, context, batch, running)


#: Whether this process is the child of a command that forked (on a slave process).
_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


def _end_forked_child(error: BaseException | None) -> None:
    """End the child of a command that forked, which came back from the command instead of
    ending: as Python would end a program there, with its status. Else it would go on as a
    second copy of its slave, answer the master for it, and lose the command's results."""
    status = 0
    if isinstance(error, SystemExit):
        status = exit_status(error)
    elif error is not None:
        traceback.print_exception(error)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def serve(
    processor: Processor,
    context: Slave_context,
    receive: Callable[[], Sequence[Any] | None],
    reply: Callable[[Report, Batch | None], None],
    running: Callable[[int], None] | None = None,
    at_hand: Callable[[], bool] | None = None,
) -> None:
    """The loop of a slave process: receive a batch's frames, rebuild it, run it, reply;
    until ``receive`` says stop (None).

    ``running`` is told what the slave does, for its master to read if it dies: it rebuilds
    a batch (``UNPACKING``), then runs each command (its id), then returns their results
    (``RETURNING``), then waits (``IDLE``). A slave killed as it waits then costs no command
    an attempt, and a batch whose unpickling or results kill its slave is not taken for work
    that the slave never had (see ``Scheduler._on_lost``).

    Descriptors 1 and 2 point back where they were once the slave waits: after a batch, unless
    ``at_hand`` says, within ``NEXT_BATCH_SECONDS``, that the next message is there (what a
    thread writes between two such batches then goes with the next command), and on the way
    out. A command's own fork that comes back from the command ends there
    (``_end_forked_child``).
    """
    global serving, _forked
    processor.serving = True
    serving = processor
    _forked = False  # (a slave forked from a command, a nested executor's: it serves its own)
    os.register_at_fork(after_in_child=_note_fork)
    collector.size_for_batches()
    descriptors = context.descriptors
    try:
        with capture.routing():
            while (frames := receive()) is not None:
                if running is not None:
                    running(task_memory.UNPACKING)
                batch = rebuilt_batch(frames)
                report = run_batch(processor, context, batch, running)  # (then RETURNING)
                reply(report, None if isinstance(batch, Exception) else batch)
                if running is not None:
                    running(task_memory.IDLE)
                if report.lost is not None:
                    return
                if descriptors is not None and not (at_hand is not None and _soon(at_hand)):
                    descriptors.end()
    finally:
        if descriptors is not None:
            descriptors.end()


def die_by(number: int) -> NoReturn:
    """End this process by the signal ``number``, as its default action would: a launcher or
    a master that reads how a process ended sees the signal (a plain exit, or Python's own
    ending after a KeyboardInterrupt, tells another story). Called on the main thread: on
    another, where the signal is held back, the process exits with 128 + ``number``."""
    with suppress(OSError, ValueError):  # (SIGKILL's cannot be set, nor needs to be)
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
    os.kill(os.getpid(), number)
    os._exit(128 + number)  # (a signal whose default action is not to end the process)


#: The processor that this process serves as a slave, once it does (``serve``).
serving: Processor | None = None


def refuse_on_its_own_slave(kind: type, fabric: str) -> None:
    """Refuse a processor of the class ``kind`` in a process that serves one as a slave: a
    slave of an MPI job or of a PVM virtual machine cannot be a master in it as well (it
    waited for ever, or took its master's messages)."""
    if isinstance(serving, kind):
        raise MultiError(
            f"a command cannot make a processor or executor of the {fabric} fabric (a "
            f"nested joblib Parallel, say) on a slave of one: its process serves its "
            f"master's already. "
            f"Return the work to the master as more commands or calls, or use the thread "
            f"or multiprocessing fabric inside the command"
        )


def _soon(at_hand: Callable[[], bool]) -> bool:
    """Whether ``at_hand`` says yes within ``NEXT_BATCH_SECONDS`` (asked again until then)."""
    deadline = time.perf_counter() + NEXT_BATCH_SECONDS
    while not at_hand():
        if time.perf_counter() >= deadline:
            return False
    return True
