"""The processor: the master's queue, memo map and data store, and the lifecycle of a run.

Application code queues commands with ``add_to_queue`` and runs them with ``run_queue``; the
shared scheduler sends them to the fabric's slaves and delivers what comes back here, on the
master's main thread. A fabric subclasses ``Processor`` only to say how many slaves it can give
and which transport moves the work (``make_transport``).
"""

from __future__ import annotations

import datetime
import gc
import operator
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, ClassVar

from multi import capture, progress
from multi.commands import Exit_command, Slave_command, Slave_storage_command
from multi.errors import MultiError, ProcessorSizeError, add_note, describe
from multi.options import Option, positive_int, resolve
from multi.results import Null_result_command
from multi.scheduler import Scheduler, Task
from multi.slave import Outcome, Slave_context
from multi.statistics import Run_statistics
from multi.verbosity import Verbosity

if TYPE_CHECKING:
    from multi.application import Application_callback
    from multi.memo import Memo
    from multi.transport import Transport

STOP_SECONDS = 2.0


class Data_store:
    """Named data that the master sent to this slave with ``send_data_to_slaves``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"no data named {name!r} is in this data store: send it first with "
            f"send_data_to_slaves({name!r}, value) on the master"
        )


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
            positive_int,
        ),
        Option(
            "progress",
            "a progress bar while run_queue works: auto (on a terminal), yes or no",
            "auto",
            progress.setting,
            progress.SETTINGS,
        ),
    )
    #: Whether slaves are threads of the master, whose output is routed per thread.
    slaves_in_process: ClassVar[bool] = True
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
        self._processor_size = self.slave_count(_checked_size(processor_size))
        self.command_queue: list[Slave_command] = []
        self.memo_map: dict[int, Memo] = {}
        self._memo_users: dict[int, int] = {}
        self._master_store = Data_store()
        self._local = threading.local()
        self._transport: Transport | None = None
        self._setup_commands: list[Slave_command] = []
        self._queueable: set[type] = set()  # command classes found fit to queue
        self.NULL_RESULT = Null_result_command(processor=self)
        self.start_time: float | None = None
        self._running = False
        self._scheduler: Scheduler | None = None
        #: What the last ``run_queue`` did, and all of them: per slave, commands, time, bytes.
        self.last_run: Run_statistics | None = None
        self.totals = Run_statistics()
        self._progress = progress.Progress("no", 0)

    # What a fabric provides ------------------------------------------------------------------

    def slave_count(self, requested: int | None) -> int:
        """The number of slaves to run for a request (None: the fabric's default)."""
        return requested if requested is not None else usable_cores()

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
        context = self._context()
        return context.rank if context is not None else self.process_rank

    def on_master(self) -> bool:
        """Whether this code runs as the master (and not as a slave's command)."""
        return self._context() is None and self.process_rank == 0

    def on_slave(self) -> bool:
        """Whether this code runs on a slave."""
        return not self.on_master()

    def assert_on_master(self) -> None:
        """Fail clearly when master-only API is called from a slave's command."""
        if self.process_rank or getattr(self._local, "context", None) is not None:
            caller = sys._getframe(1).f_code.co_name
            raise MultiError(
                f"{caller}() can only be called on the master, not in a command on slave "
                f"{self.rank()}"
            )

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
        return getattr(self._local, "context", None)

    @contextmanager
    def slave_context(self, context: Slave_context) -> Iterator[None]:
        """Run the code inside as the slave that ``context`` describes (on this thread)."""
        previous = self._context()
        self._local.context = context
        try:
            yield
        finally:
            self._local.context = previous

    # The queue ---------------------------------------------------------------------------

    def add_to_queue(self, command: Slave_command, memo: Memo | None = None) -> None:
        """Queue a command; its results will find ``memo`` on the master."""
        self.assert_on_master()
        if type(command) not in self._queueable:
            self._check_queueable(command)
        memo_id = memo.memo_id() if memo is not None else None
        command.memo_id = memo_id
        if memo_id is not None:
            self.memo_map[memo_id] = memo  # type: ignore[assignment]
            self._memo_users[memo_id] = self._memo_users.get(memo_id, 0) + 1
        self.command_queue.append(command)

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

        Returns when all have finished. If one raised, everything that finished is delivered
        first, then its exception is raised here and the queue is emptied.
        """
        self.assert_on_master()
        if not self.command_queue:
            return
        commands, self.command_queue = self.command_queue, []
        tasks = [Task(i, command, command.memo_id) for i, command in enumerate(commands)]
        self._run_tasks(tasks)

    def run_command_globally(self, command: Slave_command) -> None:
        """Run one copy of ``command`` on every slave, and deliver what each returns."""
        self.assert_on_master()
        if type(command) not in self._queueable:
            self._check_queueable(command)
        ranks = self._started_transport().ranks
        self._run_tasks([Task(i, command, rank=rank) for i, rank in enumerate(ranks)])

    def _run_tasks(self, tasks: list[Task]) -> None:
        scheduler = self._started_scheduler()
        self._progress = progress.Progress(self.settings["progress"], len(tasks))
        # The collector leaves the objects that existed before the run alone while it goes on:
        # with many tiny commands, full collections traversing all of the application's data
        # took a third of the master's time. Those that became garbage go after the run.
        spare_old_objects = gc.isenabled()
        if spare_old_objects:
            gc.freeze()
        try:
            if self.slaves_in_process:
                with capture.routing():
                    scheduler.run(tasks)
            else:
                scheduler.run(tasks)
        except Exception:
            self._forget_queue()
            raise
        finally:
            if spare_old_objects:
                gc.unfreeze()
            if not scheduler.drained:  # interrupted: slaves may still hold work, start afresh
                self._drop_transport(kill=True)
            for task in tasks:
                if not task.delivered:
                    self._release_memo(task.memo_id)
            self._progress.close()
            self.last_run = scheduler.statistics
            self.totals.add(scheduler.statistics)
            if Verbosity().level() >= 2:
                print(scheduler.statistics.one_line(), file=sys.stderr)

    def _forget_queue(self) -> None:
        for command in self.command_queue:
            self._release_memo(command.memo_id)
        self.command_queue = []

    # Delivery on the master --------------------------------------------------------------

    def _deliver(self, task: Task, outcome: Outcome) -> None:
        """Replay a command's output, run its results, then raise its exception if it had one.

        The progress bar leaves the screen while anything is written.
        """
        bar = self._progress
        cleared = False
        if outcome.output:
            bar.clear()
            cleared = True
            prefix = capture.prefixes(outcome.rank, self._processor_size, Verbosity().level())
            capture.replay(outcome.output, prefix)
        first_error: Exception | None = None
        for result in outcome.results:
            if not cleared:
                bar.clear()
                cleared = True
            try:
                self._run_result(result, task)
            except Exception as exc:
                add_note(
                    exc,
                    f"raised on the master by {describe(result)}, a result of "
                    f"{describe(task.command)}",
                )
                first_error = first_error or exc
        self._release_memo(task.memo_id)
        bar.advance(redraw=cleared)
        if outcome.failure is not None:
            failure = outcome.failure
            raise failure if isinstance(failure, BaseException) else failure.exception()
        if first_error is not None:
            raise first_error

    def _run_result(self, result: Any, task: Task | None) -> None:
        memo_id = result.memo_id
        if memo_id is None and task is not None:
            memo_id = task.memo_id
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

    def process_result(self, result: Any) -> None:
        """Run a result command on the master with the memo that it names."""
        self._run_result(result, None)

    def _release_memo(self, memo_id: int | None) -> None:
        if memo_id is None or memo_id not in self._memo_users:
            return
        self._memo_users[memo_id] -= 1
        if self._memo_users[memo_id] <= 0:
            del self._memo_users[memo_id]
            self.memo_map.pop(memo_id, None)

    def return_object(self, result: Any) -> None:
        """Hand a result back to the master; called by a command while it runs on a slave."""
        context = self._context()
        if context is None or context.outcome is None:
            self.process_result(result)
            return
        if type(result) is Null_result_command:
            return  # it would run as nothing on the master: it need not travel
        if not callable(getattr(result, "run", None)):
            raise TypeError(
                f"return_object() takes a Result_command (an object with run(processor, memo)), "
                f"not {describe(result)}"
            )
        context.outcome.results.append(result)

    # Data for the slaves -----------------------------------------------------------------

    def send_data_to_slaves(self, name: str | None = None, value: Any = None) -> None:
        """Store ``value`` as ``name`` in the data store of every slave, once each.

        Queued commands stay queued. A slave that replaces a dead one gets the data too.
        """
        self.assert_on_master()
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"the name of the data must be a Python identifier, not {name!r}")
        command = Slave_storage_command()
        command.add(name, value)
        self.run_command_globally(command)
        self._setup_commands.append(command)

    def fetch_data(self, name: str | None = None) -> Any:
        """The data sent under ``name`` to this slave (the master's own store on the master)."""
        return getattr(self.data_store, name)  # type: ignore[arg-type]

    # Lifecycle ---------------------------------------------------------------------------

    def _started_scheduler(self) -> Scheduler:
        transport = self._started_transport()
        if self._scheduler is None or self._scheduler.transport is not transport:
            self._scheduler = Scheduler(transport, self._deliver, self.settings["retries"])
        return self._scheduler

    def _started_transport(self) -> Transport:
        if self._transport is None:
            transport = self.make_transport()
            transport.start()
            self._transport = transport
            for command in self._setup_commands:  # slaves started afresh get the data again
                self.run_command_globally(command)
        return self._transport

    def setup_commands(self) -> list[Slave_command]:
        """What a slave started afresh runs first, to hold the data the others hold."""
        return list(self._setup_commands)

    def _drop_transport(self, kill: bool = False) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        if kill:
            transport.kill()
        else:
            transport.stop(STOP_SECONDS)

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
        completed = False
        try:
            self._started_transport()  # slaves boot while the application prepares
            self._run_application()
            completed = True
        except SystemExit:
            completed = True
            raise
        finally:
            self._running = False
            self._drop_transport(kill=not completed)
            if completed:
                self.post_run()

    def _run_application(self) -> None:
        callback = self.callback
        try:
            callback.init_master(self)  # type: ignore[union-attr]
        except Exception as exc:
            callback.handle_exception(self, exc)  # type: ignore[union-attr]

    def exit(self, status: int = 0) -> None:
        """Stop the slaves and end the program with ``status``."""
        self._drop_transport()
        sys.exit(status)

    def abort(self) -> None:
        """Stop the slaves at once and end the program with a failure status."""
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
