"""The ``multiprocessing`` fabric: slave processes that the processor creates and manages.

::

    master main thread                                 slave process (one per rank)
    ──────────────────                                 ────────────────────────────
    send(rank, batch) ──small──> socket pair ────────> receive ─> execute ─> reply
                      ──large──> sender thread ──┘                              │
    receive() <── wait(connections + sentinels) <────────── outcomes ───────────┘
                        │
                        └── a sentinel fires: the slave died; report it, start another

A batch too large for the socket's buffer goes through a sender thread, so that the master
keeps reading outcomes while it writes (a slave blocked on its reply never blocks the master).
Each slave notes the command it runs in shared memory, so that a crash names its command.
Slaves ignore SIGINT (Ctrl-C belongs to the master, which stops them), and end themselves
if the master disappears.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import select
import selectors
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from multi import wire
from multi.application import Processor_box
from multi.options import Option
from multi.processor import Processor
from multi.slave import Batch, Report, Slave_context, seal, serve
from multi.transport import Message, Payload, Slave_lost, Transport

START_METHODS = ("forkserver", "spawn", "fork")
#: Messages up to this size are written by the master's thread itself: they fit in the
#: socket's buffer beside the other batch a slave may hold, so the write cannot block.
DIRECT_SEND_BYTES = 32 * 1024
#: How long a receiver looks for a message before it blocks (see ``_poll_briefly``).
POLL_SECONDS = 100e-6
#: How often an idle slave checks that its master is still there.
WATCHDOG_SECONDS = 0.5


def _start_method(text: str) -> str:
    if text not in START_METHODS:
        raise ValueError(f"expected one of {', '.join(START_METHODS)}, not {text!r}")
    if text not in multiprocessing.get_all_start_methods():
        raise ValueError(f"the start method {text!r} is not available on this system")
    return text


def _default_start_method() -> str:
    available = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in available else "spawn"


class _Slave:
    """The master's handle on one slave process."""

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.queued_sends = 0  # messages waiting in the sender thread
        self.outstanding = 0  # batches sent and not answered
        self.poller = _poller(connection)

    def name(self) -> str:
        return f"(pid {self.process.pid})"


class Multiprocessing_transport(Transport):
    """Slave processes, a socket pair each, and a sender thread for large batches."""

    pickled = True
    replaceable = True

    def __init__(self, processor: Multiprocessing_processor, slaves: int) -> None:
        self.processor = processor
        self.slaves = slaves
        self.context = multiprocessing.get_context(processor.settings["start_method"])
        self.task = self.context.RawArray("q", slaves + 1)  # the command each rank runs
        self.since = self.context.RawArray("d", slaves + 1)  # and since when (monotonic)
        self._slaves: dict[int, _Slave] = {}
        self._lock = threading.Lock()
        self._sends: queue.SimpleQueue[tuple[_Slave, wire.Frames] | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._selector = selectors.DefaultSelector()

    @property
    def ranks(self) -> Sequence[int]:
        return sorted(self._slaves)

    def start(self) -> None:
        for rank in range(1, self.slaves + 1):
            self.replace(rank)

    def replace(self, rank: int) -> None:
        ours, theirs = self.context.Pipe(duplex=True)
        self.task[rank] = -1
        process = self.context.Process(
            target=_slave_main,
            name=f"multi-slave-{rank}",
            args=(type(self.processor), rank, self.slaves, theirs, self.task, self.since,
                  os.getpid()),
            daemon=True,
        )  # fmt: skip
        process.start()
        theirs.close()
        self._selector.register(ours, selectors.EVENT_READ, (rank, False))
        self._selector.register(process.sentinel, selectors.EVENT_READ, (rank, True))
        self._slaves[rank] = _Slave(process, ours)

    def running(self, rank: int) -> tuple[int, float] | None:
        task = self.task[rank]
        return (task, self.since[rank]) if task >= 0 else None

    # Sending ------------------------------------------------------------------------------

    def send(self, rank: int, payload: Payload) -> None:
        slave = self._slaves[rank]
        frames: wire.Frames = payload  # type: ignore[assignment]
        size = wire.size(frames)
        self.traffic[rank, "sent"] += size
        slave.outstanding += 1
        with self._lock:
            direct = slave.queued_sends == 0 and size <= DIRECT_SEND_BYTES
            if not direct:
                slave.queued_sends += 1
        if direct:
            _write(slave.connection, frames)
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_large, name="multi-sender")
            self._sender.daemon = True
            self._sender.start()
        self._sends.put((slave, frames))

    def _send_large(self) -> None:
        while (item := self._sends.get()) is not None:
            slave, frames = item
            _write(slave.connection, frames)
            with self._lock:
                slave.queued_sends -= 1

    # Receiving ----------------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        busy = [rank for rank, slave in self._slaves.items() if slave.outstanding]
        if len(busy) == 1:  # only one can answer: wait on its socket, which closes if it dies
            slave = self._slaves[busy[0]]
            if not _poll_briefly(slave.poller) and not slave.poller.poll(_millis(timeout)):
                return None
            return self._read(busy[0])
        ready = [key.data for key, _ in self._selector.select(timeout)]
        for rank, is_sentinel in sorted(ready, key=lambda item: item[1]):  # reports first
            if rank in self._slaves:
                return (rank, self._lost(rank)) if is_sentinel else self._read(rank)
        return None

    def _read(self, rank: int) -> tuple[int, Message]:
        slave = self._slaves[rank]
        try:
            report, size = wire.receive(slave.connection)
        except (EOFError, OSError):
            return rank, self._lost(rank)
        self.traffic[rank, "received"] += size
        slave.outstanding -= 1
        if report.lost is not None:  # the slave ends after this report: forget it now
            self._retire(rank)
        return rank, report

    def _lost(self, rank: int) -> Slave_lost:
        """Name how a slave ended, and the command it was running."""
        task = self.task[rank]
        slave = self._retire(rank)
        reason = f"{slave.name()} {_ending(slave.process.exitcode)}"
        return Slave_lost(rank, reason, task if task >= 0 else None)

    def _retire(self, rank: int, kill: bool = False) -> _Slave:
        """Forget a slave that ended (or is made to), once its process is gone."""
        slave = self._slaves.pop(rank)
        self._selector.unregister(slave.connection)
        self._selector.unregister(slave.process.sentinel)
        if kill:
            slave.process.kill()
        slave.process.join(1.0)
        if slave.process.exitcode is None:  # its connection broke, yet it lives: end it
            slave.process.kill()
            slave.process.join(1.0)
        slave.connection.close()
        self.task[rank] = -1
        return slave

    def end_slave(self, rank: int) -> str:
        return self._retire(rank, kill=True).name()

    # Stopping -----------------------------------------------------------------------------

    def stop(self, timeout: float) -> None:
        if self._sender is not None:
            self._sends.put(None)
        for slave in self._slaves.values():
            _write(slave.connection, wire.dumps(None))
        self._join(timeout)

    def kill(self) -> None:
        for slave in self._slaves.values():
            if slave.process.exitcode is None:
                slave.process.terminate()
        self._join(1.0)

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for slave in self._slaves.values():
            slave.process.join(max(0.0, deadline - time.monotonic()))
        for rank in list(self._slaves):
            self._retire(rank, kill=self._slaves[rank].process.exitcode is None)
        self._selector.close()
        if self._sender is not None:
            self._sender.join(1.0)
            self._sender = None


def _millis(timeout: float | None) -> int | None:
    return None if timeout is None else max(0, round(timeout * 1000))


def _poller(connection: Connection) -> select.poll:
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return poller


def _poll_briefly(poller: select.poll) -> bool:
    """Look for a message for a few microseconds before blocking on it: a quick answer is then
    read without the cost of sleeping and waking up, and a slow one costs that little CPU.
    Whether one is there."""
    deadline = time.perf_counter() + POLL_SECONDS
    while not poller.poll(0):
        if time.perf_counter() >= deadline:
            return False
    return True


def _write(connection: Connection, frames: wire.Frames) -> None:
    with suppress(OSError):  # the slave is gone: its sentinel tells the receiving side
        wire.send(connection, frames)


def _ending(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-exitcode} ({name})"
    return f"exited with status {exitcode}"


# The slave process --------------------------------------------------------------------------


def _slave_main(
    cls: type[Multiprocessing_processor],
    rank: int,
    slaves: int,
    connection: Connection,
    task: Any,
    since: Any,
    master_pid: int,
) -> None:
    """Run commands for the master until it says stop, or disappears."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with(master_pid)
    processor = cls(processor_size=slaves, callback=None, start_method=_current_method())
    Processor_box().processor = processor
    context = Slave_context(rank, slaves, processor.data_store)
    poller = _poller(connection)

    def receive() -> Batch | Exception | None:
        try:
            _poll_briefly(poller)
            return wire.receive(connection)[0]
        except (EOFError, OSError):  # the master is gone
            return None
        except Exception as exc:  # the batch arrived, but does not unpickle here
            return exc

    def reply(report: Report, batch: Batch | None) -> None:
        wire.send(connection, seal(report, batch[1] if batch is not None else ()))

    clock = time.monotonic

    def note(task_id: int) -> None:
        since[rank] = clock()
        task[rank] = task_id

    try:
        serve(processor, context, receive, reply, note)
    except (EOFError, OSError, BrokenPipeError):
        pass  # the master is gone
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _current_method() -> str:
    return multiprocessing.get_start_method(allow_none=True) or _default_start_method()


def _end_with(master_pid: int) -> None:
    """Make this process end when the master does, even while a command runs."""
    if sys.platform == "linux":
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the parent ends
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_SECONDS)
            try:
                os.kill(master_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="multi-watchdog", daemon=True).start()


# The fabric ---------------------------------------------------------------------------------


class Multiprocessing_processor(Processor):
    """Slaves are ``processor_size`` processes (one per usable core by default)."""

    fabric = "multiprocessing"
    slaves_in_process = False
    options = (
        *Processor.options,
        Option(
            "start_method",
            f"how slave processes start: {', '.join(START_METHODS)} "
            "(fork is fastest, but unsafe once the master has threads)",
            _default_start_method(),
            _start_method,
            START_METHODS,
        ),
    )

    def make_transport(self) -> Transport:
        return Multiprocessing_transport(self, self._processor_size)

    def can_stop_commands(self) -> bool:
        return True

    def get_intro_string(self) -> str:
        return (
            f"Multiprocessing: {self._processor_size} slave processes and 1 master, started by "
            f"{self.settings['start_method']}."
        )
