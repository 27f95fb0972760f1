"""The ``multiprocessing`` fabric: slave processes that the processor creates and manages.

::

    master main thread                                  slave process (one per rank)
    ──────────────────                                  ────────────────────────────
    send(rank, frames) ─> channel (non-blocking) ─────> receive ─> execute ─> reply
    receive() <── one selector: every channel, readable or writable,             │
                  and every process sentinel <────────── report ─────────────────┘
                        │
                        └── a sentinel fires: the slave ended; say how, and which command

The master writes and reads every slave's socket without blocking, from one selector (see
``multi.channel``): it never waits on a slave that is itself waiting to write, whatever the
size of socket buffers, and needs no thread of its own. Each slave notes the command it runs,
and since when, in shared memory, so that a crash or a timeout names its command. Slaves
ignore SIGINT (Ctrl-C belongs to the master, which stops them), and end themselves if the
master disappears. A slave never runs the application's main script: what the script
defines reaches it by value (see ``multi.wire``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from multiprocessing import reduction
from multiprocessing.process import BaseProcess
from typing import Any

from multi import descriptors, task_memory, wire
from multi.application import Processor_box
from multi.channel import Channel, Undecodable
from multi.errors import ending
from multi.logs import Log_forwarding
from multi.options import Option
from multi.processor import Processor
from multi.slave import (
    Batch,
    Report,
    Slave_context,
    by_sigint,
    die_by,
    raise_on_sigint,
    report_from_wire,
    seal,
    serve,
    unreadable_on_master,
)
from multi.slave_process import end_group, end_with_parent
from multi.transport import Message, Payload, Slave_ended, Slave_lost, Transport
from multi.wake_pipe import Wake_pipe

START_METHODS = ("forkserver", "spawn", "fork")
#: How long a receiver looks for a message before it blocks: the master (see ``_spin``), and a
#: slave after each batch (see ``Channel.receive``).
POLL_SECONDS = 100e-6
#: The master's word to a slave to leave: a message that no batch is (a slave compares the
#: frames it reads with it, before it rebuilds them).
GOODBYE = wire.dumps(None)
#: How often a slave beats, and checks that its master is still there.
HEARTBEAT_SECONDS = 0.5
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_READ | selectors.EVENT_WRITE


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

    def __init__(self, process: BaseProcess, channel: Channel) -> None:
        self.process = process
        self.channel = channel

    def name(self) -> str:
        return f"(pid {self.process.pid})"


class Multiprocessing_transport(Transport):
    """Slave processes, a socket pair each, all driven by one selector."""

    pickled = True
    replaceable = True
    heartbeats = True
    wakes = True

    def __init__(self, processor: Multiprocessing_processor, slaves: int) -> None:
        self.processor = processor
        self.slaves = slaves
        self.context = multiprocessing.get_context(processor.settings["start_method"])
        self.task = self.context.RawArray("q", slaves + 1)  # the command each rank runs
        self.since = self.context.RawArray("d", slaves + 1)  # and since when (monotonic)
        self.heartbeat = self.context.RawArray("d", slaves + 1)  # each slave's last beat
        self._slaves: dict[int, _Slave] = {}
        self._selector = selectors.DefaultSelector()
        self._woken = Wake_pipe()
        self._selector.register(self._woken, READ, (None, False))
        self._ready: deque[tuple[int, Message]] = deque()
        #: Where each rank's descriptors 1 and 2 point while it runs commands: files without a
        #: name, which its slaves inherit (see ``multi.descriptors``).
        self._files: dict[int, descriptors.Files] = {}

    @property
    def ranks(self) -> Sequence[int]:
        return sorted(self._slaves)

    def start(self) -> None:
        for rank in range(1, self.slaves + 1):
            self.replace(rank)

    def replace(self, rank: int) -> None:
        files = self._files.get(rank)
        if files is None:  # (a replacement gets the files of the rank's slaves before it)
            files = self._files[rank] = descriptors.unnamed_files()
        self.task[rank] = task_memory.IDLE
        self.heartbeat[rank] = time.monotonic()  # (it beats once it has started)
        ours, theirs = socket.socketpair()
        forked = self.context.get_start_method() == "fork"
        # A forked slave is a copy of the master, the master's ends of the slaves' sockets
        # included (its own among them): it closes them, or the end of the master would never
        # hang up its socket (see ``_watch_master``); and the engine's wake pipe.
        masters: list[socket.socket | int] = []
        if forked:
            masters = [ours, *(slave.channel.sock for slave in self._slaves.values())]
            masters += self._woken.descriptors()
        with _interrupts_held():  # (Ctrl-C comes once the slave is known, to be stopped)
            try:
                process = self.context.Process(
                    target=_slave_main,
                    name=f"multi-slave-{rank}",
                    args=(wire.dumps(type(self.processor)), rank, self.slaves, theirs,
                          self.task, self.since, self.heartbeat, _Inherited(files), masters),
                    daemon=True,
                )  # fmt: skip
                if forked:  # a copy: nothing of __main__ to hide
                    process.start()
                else:
                    with _main_unseen():
                        process.start()
            except BaseException:  # (the rank's files stay with the transport, which closes them)
                ours.close()
                raise
            finally:
                theirs.close()
            ours.setblocking(False)
            channel = Channel(ours)
            self._selector.register(channel, READ, (rank, False))
            self._selector.register(process.sentinel, READ, (rank, True))
            self._slaves[rank] = _Slave(process, channel)

    def running(self, rank: int) -> tuple[int, float] | None:
        task = self.task[rank]
        return (task, self.since[rank]) if task >= 0 else None

    def silent_for(self, rank: int) -> float | None:
        beat: float = self.heartbeat[rank]
        return time.monotonic() - beat

    def send(self, rank: int, payload: Payload) -> None:
        slave = self._slaves.get(rank)
        if slave is None:  # it ended, and its loss, queued, takes this batch back
            return
        channel = slave.channel
        writing = channel.pending()
        self.traffic[rank, "sent"] += channel.put(payload)  # type: ignore[arg-type]
        if not writing and not self._write(rank):
            self._selector.modify(channel, WRITE, (rank, False))

    def _write(self, rank: int) -> bool:
        """Write to a slave what its socket takes; True if nothing is left (or it is gone:
        its sentinel or the end of its socket will say so)."""
        try:
            return self._slaves[rank].channel.write()
        except OSError:
            return True

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            events = self._spin()
            if not events:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                events = self._selector.select(left)
                if not events and deadline is not None and time.monotonic() >= deadline:
                    return None
            if len(events) > 1:
                events.sort(key=_sentinels_last)  # reports first
            woken = False
            for key, mask in events:
                rank, is_sentinel = key.data
                if rank is None:
                    woken = self._woken.take()
                    continue
                if rank not in self._slaves:
                    continue
                if is_sentinel:
                    self._take(rank)
                    if rank in self._slaves:
                        self._ready.append((rank, self._lost(rank)))
                    continue
                if mask & selectors.EVENT_WRITE and self._write(rank):
                    self._selector.modify(key.fileobj, READ, key.data)
                if mask & selectors.EVENT_READ:
                    self._take(rank)
            if woken and not self._ready:
                return None
        return self._ready.popleft()

    def _spin(self) -> list[tuple[selectors.SelectorKey, int]]:
        """Look for events for a few microseconds before blocking on them: a quick answer is
        then taken without the cost of sleeping and waking up, and a slow one costs that little
        CPU."""
        deadline = time.perf_counter() + POLL_SECONDS
        while not (events := self._selector.select(0)):
            if time.perf_counter() >= deadline:
                break
        return events

    def _take(self, rank: int) -> None:
        """Read what a slave sent; queue its reports, or the news that it ended."""
        slave = self._slaves[rank]
        channel = slave.channel
        before = channel.received  # (a replaced slave's channel counts from 0 again)
        try:
            messages = channel.read()
        except (EOFError, OSError):
            self._ready.append((rank, self._lost(rank)))
            return
        self.traffic[rank, "received"] += channel.received - before
        for message in messages:
            report = self._report(rank, message)
            self._ready.append((rank, report))
            if report.lost is not None:  # the slave ends after this report: forget it now
                self._retire(rank)
                return

    def _report(self, rank: int, message: Any) -> Report:
        if isinstance(message, Undecodable):
            return unreadable_on_master(rank, message.error)
        return report_from_wire(message)

    def _lost(self, rank: int) -> Slave_lost:
        """Name how a slave ended, and the command it was running."""
        task = self.task[rank]
        slave = self._retire(rank)
        reason = f"{slave.name()} {ending(slave.process.exitcode)}"
        output = descriptors.read_left(self._files[rank])  # (idle too: see Scheduler._on_lost)
        return Slave_lost.showing(rank, reason, task, output)

    def _retire(self, rank: int) -> _Slave:
        """Forget a slave that ended, or is made to: its process group is killed (itself, if it
        lives, and what its commands left running), then its process reaped."""
        slave = self._slaves.pop(rank)
        self._selector.unregister(slave.channel)
        self._selector.unregister(slave.process.sentinel)
        _kill_group(slave.process)
        slave.process.join(1.0)
        slave.channel.close()
        self.task[rank] = task_memory.IDLE
        return slave

    def end_slave(self, rank: int) -> Slave_ended:
        self._ready = deque(item for item in self._ready if item[0] != rank)
        running = self.task[rank] >= 0
        slave = self._retire(rank)
        output = descriptors.read_left(self._files[rank]) if running else None
        return Slave_ended(slave.name(), output)

    # Stopping -----------------------------------------------------------------------------

    def wake(self) -> None:
        self._woken.wake()

    def stop(self, timeout: float, status: int = 0) -> None:
        for slave in self._slaves.values():
            slave.channel.put(GOODBYE)
            with suppress(OSError):  # it is gone already
                slave.channel.write()
        self._join(timeout)

    def kill(self, status: int = 1) -> None:
        for slave in self._slaves.values():
            _kill_group(slave.process)
        self._join(1.0)

    def _join(self, timeout: float) -> None:
        """Wait until every slave has ended or ``timeout`` has passed, then retire them all."""
        deadline = time.monotonic() + timeout
        waiting = [slave.process.sentinel for slave in self._slaves.values()]
        while waiting and (left := deadline - time.monotonic()) > 0:
            ended = multiprocessing.connection.wait(waiting, left)
            waiting = [sentinel for sentinel in waiting if sentinel not in ended]
        for rank in list(self._slaves):
            self._retire(rank)
        self._selector.close()
        self._woken.close()
        for fd in (fd for files in self._files.values() for fd in files):
            os.close(fd)
        self._files.clear()


class _Inherited:
    """Descriptors that a slave process inherits however it starts: multiprocessing passes them
    with the process (``DupFd``), as it passes a socket; a fork has them already."""

    def __init__(self, fds: descriptors.Files) -> None:
        self.fds = fds

    def __reduce__(self) -> tuple[Any, ...]:
        out, err = self.fds
        return _inherited, (reduction.DupFd(out), reduction.DupFd(err))


def _inherited(out: Any, err: Any) -> _Inherited:
    return _Inherited((out.detach(), err.detach()))


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C while a slave starts; it comes once the ``with`` block is over.

    Raised in the hooks that run around a fork (logging's, which releases its lock there),
    KeyboardInterrupt is printed by Python and dropped: the program went on as though nothing
    were pressed. A slave also starts with it held (the mask is inherited), until it leads a
    process group of its own, out of the terminal's reach (``_slave_main``). Only the main
    thread's mask is held: Python runs its handlers on that thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextmanager
def _main_unseen() -> Iterator[None]:
    """Hide where the main module comes from while multiprocessing starts a process (or its
    fork server): its preparation of the child would run the application's script there again,
    top-level code and all (``__mp_main__``), or fail where the script has no file (standard
    input, a notebook). What the slaves need of ``__main__`` travels by value instead."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    names: tuple[str, ...] = ("__file__", "__spec__")
    saved = {name: vars(main)[name] for name in names if name in vars(main)}
    vars(main).pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        vars(main).update(saved)


def _kill_group(process: BaseProcess) -> None:
    """SIGKILL a slave's process group: itself and what its commands started. Called before the
    slave is reaped, so that its id cannot have passed to another process; a slave that has not
    made its group yet is killed alone."""
    if process.pid is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        if process.exitcode is None:
            process.kill()


def _sentinels_last(event: tuple[selectors.SelectorKey, int]) -> bool:
    return bool(event[0].data[1])


# The slave process --------------------------------------------------------------------------


def _slave_main(
    fabric: wire.Frames,
    rank: int,
    slaves: int,
    sock: socket.socket,
    task: Any,
    since: Any,
    heartbeat: Any,
    files: _Inherited,
    masters: list[socket.socket | int],
) -> None:
    """Run commands for the master until it says stop, or disappears.

    ``fabric`` is the processor's class, pickled by ``wire`` in case the main script defines it.
    ``masters`` are the master's ends of the slaves' sockets, and the descriptors of its wake
    pipe, which a forked slave holds too.
    """
    _detach()
    # A daemon process to multiprocessing, which then ends it with the master, but one whose
    # commands may start processes of their own (a Pool), as on every other fabric: a daemon
    # may not, and multiprocessing asks this process's own flag.
    multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]
    raise_on_sigint()  # (``kill -INT``: Ctrl-C at a terminal goes to the master's group)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # (held while it started)
    for master in masters:
        if isinstance(master, int):
            os.close(master)
        else:
            master.close()
    _watch_master(rank, heartbeat, sock)
    cls: type[Multiprocessing_processor] = wire.loads(fabric)
    processor = cls.__new__(cls)
    # A slave from the start (threads that its commands start are on this slave too): it
    # starts no slaves, and does not check the machine as its master did.
    processor.process_rank = rank
    cls.__init__(processor, processor_size=slaves, callback=None, start_method=_current_method())
    Processor_box().processor = processor
    context = Slave_context(rank, slaves, processor.data_store, signalled=by_sigint)
    context.descriptors = descriptors.Descriptor_capture(files.fds, rank)
    context.logs = Log_forwarding(rank)
    channel = Channel(sock, decode=False)

    def receive() -> list[Any] | None:
        try:
            frames: list[Any] = channel.receive(POLL_SECONDS)
        except (EOFError, OSError):  # the master is gone
            return None
        return None if frames == GOODBYE else frames

    def reply(report: Report, batch: Batch | None) -> None:
        channel.send(seal(report, batch[1] if batch is not None else ()))

    clock = time.monotonic

    def note(task_id: int) -> None:
        since[rank] = clock()
        task[rank] = task_id

    try:
        serve(processor, context, receive, reply, note, channel.at_hand)
    except OSError:
        pass  # the master is gone
    except KeyboardInterrupt:  # a SIGINT as it waited (one under a command ends the batch)
        sys.stdout.flush()
        sys.stderr.flush()
        die_by(signal.SIGINT)  # (its master names the signal; Python printed a traceback)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _current_method() -> str:
    return multiprocessing.get_start_method(allow_none=True) or _default_start_method()


def _detach() -> None:
    """Lead a process group of its own: Ctrl-C on the terminal reaches the master alone (which
    stops the slaves), and stopping the group stops what the slave's commands started too."""
    with suppress(OSError):
        os.setpgid(0, 0)


def _watch_master(rank: int, heartbeat: Any, sock: socket.socket) -> None:
    """Beat every ``HEARTBEAT_SECONDS``, and end this slave's whole process group once the
    master is gone (its end of the socket hangs up), even while a command runs.

    The parent is no sign: with forkserver it is the fork server, which lives as long as any
    slave does.
    """
    # (the kernel signals this process too: the one that runs first ends it; the thread below
    # is this slave's watch, which a watch of the parent would only repeat)
    end_with_parent(watch=False)
    hangup = select.poll()
    hangup.register(sock.fileno(), select.POLLHUP)  # never the data, which the slave reads

    def watch() -> None:
        clock = time.monotonic
        while True:
            heartbeat[rank] = clock()
            if hangup.poll(HEARTBEAT_SECONDS * 1000):
                end_group()

    threading.Thread(target=watch, name="multi-watch-master", daemon=True).start()


# The fabric ---------------------------------------------------------------------------------


class Multiprocessing_processor(Processor):
    """Slaves are ``processor_size`` processes (one per usable core by default)."""

    fabric = "multiprocessing"
    slaves_in_process = False
    slave_kind = "process"
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

    @classmethod
    def check_available(cls) -> None:
        if sys.platform == "win32" or not hasattr(select, "poll"):
            raise OSError(
                "the multiprocessing fabric needs a POSIX system (Linux, macOS, BSD): its "
                "master waits on slave processes and their sockets together; use the thread "
                "fabric here, or mpi4py"
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
