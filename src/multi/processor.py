"""The processor: the master's queue, memo map and data store, and the lifecycle of a run.

Application code queues commands with ``add_to_queue`` and runs them with ``run_queue``; the
shared scheduler sends them to the fabric's slaves and delivers what comes back here, on the
master's main thread. A fabric subclasses ``Processor`` only to say how many slaves it can give
and which transport moves the work (``make_transport``).
"""

from __future__ import annotations

import copy
import datetime
import errno
import operator
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, ClassVar

from multi import capture, collector, limits, logs, progress, wire
from multi.application import boxed
from multi.commands import Exit_command, Slave_command, Slave_storage_command, data_name
from multi.errors import (
    MultiError,
    ProcessorSizeError,
    UnpicklableError,
    add_note,
    describe,
    exit_status,
)
from multi.memo import Memo
from multi.options import Option, count, file_to_write, one_of, resolve, seconds_or_none
from multi.results import Null_result_command
from multi.run import Run
from multi.scheduler import ON_FAILURE, Scheduler
from multi.slave import Report, Slave_context
from multi.statistics import Run_statistics
from multi.verbosity import Verbosity

if TYPE_CHECKING:
    from multi.application import Application_callback
    from multi.timeline import Timeline
    from multi.transport import Transport

STOP_SECONDS = 2.0
#: Runs of this many commands or fewer are counted in ``totals`` this many at a time.
UNCOUNTED_RUNS = 64
#: What the memo map gives for an id it does not hold (one lookup, where ``in`` and ``[]``
#: are two, on the path of every result).
_MISSING: Any = object()


class Data_store:
    """Named data that the master sent to this slave with ``send_data_to_slaves``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"no data named {name!r} is in this data store: send it first with "
            f"send_data_to_slaves({name!r}, value) on the master"
        )


DATA_ADVICE = (
    "Data sent to the slaves travels to each of them: send what pickles, and make what does not "
    "(a lock, an open file, a connection) on each slave, in the commands that need it"
)


class _Thread_state(threading.local):
    """The slave that a thread runs as (None: the master). A class default, so that a thread
    that never ran as a slave reads None without an exception raised and caught (five times
    the cost, on every ``add_to_queue``)."""

    context: Slave_context | None = None


class Processor:
    """The central class: queues commands, runs them on the slaves, delivers their results."""

    #: The fabric's name, as ``load_multiprocessor`` knows it.
    fabric: ClassVar[str] = "processor"
    #: The settings of the fabric (see ``multi.options``).
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "retries",
            "times a command is run again after the slave running it died",
            2,
            count,
        ),
        Option(
            "on_failure",
            "what a failing command does to the run: continue (every command runs, then the "
            "first failure is raised; stops early if the first ten to finish all fail), stop "
            "(no command is started after a failure), or run-all (never stops early)",
            "continue",
            one_of(ON_FAILURE),
            ON_FAILURE,
        ),
        Option(
            "liveness",
            "seconds a slave may give no sign of life before it is taken for hung, stopped "
            "and replaced (its command retried); raise it for compiled code that holds the "
            "GIL longer; none: wait for ever",
            300.0,
            seconds_or_none,
        ),
        Option(
            "timeout",
            "seconds a command may run before it fails and its slave is stopped (none: no "
            "limit); on fabrics whose slaves are processes",
            None,
            seconds_or_none,
        ),
        Option(
            "timeline",
            "write a Chrome trace of every run to this file (open it in ui.perfetto.dev, or "
            "draw it with python -m multi.timeline FILE --png OUT.png); none: no trace",
            None,
            file_to_write,
        ),
        Option(
            "progress",
            "a progress bar while run_queue works (and an executor's calls, with yes): auto (on "
            "a terminal), yes or no",
            "auto",
            progress.setting,
            progress.SETTINGS,
        ),
    )
    #: Whether slaves are threads of the master, whose output is routed per thread.
    slaves_in_process: ClassVar[bool] = True
    #: What a slave is on this machine, "thread" or "process", for the fabrics that start
    #: them here: a size beyond what the machine can start is refused (``multi.limits``).
    #: (A fabric may say it per processor, before ``Processor.__init__`` checks the size.)
    slave_kind: str | None = None
    #: The rank of this process: 0 for the master; a slave's own where the launcher starts
    #: slaves as copies of the application (MPI), whose ``run()`` then serves the master.
    process_rank: int = 0

    def __init__(
        self,
        processor_size: int | None = -1,
        callback: Application_callback | None = None,
        **options: Any,
    ) -> None:
        self.callback = callback
        self.settings = resolve(self.fabric, self.options, options)
        if self.settings["timeout"] is not None and not self.can_stop_commands():
            raise ValueError(
                f"the {self.fabric} fabric cannot stop a command that runs too long here, as it "
                "cannot stop one of its slaves alone: leave the option timeout unset here, or "
                "run where a slave can be stopped alone (the multiprocessing or pvm fabric, or "
                "mpi4py with the slaves a master started alone spawns: launch=spawn)"
            )
        self._processor_size = self.slave_count(_checked_size(processor_size))
        self._check_machine_can_start(self._processor_size)
        self.command_queue: list[Slave_command] = []
        self.memo_map: dict[int, Memo] = {}
        self._memo_users: dict[int, int] = {}
        self._master_store = Data_store()
        self._local = _Thread_state()
        self._transport: Transport | None = None
        self._queued_memo_ids: list[int | None] = []  # the memo of each queued command
        #: The collector's young generation, held for the queue once it holds more than a
        #: small run: every young collection while an application queues would find nothing
        #: to free (the queue holds what it made), and took a third of its time to queue.
        self._queue_held: collector.Held | None = None
        self._setup_commands: list[Slave_storage_command] = []
        self._queueable: set[type] = set()  # command classes found fit to queue
        self._returnable: set[type] = set()  # result classes found fit to return
        self._timeline: Timeline | None = None  # the trace of every run, with ``timeline``
        self._routing: capture.routing | None = None  # output routed to slave threads' commands
        self.NULL_RESULT = Null_result_command(processor=self)
        self.start_time: float | None = None
        self._running = False
        #: The callbacks whose init_master is under way: the launcher's, then the program's.
        self._applications: list[Any] = []
        #: Whether this process serves a master as a slave now (``multi.slave.serve``): before
        #: that, a rank of mpiexec runs the program's own code, as the master does.
        self.serving = False
        self._run: Run | None = None  # the run_queue under way
        self._run_thread = 0  # the thread that runs it: results run there
        self._scheduler: Scheduler | None = None
        #: What the last ``run_queue`` did, and all of them: per slave, commands, time, bytes.
        self.last_run: Run_statistics | None = None
        self._totals = Run_statistics()
        #: Small runs not counted in ``totals`` yet: they are counted when it is read, or once
        #: there are ``UNCOUNTED_RUNS`` (adding a run took a run of one command a twelfth of
        #: its time).
        self._uncounted: list[Run_statistics] = []
        self._progress = progress.OFF
        #: What must finish before ``run()`` stops the slaves (see ``before_stop``).
        self._before_stop: list[weakref.WeakMethod[Callable[[BaseException | None], None]]] = []
        logs.give_records_their_slave()

    # What a fabric provides ------------------------------------------------------------------

    def slave_count(self, requested: int | None) -> int:
        """The number of slaves to run for a request (None: the fabric's default)."""
        return requested if requested is not None else usable_cores()

    def _check_machine_can_start(self, size: int) -> None:
        kind = self.slave_kind
        if kind is None or self.process_rank:
            return  # (a slave's processor starts no slaves: its master checked the machine)
        most = limits.most_slaves(kind) if size > usable_cores() else None
        if most is not None and size > most[0]:
            plural = "processes" if kind == "process" else f"{kind}s"
            raise ProcessorSizeError(
                f"the {self.fabric} fabric cannot start {size} slave {plural} here: this "
                f"machine can start at most {max(0, most[0])} more ({most[1]}). Ask for fewer "
                f"slaves: it has {usable_cores()} usable cores"
            )
        limits.make_room(kind, size)

    def can_stop_commands(self) -> bool:
        """Whether a command can be stopped without stopping the master (``timeout``)."""
        return False

    def size_is_given(self) -> bool:
        """Whether the number of slaves is the launcher's to give, not the program's (the
        ranks of ``mpiexec``): one asked for then changes nothing."""
        return False

    @classmethod
    def check_available(cls) -> None:
        """Raise ``ImportError`` or ``OSError`` saying why the fabric cannot run here."""

    def serve(self) -> None:
        """Serve the master as a slave, until it stops us (fabrics with ``process_rank`` > 0)."""
        raise NotImplementedError(f"{type(self).__name__} has no slave processes to serve from")

    def make_transport(self) -> Transport:
        """The transport that moves work to this fabric's slaves."""
        raise NotImplementedError(f"{type(self).__name__} does not define make_transport()")

    def get_intro_string(self) -> str:
        """A one-line description of the fabric, for the application's banner."""
        return f"{self.fabric} fabric with {self._processor_size} slaves and 1 master."

    # Identity ----------------------------------------------------------------------------

    def processor_size(self) -> int:
        """The number of slaves."""
        return self._processor_size

    def rank(self) -> int:
        """0 on the master, 1 to ``processor_size()`` on the slaves."""
        context = self._local.context
        return context.rank if context is not None else self.process_rank

    def on_master(self) -> bool:
        """Whether this code runs as the master (and not as a slave's command)."""
        return self._context() is None and self.process_rank == 0

    def on_slave(self) -> bool:
        """Whether this code runs on a slave."""
        return not self.on_master()

    def assert_on_master(self) -> None:
        """Fail clearly when master-only API is called from a slave's command, or from a
        thread that a command started (on each add_to_queue: three tests, while all is well)."""
        if self.process_rank or self._local.context is not None or self._run is not None:
            context = self._local.context
            if context is not None:
                raise MultiError(
                    f"{sys._getframe(1).f_code.co_name}() can only be called on the master, not "
                    f"in a command on slave {context.rank}"
                )
            if self.process_rank and not self.serving:
                name = sys._getframe(1).f_code.co_name
                raise _on_a_slave_rank(name, self.process_rank, self._processor_size)
            if self._in_another_thread():
                name = sys._getframe(1).f_code.co_name
                if self.process_rank == 0:
                    raise _beside_a_run(name, self._run is not None and self._run.source)
                raise _from_another_thread(name)

    def _in_another_thread(self) -> bool:
        """Whether this thread, which runs no command, is one that a command started: on a
        slave process, or beside the master's thread while it runs commands."""
        return (self.process_rank != 0 and self._local.context is None) or (
            self._run is not None and threading.get_ident() != self._run_thread
        )

    def current_command(self) -> str:
        """The command that this thread runs as a slave, as log records name it (its class
        and its number in the run), or "" outside commands."""
        context = self._local.context
        running = context.running if context is not None else None
        return "" if running is None else f"{type(running[0]).__name__} {running[1]}"

    def get_name(self) -> str:
        """The host and process (and slave) that this code runs in."""
        name = f"{socket.gethostname()}-pid{os.getpid()}"
        context = self._context()
        return name if context is None else f"{name}-slave{context.rank}"

    @property
    def data_store(self) -> Data_store:
        """This slave's data store (the master's own on the master)."""
        context = self._context()
        return context.data_store if context is not None else self._master_store

    def _context(self) -> Slave_context | None:
        return self._local.context

    def swap_context(self, context: Slave_context | None) -> Slave_context | None:
        """Make this thread run as the slave that ``context`` describes (None: as itself);
        return what it ran as before, to be restored the same way."""
        local = self._local
        previous = local.context
        local.context = context
        return previous

    # The queue ---------------------------------------------------------------------------

    def add_to_queue(self, command: Slave_command, memo: Memo | None = None) -> None:
        """Queue a command; its results will find ``memo`` on the master."""
        if self.process_rank or self._local.context is not None or self._run is not None:
            self.assert_on_master()  # (its test inline: a call costs each command 60 ns)
        if type(command) not in self._queueable:
            self._check_queueable(command)
        memo_id = None if memo is None else self._hold_memo(memo)
        command.memo_id = memo_id  # as the original set it; the queue keeps its own
        queue = self.command_queue
        queue.append(command)
        self._queued_memo_ids.append(memo_id)
        if len(queue) == collector.SMALL_RUN + 1:
            self._queue_held = collector.hold_batches(len(queue))

    def _hold_memo(self, memo: Memo) -> int:
        """Keep a memo on the master for one more command; return its id."""
        try:
            memo_id = memo.memo_id()
        except AttributeError:
            if isinstance(memo, Memo):
                raise
            raise TypeError(
                f"a memo must be a multi.Memo, not a {type(memo).__qualname__}: keep what the "
                "results need on the master in the attributes of a Memo subclass"
            ) from None
        if memo_id in self.memo_map:
            self._memo_users[memo_id] = self._memo_users.get(memo_id, 1) + 1
        else:
            self.memo_map[memo_id] = memo
        return memo_id

    def _check_queueable(self, command: Slave_command) -> None:
        if isinstance(command, Exit_command):
            raise TypeError("Exit_command stops a slave: to end the program call processor.exit()")
        run = getattr(type(command), "run", None)
        if not callable(run) or run is Slave_command.run:
            raise TypeError(
                f"{describe(command)} cannot be queued: it needs a method "
                "run(self, processor, completed) that does its work on a slave"
            )
        self._queueable.add(type(command))

    def is_queued(self) -> bool:
        """Whether commands wait in the queue."""
        return bool(self.command_queue)

    def run_queue(self) -> None:
        """Run every queued command on the slaves and deliver what they return.

        Returns when all have finished. If some failed, everything else is still delivered,
        in queue order, and then the first failure is raised here (see ``on_failure``); the
        others are in ``last_run.failures``. Commands queued meanwhile (by result commands)
        wait for the next ``run_queue``.
        """
        if self.process_rank or self._local.context is not None or self._run is not None:
            self.assert_on_master()  # (their tests inline: two calls cost a run of one 0.1 µs)
            self._refuse_nested("run_queue")
        if not self.command_queue:
            self.last_run = Run_statistics()  # (what it did: nothing, and nothing failed)
            return
        commands, memo_ids = self.command_queue, self._queued_memo_ids
        self.command_queue, self._queued_memo_ids = [], []
        # (the queue's hold goes with its commands: one that results fill meanwhile finds the
        # threshold held, and takes nothing, which must not drop this one; given back too where
        # the slaves do not start)
        held = self._queue_held
        try:
            self._queue_held = None
            scheduler = self._started_scheduler()
            self._execute_run(scheduler, scheduler.new_run(commands, memo_ids))
        finally:
            if held is not None:  # (the queue of a small run holds nothing: no call then)
                collector.restore(held)

    def run_command_globally(self, command: Slave_command) -> None:
        """Run one copy of ``command`` on every slave, and deliver what each returns.

        What a ``Slave_storage_command`` stores reaches the slaves that replace dead ones too,
        as the data of ``send_data_to_slaves`` does.
        """
        self.assert_on_master()
        self._refuse_nested("run_command_globally")
        if type(command) not in self._queueable:
            self._check_queueable(command)
        scheduler = self._started_scheduler()
        ranks = list(scheduler.transport.ranks)
        run = scheduler.new_run([command] * len(ranks), [None] * len(ranks), ranks)
        self._execute_run(scheduler, run)
        if isinstance(command, Slave_storage_command):
            self._keep_setup(command)

    def _keep_setup(self, command: Slave_storage_command) -> None:
        """Keep a copy of what a storage command stored, for the slaves that replace dead ones,
        which run every such copy in turn: one whose every name a later one stores goes."""
        kept = copy.copy(command)
        kept.names, kept.values = list(command.names), list(command.values)
        names = set(kept.names)
        earlier = [setup for setup in self._setup_commands if not set(setup.names) <= names]
        self._setup_commands = [*earlier, kept]

    def _refuse_nested(
        self,
        name: str,
        advice: str = "queue follow-up commands with add_to_queue() there, and run them with "
        "run_queue() once this one has returned",
    ) -> None:
        if self._run is not None:
            raise MultiError(
                f"{name}() was called while run_queue() delivers the results of its commands "
                f"(from a result command): {advice}"
            )

    def run_stream(
        self,
        take: Callable[[int], list[tuple[Slave_command, Memo | None]] | None],
        on_error: Callable[[Slave_command, BaseException], None],
        on_failure: str | None = None,
        waiting: Callable[[], int] | None = None,
    ) -> str | None:
        """Run commands as ``take`` hands them over, until it returns None and all have
        finished: the engine of ``multi.Executor``.

        ``take(wanted)`` is asked for up to ``wanted`` more (command, memo) pairs whenever the
        slaves could use them, and for none (``wanted`` 0) as the run waits for its slaves, so
        that it can end the run (None) or drop it (an exception that ends ``run_stream``, which
        stops the slaves that hold work) at once; an empty list means none yet. Outcomes are
        delivered as commands finish, not in queue order; each failure goes to ``on_error``
        and none is raised here. ``on_failure`` overrides the processor's failure policy for
        this run; ``waiting()`` counts the commands ``take`` holds still, for the progress
        bar's total. Returns why the run stopped before ``take`` ran dry (see ``on_failure``),
        or None. The bar shows only with ``progress=yes``: ``auto`` shows none here.
        """
        self.assert_on_master()
        self._refuse_nested("run_stream")
        if on_failure is not None:
            on_failure = failure_policy(on_failure)
        scheduler = self._started_scheduler()
        run = scheduler.new_run([], [], in_order=False)

        def source(run: Run, wanted: int) -> bool:
            items = take(wanted)
            if items is None:
                return False
            if items:
                memo_ids = [None if memo is None else self._hold_memo(memo) for _, memo in items]
                run.extend([command for command, _ in items], memo_ids)
            return True

        run.source = source
        run.on_error = lambda index, error: on_error(run.commands[index], error)
        run.on_failure = on_failure
        self._execute_run(scheduler, run, waiting)
        return run.stopped

    def wake_stream(self) -> None:
        """Have ``run_stream`` ask its ``take`` again now: it has more, or drops the run. Called
        from any thread (an executor's ``submit``); where the transport cannot be woken, the
        run asks every few milliseconds anyway. (Between runs there is none to wake: the next
        one asks first.)"""
        run, transport = self._run, self._transport
        if run is not None and run.source is not None and transport is not None:
            transport.wake()

    def _execute_run(
        self, scheduler: Scheduler, run: Run, waiting: Callable[[], int] | None = None
    ) -> None:
        self._run = run
        self._run_thread = threading.get_ident()
        if run.source is not None:  # (an executor's calls finish before their run ends: its
            self.last_run = run.statistics  # futures' values come with it under way)
        wanted = self.settings["progress"]
        if run.source is not None and wanted == "auto":
            wanted = "no"  # (an open run, an executor's, shows a bar only when one is asked for)
        self._progress = progress.for_run(wanted, run.count)
        if waiting is not None:
            self._progress.follow(lambda: run.count + waiting())
        held = collector.hold_batches(None if run.source is not None else run.count)
        try:
            scheduler.run(run)
        finally:
            if held is not None:
                collector.restore(held)
            self._run = None
            # Interrupted, slaves may still hold work; or every slave is lost: start afresh.
            if run.busy() or scheduler.broken is not None:
                # (a transport that can only force its slaves by ending the job, MPI's, ends it
                # with the status of what interrupts the run: sys.exit's own, else a failure)
                self._drop_transport(kill=True, status=ending_status(sys.exc_info()[1]))
            self._close_run(run)

    def _close_run(self, run: Run) -> None:
        statistics = run.statistics
        # (in queue order, a run delivered everything when it got to its end)
        if run.unrun or run.delivered < run.count or not run.in_order:
            for index in run.undelivered():
                memo_id = run.memo_ids[index]
                statistics.not_run.append((run.commands[index], self.memo_map.get(memo_id)))  # type: ignore[arg-type]
                self._release_memo(memo_id)
        self._progress.close()
        if self._timeline is not None:
            self._write_timeline()
        self.last_run = statistics
        self._uncounted.append(statistics)
        # (a run that holds more is counted at once, its failures then dropped)
        held = run.count > UNCOUNTED_RUNS or statistics.failures or statistics.not_run
        if held or len(self._uncounted) >= UNCOUNTED_RUNS:
            self._count_runs()
        if Verbosity.level() >= 2:
            print(statistics.one_line(), file=sys.stderr)

    @property
    def totals(self) -> Run_statistics:
        """What every ``run_queue`` of the program did."""
        self._count_runs()
        return self._totals

    def _count_runs(self) -> None:
        self._totals.add(*self._uncounted)
        self._uncounted.clear()

    # Delivery on the master --------------------------------------------------------------

    def _deliver(
        self, run: Run, start: int, stop: int, outcome: Report | BaseException
    ) -> list[tuple[int, BaseException]]:
        """Deliver the commands ``start`` to ``stop`` (excluded) of a run, which share an
        outcome; return the exceptions with their indices, each command's own first.

        A report with no output and no failure, whose commands returned as many results each,
        is delivered in one loop: the path of tiny commands. The progress bar leaves the screen
        while results run, and comes back after.
        """
        if run.left_output:
            self._replay_left(run, start, stop)
        if (
            type(outcome) is Report
            and outcome.output is None
            and outcome.failures is None
            and type(outcome.counts) is int
        ):
            return self._deliver_plain(run, start, stop, outcome.results, outcome.counts)
        errors: list[tuple[int, BaseException]] = []
        positions = run.positions
        for index in range(start, stop):
            errors += [(index, e) for e in self._deliver_one(run, index, outcome, positions[index])]
            run.delivered = index + 1
        return errors

    def _replay_left(self, run: Run, start: int, stop: int) -> None:
        """Replay what commands wrote before their slave died under them, as each attempt's
        block, before their outcome."""
        left = run.left_output
        for index in [index for index in left if start <= index < stop]:
            self._progress.clear()
            for rank, chunks in left.pop(index):
                prefix = capture.prefixes(rank, self._processor_size, Verbosity().level())
                capture.replay(chunks, prefix)

    def _deliver_plain(
        self, run: Run, start: int, stop: int, results: list[Any], each: int
    ) -> list[tuple[int, BaseException]]:
        errors: list[tuple[int, BaseException]] = []
        positions, memo_ids = run.positions, run.memo_ids
        memo_map, users = self.memo_map, self._memo_users
        bar = self._progress
        if each:
            bar.clear()
        index = start
        try:
            for index in range(start, stop):
                memo_id = memo_ids[index]
                if each == 1:  # the usual: one result each, run without a loop around it
                    result = results[positions[index]]
                    own = result.memo_id
                    target = memo_id if own is None else own
                    try:
                        if target is None:
                            result.run(self, None)
                        elif (memo := memo_map.get(target, _MISSING)) is not _MISSING:
                            result.run(self, memo)
                        else:
                            self._run_result(result, target)  # says which memo is missing
                    except Exception as exc:
                        errors.append((index, self._from_result(exc, result, run, index)))
                elif each:
                    first = positions[index] * each
                    for result in results[first : first + each]:
                        try:
                            self._run_result(result, memo_id)
                        except Exception as exc:
                            errors.append((index, self._from_result(exc, result, run, index)))
                if memo_id is not None:  # release the memo, inline: this loop is the hot path
                    held = users.get(memo_id)
                    if held is None:
                        del memo_map[memo_id]
                    elif held > 2:
                        users[memo_id] = held - 1
                    else:
                        del users[memo_id]
        except BaseException:
            run.delivered = index + 1  # (its memo may be released already: it stays so)
            raise
        bar.advance(stop - start, bool(each))
        return errors

    def _deliver_one(
        self, run: Run, index: int, outcome: Report | BaseException, position: int
    ) -> list[BaseException]:
        """Replay a command's output and run its results; the command's exception first, then
        those its results raised on the master."""
        memo_id = run.memo_ids[index]
        if isinstance(outcome, BaseException):
            self._release_memo(memo_id)
            self._progress.advance(1, redraw=False)
            return [outcome]
        bar = self._progress
        cleared = False
        errors: list[BaseException] = []
        output = outcome.output
        if output is not None and position in output:
            bar.clear()
            cleared = True
            prefix = capture.prefixes(outcome.rank, self._processor_size, Verbosity().level())
            capture.replay(output[position], prefix)
        failures = outcome.failures
        if failures is not None and position in failures:
            failure = failures[position]
            errors.append(
                failure
                if isinstance(failure, BaseException)
                else failure.exception(run.place(index))
            )
        for result in outcome.results_of(position):
            if not cleared:
                bar.clear()
                cleared = True
            try:
                self._run_result(result, memo_id)
            except Exception as exc:
                errors.append(self._from_result(exc, result, run, index))
        self._release_memo(memo_id)
        bar.advance(1, cleared)
        return errors

    @staticmethod
    def _from_result(exc: Exception, result: Any, run: Run, index: int) -> Exception:
        add_note(
            exc,
            f"raised on the master by {describe(result)}, a result of "
            f"{describe(run.commands[index])}",
        )
        return exc

    def _run_result(self, result: Any, memo_id: int | None) -> None:
        own = result.memo_id
        if own is not None:
            memo_id = own
        memo = None
        if memo_id is not None:
            try:
                memo = self.memo_map[memo_id]
            except KeyError:
                raise MultiError(
                    f"{describe(result)} names memo {memo_id}, which is not on the master: a memo "
                    "lives until the command it was queued with has finished"
                ) from None
        result.run(self, memo)

    def process_result(self, result: Any, memo: Memo | None = None) -> None:
        """Run a result command on the master with the memo that it names, or else ``memo``
        (what a ``Batched_result_command`` hands on to the results it holds)."""
        if memo is None or result.memo_id is not None:
            self._run_result(result, None)
        else:
            result.run(self, memo)

    def _release_memo(self, memo_id: int | None) -> None:
        if memo_id is None:
            return
        users = self._memo_users.get(memo_id)
        if users is None:
            self.memo_map.pop(memo_id, None)
        elif users > 2:
            self._memo_users[memo_id] = users - 1
        else:
            del self._memo_users[memo_id]

    def return_object(self, result: Any) -> None:
        """Hand a result back to the master; called by a command while it runs on a slave."""
        context = self._local.context
        if context is None or context.results is None:
            if context is None and self._in_another_thread():
                raise _from_another_thread("return_object")
            self.process_result(result)
            return
        kind = type(result)
        if kind not in self._returnable:
            if kind is Null_result_command:
                return  # it would run as nothing on the master: it need not travel
            if not callable(getattr(result, "run", None)):
                raise TypeError(
                    "return_object() takes a Result_command (an object with run(processor, "
                    f"memo)), not {describe(result)}"
                )
            self._returnable.add(kind)
        context.results.append(result)

    # Data for the slaves -----------------------------------------------------------------

    def send_data_to_slaves(self, name: str | None = None, value: Any = None) -> None:
        """Store ``value`` as ``name`` in the data store of every slave, once each.

        Queued commands stay queued. A slave that replaces a dead one gets the data too: the
        last value sent under each name (the master keeps no other).
        """
        self.assert_on_master()
        self._refuse_nested(
            "send_data_to_slaves", "send data before run_queue(), or once it has returned"
        )
        name = data_name(name)  # refused here, on the master, before anything is sent
        command = Slave_storage_command()
        command.add(name, value)
        try:
            self.run_command_globally(command)
        except UnpicklableError:  # named as the command that carries it: name the data
            if wire.find_unpicklable(value) is None:
                raise  # (it pickles: a slave could not rebuild it, and says why)
            raise wire.unpicklable_error(f"the data {name!r}", value, DATA_ADVICE) from None

    def fetch_data(self, name: str | None = None) -> Any:
        """The data sent under ``name`` to this slave (on the master, what the master put in its
        own store: ``send_data_to_slaves`` fills the slaves' stores)."""
        try:
            return getattr(self.data_store, name)  # type: ignore[arg-type]
        except AttributeError:
            if self._context() is not None:
                raise
            # Not the store's "send it first with send_data_to_slaves": data sent so is in the
            # slaves' stores, which are theirs.
            raise AttributeError(
                f"no data named {name!r} is in the master's data store: send_data_to_slaves() "
                "stores data in the slaves' stores, for commands to read with fetch_data(); the "
                "master reads in its own store only what it put there itself "
                f"(fetch_data_store().{name} = value)"
            ) from None

    # Lifecycle ---------------------------------------------------------------------------

    def _started_scheduler(self) -> Scheduler:
        scheduler = self._scheduler
        if scheduler is not None and scheduler.transport is self._transport:
            return scheduler  # (the path of every run but the first)
        transport = self._started_transport()
        if self._scheduler is None or self._scheduler.transport is not transport:
            settings = self.settings
            self._scheduler = Scheduler(
                transport,
                self._deliver,
                self.setup_commands,
                retries=settings["retries"],
                timeout=settings["timeout"],
                on_failure=settings["on_failure"],
                liveness=settings["liveness"],
                tell=self._tell,
            )
            self._scheduler.timeline = self._program_timeline()
        return self._scheduler

    def _program_timeline(self) -> Timeline | None:
        """The timeline that the option ``timeline`` asks for (made on first use)."""
        if self._timeline is None and self.settings["timeline"] is not None:
            from multi.timeline import Timeline  # (python -m multi.timeline runs it)

            self._timeline = Timeline.of(self.settings["timeline"])
        return self._timeline

    def _tell(self, news: str) -> None:
        """Say a line of the engine's news on stderr, off the bar: something went wrong that
        the run survived, which no verbosity hides."""
        self._progress.clear()
        print(f"multi: {news}", file=sys.stderr, flush=True)

    def _started_transport(self) -> Transport:
        if self._transport is None:
            transport = self.make_transport()
            try:
                transport.start()
            except BaseException as exc:  # (Ctrl-C included): stop the slaves that did start
                with suppress(Exception):  # (what failed to start is the error to report)
                    transport.kill()
                advice = self._start_advice(exc)
                if advice is not None:
                    add_note(exc, advice)
                raise
            self._transport = transport
            if self.slaves_in_process:  # routed while the slaves live, not at every run
                self._routing = capture.routing()
                self._routing.__enter__()
            for command in self._setup_commands:  # slaves started afresh get the data again
                self.run_command_globally(command)
        return self._transport

    def _start_advice(self, error: BaseException) -> str | None:
        """What to do when the system refused to start a slave (None for other errors)."""
        if isinstance(error, OSError) and error.errno == errno.EMFILE:
            try:
                import resource
            except ImportError:  # not on a POSIX system
                limit = "its limit"
            else:
                limit = f"its limit of {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
            return (
                f"the {self.fabric} fabric ran out of file descriptors while it started "
                f"{self._processor_size} slaves ({limit}, where each slave takes a few); the "
                "slaves that had started are stopped: raise the limit (ulimit -n) or ask for "
                "fewer slaves"
            )
        refused = isinstance(error, OSError) and error.errno in (errno.EAGAIN, errno.ENOMEM)
        if refused or (isinstance(error, RuntimeError) and "can't start new thread" in str(error)):
            return (
                f"the system refused to start one of the {self._processor_size} slaves of the "
                f"{self.fabric} fabric; the slaves that had started are stopped: ask for fewer "
                f"slaves (this machine has {usable_cores()} usable cores)"
            )
        return None

    def setup_commands(self) -> list[Slave_command]:
        """What a slave started afresh runs first, to hold the data the others hold."""
        return list(self._setup_commands)

    def stop_slaves(self, kill: bool = False, *, status: int = 0) -> None:
        """Stop the slaves (at once with ``kill``, else once they have left); the next run
        starts fresh ones. ``status`` is the one the program ends with, if stopping them must
        end the whole job (MPI slaves that do not leave)."""
        self.assert_on_master()
        self._refuse_nested(
            "stop_slaves",
            "call it once run_queue() has returned, or processor.exit() to end the program now",
        )
        self._drop_transport(kill=kill, status=status)

    def before_stop(self, finish: Callable[[BaseException | None], None]) -> None:
        """Have ``finish`` called before ``run()`` stops the slaves, with what ends the program
        if it is interrupted or failed (else None): an executor open on the launcher's slaves
        finishes its calls then. The processor keeps ``finish`` weakly."""
        self._before_stop.append(weakref.WeakMethod(finish))

    def _drop_transport(self, kill: bool = False, status: int = 0) -> None:
        """Stop the slaves: at once with ``kill``, else once they have left; ``status`` is the
        one the program ends with (see ``Transport.stop``)."""
        transport, self._transport = self._transport, None
        if transport is None:
            return
        routing, self._routing = self._routing, None
        ending = sys.exc_info()[1]  # what ends the run or the program, if anything does
        try:
            if kill:
                transport.kill(status)
            else:
                transport.stop(STOP_SECONDS, status)
        except Exception as error:
            if ending is None:
                raise
            # (the first failure says what went wrong: a daemon gone fails the stop as well)
            failed = f"{type(error).__name__}: {error}"
            add_note(ending, f"stopping the slaves then failed too: {failed}")
        finally:
            if routing is not None:
                routing.__exit__(None, None, None)
            if not self.process_rank and self._program_timeline() is not None:
                self._write_timeline()  # (that of a program that ran no command: empty)

    def _write_timeline(self) -> None:
        """Write what the timeline noted: a file that cannot be written is the program's
        news, not its end (its events wait for the next write)."""
        timeline = self._timeline
        assert timeline is not None
        try:
            timeline.write()
        except OSError as error:
            self._tell(f"the timeline could not be written to {timeline.path}: {error}")

    def pre_run(self) -> None:
        """Note when the run started."""
        self.start_time = time.time()

    def post_run(self) -> None:
        """At verbosity 1 and above, print what each slave did and the overall runtime."""
        if Verbosity().level() >= 1 and self.start_time is not None:
            if self.totals.commands:
                print(f"\n{self.totals.table()}")
            print(f"\nOverall runtime: {self.get_time_delta(self.start_time, time.time())}\n")

    @staticmethod
    def get_time_delta(start_time: float, end_time: float) -> str:
        """The time between two instants as H:MM:SS."""
        return str(datetime.timedelta(seconds=round(end_time - start_time)))

    def run(self) -> None:
        """Run the application: call the callback's ``init_master``, then shut the slaves down.

        ``sys.exit(n)`` in the application ends the program with status ``n``; any other
        exception goes to the callback's ``handle_exception``.
        """
        if self.process_rank != 0:
            self.serve()
            return
        if self.callback is None:
            raise MultiError("this processor has no Application_callback: use load_multiprocessor")
        if self._running:  # the launcher runs the program, which calls run() itself
            self._run_application()
            return
        self.pre_run()
        self._running = True
        try:
            self._started_transport()  # slaves boot while the application prepares
            self._run_application()
        finally:
            self._running = False
            ending = sys.exc_info()[1]
            completed = ending is None or isinstance(ending, SystemExit)
            try:
                self._finish_before_stop(None if completed else ending)
            except BaseException as error:  # (Ctrl-C while calls finish: they are dropped)
                ending, completed = error, False
                raise
            finally:
                self._drop_transport(kill=not completed, status=ending_status(ending))
                if completed:
                    self.post_run()

    def _finish_before_stop(self, ending: BaseException | None) -> None:
        """Call what ``before_stop`` was given, newest first."""
        while self._before_stop:
            finish = self._before_stop.pop()()
            if finish is not None:
                finish(ending)

    def _run_application(self) -> None:
        callback = self.callback
        if any(running is callback for running in self._applications):
            raise MultiError(
                "run() was called from the application that run() runs (its init_master): "
                "call processor.run() once, from the program's main code"
            )
        self._applications.append(callback)
        try:
            with boxed(self):
                try:
                    callback.init_master(self)  # type: ignore[union-attr]
                except Exception as exc:
                    callback.handle_exception(self, exc)  # type: ignore[union-attr]
        finally:
            self._applications.pop()

    def exit(self, status: int = 0) -> None:
        """Stop the slaves and end the program with ``status``.

        Called while a run is under way (from a result command), it drops the work the slaves
        hold rather than wait for it. Called by a command on a slave, it ends nothing but the
        command, with the ``SlaveExitError`` of a ``sys.exit`` there.
        """
        if self._local.context is None:
            if self._in_another_thread():
                raise _from_another_thread("exit")
            self._drop_transport(kill=self._run is not None, status=exit_status(SystemExit(status)))
        sys.exit(status)

    def abort(self) -> None:
        """Stop the slaves at once and end the program with a failure status (called by a
        command on a slave: as ``exit``)."""
        if self._local.context is None:
            if self._in_another_thread():
                raise _from_another_thread("abort")
            self._drop_transport(kill=True)
        sys.exit(1)

    def __del__(self) -> None:
        transport = getattr(self, "_transport", None)
        if transport is not None:
            transport.kill()

    @staticmethod
    def load_multiprocessor(
        processor_name: str,
        callback: Application_callback,
        processor_size: int | None = -1,
        verbosity: int = 1,
        **options: Any,
    ) -> Processor:
        """Load a fabric by name and make its processor (see ``multi.load_multiprocessor``)."""
        from multi.application import load_multiprocessor

        return load_multiprocessor(processor_name, callback, processor_size, verbosity, **options)


def _from_another_thread(name: str) -> MultiError:
    return MultiError(
        f"{name}() was called from a thread that runs no command: one that a command started, "
        "say. Call it in the command's run(), on the thread that runs it, with what the other "
        "threads computed"
    )


def _beside_a_run(name: str, of_an_executor: object) -> MultiError:
    if of_an_executor:
        return MultiError(
            f"{name}() was called while an executor runs its calls on this processor's "
            "slaves: the processor serves one of them at a time. Submit the work to the "
            "executor, or shut it down first"
        )
    return MultiError(
        f"{name}() was called from one thread of the master while run_queue() runs on "
        "another: a processor takes the master's calls from one thread at a time, whose "
        "run_queue() runs every command queued, another thread's too. Call it from the "
        "thread that runs the commands, or once run_queue() has returned (a lock of the "
        "application's around each thread's add_to_queue() and run_queue() does it); a "
        "thread that a command started hands what it computed to its command instead"
    )


def failure_policy(value: object) -> str:
    """A failure policy given for some runs (an executor's, a stream's), read by the rule of
    the option ``on_failure``; ``ValueError`` saying what it takes."""
    try:
        return one_of(ON_FAILURE)(str(value))
    except ValueError as exc:
        raise ValueError(f"option 'on_failure': {exc}") from None


def _on_a_slave_rank(name: str, rank: int, slaves: int) -> MultiError:
    return MultiError(
        f"{name}() was called on rank {rank}, a slave: under "
        f"mpiexec every rank runs the program up to processor.run(), where ranks 1 to {slaves} "
        "start serving the master. Call it in the master's program (the run() of the "
        "Application_callback's master), or where processor.rank() == 0"
    )


#: What ends a process in the place of death by SIGINT, as ``end_interrupted`` asks.
_interrupted_exits: list[Callable[[], object]] = []


def on_interrupted_exit(end: Callable[[], object]) -> None:
    """Have ``end`` end this process where Ctrl-C dropped the work as the program ended, in
    the place of death by SIGINT (``end_interrupted``): a fabric whose processes must not die
    by a signal (the master of mpiexec's ranks, see ``multi.mpi4py_processor``)."""
    _interrupted_exits.append(end)


def end_interrupted() -> None:
    """End the program as Ctrl-C ends one, once its exit handlers have run: as Python does,
    killed by SIGINT (130 to a shell), unless a fabric gave its own way
    (``on_interrupted_exit``)."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    for end in _interrupted_exits:
        end()
    if os.name != "posix":
        os._exit(128 + signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    os.kill(os.getpid(), signal.SIGINT)


def ending_status(error: BaseException | None) -> int:
    """The status a program ends with if ``error`` ends it: sys.exit's own, Ctrl-C's as a
    shell sees it (128 + SIGINT), else a failure."""
    if error is None:
        return 0
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return exit_status(error) if isinstance(error, SystemExit) else 1


def usable_cores() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _checked_size(size: Any) -> int | None:
    """The number of slaves asked for, None for the default, or a clear error."""
    if size is None or (size == -1 and not isinstance(size, bool)):
        return None
    if not isinstance(size, bool):
        with suppress(TypeError):
            size = operator.index(size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ProcessorSizeError(
            f"processor_size must be a number of slaves >= 1, or -1 for one per usable core; "
            f"got {size!r}"
        )
    return size
