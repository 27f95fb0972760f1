"""The ``pvm`` fabric: slaves are tasks of a PVM 3 virtual machine, on one host or several.

The master joins the PVM daemon that runs for its user, or starts one of its own (option
``daemon``; see ``multi.pvm_daemon``), spawns its slaves as tasks running this package, and
asks the daemon to tell it when any of them ends (``pvm_notify``)::

    master (main thread)                                 slave task (rank r)
    ────────────────────                                 ───────────────────
    replace(r): pvm_spawn, notify(exit) ─ SETUP ──────>  takes the master's place (path, cwd)
    send(r, frames) ──────── WORK (in place) ────────>   main thread: execute ──┐
    receive() <── select on PVM's sockets, then take <── OUTCOMES <─────────────┘
                 what came: OUTCOMES, NOTE (the command    watcher, while a command runs:
                 a slave runs), BEAT, EXITED (a daemon     NOTE, BEAT; leaves if the master
                 saw a slave end)                          is gone (a daemon's MASTER_GONE)

Messages go straight from task to task (``route=direct``) or through the daemons. A slave
that ends is named by its task id, host and process, with the command it ran: on the master's
host, as the slave showed it in memory they share (``multi.task_memory``); on another, from
its NOTE where it ran one long enough to send it, else the engine blames the first it held.
The engine retries that command and starts another slave in its rank. Neither side ever waits
inside libpvm: they wait in ``select`` on its sockets, which Ctrl-C interrupts.
"""

from __future__ import annotations

import atexit
import mmap
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from multi import descriptors, pvm_hosts, task_memory, wire
from multi.application import Processor_box
from multi.errors import MultiError, warn
from multi.logs import Log_forwarding
from multi.options import Option, file_to_read, one_of
from multi.processor import Processor
from multi.pvm_binding import MAX_MESSAGE, Pvm, library
from multi.pvm_binding import Message as Pvm_message
from multi.pvm_daemon import Own_daemon, find_daemon, remove_task_files, running_daemon
from multi.slave import (
    Batch,
    Report,
    Slave_context,
    never_signalled,
    rebuilt_report,
    refuse_on_its_own_slave,
    seal,
    serve,
)
from multi.slave_process import (
    end_group,
    end_what_commands_left,
    end_with_parent,
    master_place,
    program,
    take_place,
)
from multi.transport import Message, Payload, Slave_ended, Slave_lost, Transport
from multi.wake_pipe import Wake_pipe

SETUP, WORK, STOP, OUTCOMES, NOTE, BEAT, HELLO, EXITED, MASTER_GONE = range(1, 10)
DAEMONS = ("auto", "own", "running")
ROUTES = ("direct", "daemon")
#: How often a slave that runs a command says which (so that its death, or a timeout, names
#: it) and looks whether its master is gone.
WATCH_SECONDS = 0.02
#: How often a busy slave that has said nothing else shows it is alive.
BEAT_SECONDS = 0.5
#: How long the master waits for a message in a tight loop before it sleeps in ``select``.
SPIN_SECONDS = 100e-6

#: The transport of this process, if one runs: a process is one task of one virtual machine.
_current: Pvm_transport | None = None


@atexit.register  # at import: it runs after what later code registers (an Executor's shutdown)
def _kill_at_exit() -> None:
    """Stop the slaves of a program that ends without stopping them (a script's top level, a
    notebook); its daemon's guardian would, but the slaves' files would stay."""
    if _current is not None:
        _current.kill()


def _control(obj: Any) -> list[bytes]:
    """A small control message (never code of the application)."""
    return [pickle.dumps(obj, protocol=wire.PROTOCOL)]


def _next(
    pvm: Pvm, seconds: float | None, wake: int | None = None, woken: Wake_pipe | None = None
) -> Pvm_message | None:
    """The next message: looked for in a tight loop for ``SPIN_SECONDS`` (a quick answer costs
    no sleep and wake-up), then waited for in the kernel; None once ``seconds`` have passed,
    or once another thread has woken ``woken``."""
    deadline = None if seconds is None else time.monotonic() + seconds
    spin_until = time.perf_counter() + SPIN_SECONDS
    while (message := pvm.receive()) is None:
        if time.perf_counter() < spin_until:
            continue
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        if _wait(pvm, left, wake, woken):
            return pvm.receive()  # (what came meanwhile, if anything)
    return message


def _wait(
    pvm: Pvm, seconds: float | None, wake: int | None = None, woken: Wake_pipe | None = None
) -> bool:
    """Sleep until something arrives on PVM's sockets, or on ``wake`` (another thread's word
    that libpvm may have taken in a message), or on ``woken``, or ``seconds`` pass; whether
    ``woken`` was woken."""
    watched = [*pvm.fds(), *([] if wake is None else [wake])]
    if woken is not None:
        watched.append(woken.fileno())
    readable, _, _ = select.select(watched, [], [], seconds)
    if wake is not None and wake in readable:
        with suppress(BlockingIOError):
            os.read(wake, 4096)
    return woken is not None and woken.fileno() in readable and woken.take()


@dataclass(slots=True)
class _Slave:
    """The master's handle on one slave task."""

    tid: int
    host: str = "?"  # from its HELLO
    pid: int | None = None
    #: Its capture files (see ``multi.descriptors``), opened here where it runs on this host.
    files: descriptors.Files | None = None
    #: Where it shows the command it runs (``multi.task_memory``), mapped here likewise.
    memory: mmap.mmap | None = None
    task: int = -1  # the command it said it runs, and since when (the master's clock)
    since: float = 0.0
    heard: float = 0.0  # when it last gave a sign of life, or was given work while idle
    batches: int = 0  # batches sent to it and not answered yet

    def name(self) -> str:
        process = f", pid {self.pid}" if self.pid is not None else ""
        return f"(PVM task t{self.tid:x} on {self.host}{process})"


class Pvm_transport(Transport):
    """The slave tasks of one master, on the daemon it joined or started."""

    pickled = True
    replaceable = True
    heartbeats = True
    largest_message = MAX_MESSAGE
    wakes = True

    def __init__(self, processor: Pvm_processor, slaves: int) -> None:
        self.processor = processor
        self.slaves = slaves
        self._woken = Wake_pipe()
        self._slaves: dict[int, _Slave] = {}
        self._ranks: dict[int, int] = {}  # rank of each live task id
        self._daemon: Own_daemon | None = None
        self._saved_tmp: str | None = None
        self.pvm: Pvm | None = None
        self.host = socket.gethostname()

    @property
    def ranks(self) -> Sequence[int]:
        return sorted(self._slaves)

    # Starting -------------------------------------------------------------------------------

    def start(self) -> None:
        global _current
        refuse_on_its_own_slave(Pvm_processor, "pvm")
        if _current is not None:
            raise MultiError(
                "a program is one task of one PVM virtual machine, whose slaves serve one "
                "processor or executor at a time: stop the other one first "
                "(processor.stop_slaves(), or the executor's shutdown())"
            )
        settings = self.processor.settings
        own = settings["daemon"] == "own" or (
            settings["daemon"] == "auto" and (settings["hostfile"] or not running_daemon())
        )
        if own:
            self._daemon = Own_daemon(settings["hostfile"])
            self._saved_tmp = os.environ.get("PVM_TMP")
            os.environ["PVM_TMP"] = self._daemon.directory  # where libpvm finds the daemon
        elif settings["hostfile"]:
            raise ValueError(
                "option hostfile: a daemon that runs already has its hosts; add hosts in "
                "the PVM console (add HOST), or use daemon=own to start one with this file"
            )
        elif not running_daemon():
            raise MultiError(
                "no PVM daemon runs for this user: start one (pvm, then quit) or use the "
                "option daemon=own (or auto)"
            )
        self.pvm = Pvm()
        _current = self
        try:
            self.pvm.mytid()
            self.pvm.route_directly(settings["route"] == "direct")
            if own and settings["hostfile"]:
                self._join_hosts(settings["hostfile"])
            for rank in range(1, self.slaves + 1):
                self.replace(rank)
        except BaseException:
            self._leave()
            raise

    def _join_hosts(self, hostfile: str) -> None:
        """Wait until the hosts of the file are in the virtual machine, or PVM has said why
        it could not add them, and tell of those (see ``multi.pvm_hosts``): the slaves then
        start on every host there is."""
        pvm = self.pvm
        assert pvm is not None
        with open(hostfile, errors="replace") as file:
            listed = pvm_hosts.startup_hosts(file.read())
        wanted = pvm_hosts.not_present(listed, pvm.hosts())
        refused = pvm_hosts.refusals(wanted, pvm.add_hosts(wanted)) if wanted else []
        if refused:
            warn(
                f"PVM could not add {len(refused)} host(s) of the host file {hostfile}, so the "
                f"slaves run on {', '.join(pvm.hosts())} alone. " + ". ".join(refused)
            )

    def replace(self, rank: int) -> None:
        pvm = self._pvm()
        tid = pvm.spawn(sys.executable, program("multi.pvm_processor:slave_main"))
        pvm.notify_exit(EXITED, [tid])
        pvm.send(tid, SETUP, _control(self._description(rank)))
        self._slaves[rank] = _Slave(tid, heard=time.monotonic())
        self._ranks[tid] = rank

    def _description(self, rank: int) -> dict[str, Any]:
        """What a slave needs to stand where the master stands and serve it."""
        return {
            "rank": rank,
            "slaves": self.slaves,
            "fabric": wire.dumps(type(self.processor)),
            "place": master_place(),
            "direct": self.processor.settings["route"] == "direct",
        }

    def _pvm(self) -> Pvm:
        if self.pvm is None:
            raise MultiError("the pvm transport has not started")
        return self.pvm

    # Moving work ----------------------------------------------------------------------------

    def send(self, rank: int, payload: Payload) -> None:
        slave = self._slaves.get(rank)
        if slave is None:  # it ended, and its loss, queued, takes this batch back
            return
        if not slave.batches:  # it was idle: its silence counts from now
            slave.heard = time.monotonic()
        slave.batches += 1
        self.traffic[rank, "sent"] += self._pvm().send(slave.tid, WORK, payload)

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        pvm = self._pvm()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            message = _next(pvm, left, woken=self._woken)
            if message is None:
                return None
            taken = self._take(message)
            if taken is not None:
                return taken

    def _take(self, message: Pvm_message) -> tuple[int, Message] | None:
        """What a message says: a report or a lost slave for the engine, else None."""
        if message.tag == EXITED:
            tid = message.ints[0]
            rank = self._ranks.get(tid)
            return None if rank is None else (rank, self._lost(rank))
        rank = self._ranks.get(message.source)
        if rank is None:  # from a slave already forgotten
            return None
        slave = self._slaves[rank]
        slave.heard = time.monotonic()
        if message.tag == OUTCOMES:
            slave.task = -1
            slave.batches -= 1
            self.traffic[rank, "received"] += sum(len(frame) for frame in message.frames)
            return rank, self._report(rank, message.frames)
        if message.tag == NOTE:
            slave.task, running_for = pickle.loads(message.frames[0])
            slave.since = slave.heard - running_for
        elif message.tag == HELLO:
            slave.pid, slave.host, files, memory = pickle.loads(message.frames[0])
            if slave.host == self.host:  # what a command writes and runs, if the slave dies
                slave.files = descriptors.files_of(slave.pid, files)
                slave.memory = task_memory.of_process(slave.pid, memory)
        return None

    def _report(self, rank: int, frames: list[bytearray]) -> Report:
        report = rebuilt_report(rank, frames)
        if report.lost is not None:  # the slave ends after this report: forget it now
            self._forget(rank)
        return report

    def running(self, rank: int) -> tuple[int, float] | None:
        slave = self._slaves.get(rank)
        if slave is None:
            return None
        task, since = self._task(slave)
        return (task, since) if task >= 0 else None

    @staticmethod
    def _task(slave: _Slave) -> tuple[int, float]:
        """The command a slave runs, and since when: as it shows it where it runs on this
        host, else as it last said (once a command has run ``WATCH_SECONDS``)."""
        if slave.memory is not None:
            return task_memory.read(slave.memory)
        return slave.task, slave.since

    def silent_for(self, rank: int) -> float | None:
        return time.monotonic() - self._slaves[rank].heard

    # Losing slaves --------------------------------------------------------------------------

    def _lost(self, rank: int) -> Slave_lost:
        """Name a slave that ended, with the command it said it ran, and what it wrote; end
        what its commands started, where this host has it (the group it led outlives it)."""
        slave = self._slaves[rank]
        task = self._task(slave)[0]
        output = descriptors.read_left(slave.files)  # (see end_slave)
        self._end_group(slave)  # (the group outlives its leader while it has members)
        self._forget(rank)
        reason = f"{slave.name()} ended"
        # (on another host, only a command that it said it ran is known)
        return Slave_lost.showing(rank, reason, task, output, shown=slave.memory is not None)

    def _forget(self, rank: int) -> _Slave:
        slave = self._slaves.pop(rank)
        self._ranks.pop(slave.tid, None)
        if slave.pid is not None and slave.host == self.host:  # (ended: its files, if left)
            remove_task_files(slave.pid)
        for fd in slave.files or ():  # (read already, where it died in a command)
            os.close(fd)
        if slave.memory is not None:
            slave.memory.close()
        return slave

    def end_slave(self, rank: int) -> Slave_ended:
        slave = self._slaves[rank]
        self._end(slave)
        # What its command wrote, where its files are here, whether or not the slave has said
        # which command runs (it says so only after a while: one that ended at once wrote too).
        output = descriptors.read_left(slave.files)
        self._forget(rank)
        return Slave_ended(slave.name(), output)

    def _end(self, slave: _Slave) -> None:
        """End a slave task at once, with what its commands started where that can be reached
        (its process group, on this host); elsewhere its daemon ends it."""
        if not self._end_group(slave):
            self._pvm().kill(slave.tid)

    def _end_group(self, slave: _Slave) -> bool:
        """End the process group that a slave leads, where it runs on this host; False where
        it runs elsewhere."""
        if slave.pid is None or slave.host != self.host:
            return False
        with suppress(OSError):  # (none of it is left)
            os.killpg(slave.pid, signal.SIGKILL)
        return True

    # Stopping -------------------------------------------------------------------------------

    def wake(self) -> None:
        self._woken.wake()

    def stop(self, timeout: float, status: int = 0) -> None:
        try:
            if self.pvm is not None:
                for slave in self._slaves.values():
                    self.pvm.send(slave.tid, STOP)
                self._join(timeout)
        finally:
            self._leave()

    def kill(self, status: int = 1) -> None:
        try:
            if self.pvm is not None:
                for slave in self._slaves.values():
                    self._end(slave)
                self._join(1.0)
        finally:
            self._leave()

    def _join(self, timeout: float) -> None:
        """Wait until every slave has ended (its daemon says so), ``timeout`` at most; end the
        ones left."""
        pvm = self._pvm()
        deadline = time.monotonic() + timeout
        while self._slaves and (left := deadline - time.monotonic()) > 0:
            message = _next(pvm, left)
            if message is not None and message.tag == EXITED and message.ints[0] in self._ranks:
                self._forget(self._ranks[message.ints[0]])
        for rank, slave in list(self._slaves.items()):
            self._end(slave)
            self._forget(rank)

    def _leave(self) -> None:
        """Leave the virtual machine, and halt the daemon if it is ours."""
        global _current
        self._woken.close()
        if self.pvm is not None:
            self.pvm.exit()
            self.pvm = None
        if self._daemon is not None:
            self._daemon.halt()
            self._daemon = None
            if self._saved_tmp is None:
                os.environ.pop("PVM_TMP", None)
            else:
                os.environ["PVM_TMP"] = self._saved_tmp
        if _current is self:
            _current = None


# The slave task -----------------------------------------------------------------------------


def slave_main() -> None:
    """The program of a slave task: serve the master until it says stop, or is gone."""
    with suppress(OSError):  # a group of its own: what its commands start, it can end
        os.setpgid(0, 0)
    end_with_parent()  # (its parent is the daemon)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the master
    # (the daemon halts, or kills this task)
    signal.signal(signal.SIGTERM, lambda number, frame: end_group())
    pvm = Pvm()
    pvm.mytid()
    master = pvm.parent()
    if master is None:
        print("multi: a pvm slave must be spawned by its master", file=sys.stderr)
        sys.exit(2)
    pvm.notify_exit(MASTER_GONE, [master])
    files = descriptors.unnamed_files()  # (its master opens them, where it is on its host)
    memory_fd, memory = task_memory.unnamed()  # (likewise)
    hello = (os.getpid(), socket.gethostname(), files, memory_fd)
    pvm.send(master, HELLO, _control(hello))
    description = _setup(pvm, master)
    if description is None:
        _leave(pvm)
        return
    pvm.route_directly(description["direct"])
    rank, slaves = description["rank"], description["slaves"]
    take_place(description["place"], f"pvm slave {rank}")
    cls: type[Pvm_processor] = wire.loads(description["fabric"])
    processor = cls(processor_size=slaves, callback=None)
    Processor_box().processor = processor
    processor.process_rank = rank  # (threads that commands start are on this slave too)
    context = Slave_context(rank, slaves, processor.data_store, signalled=never_signalled)
    context.descriptors = descriptors.Descriptor_capture(files, rank)
    context.logs = Log_forwarding(rank)
    watcher = _Watcher(pvm, master)

    arrived: list[Pvm_message] = []  # a message that at_hand took in

    def receive() -> list[Any] | None:
        while True:
            message = arrived.pop() if arrived else _next(pvm, None, watcher.wake)
            assert message is not None  # (no time limit)
            if message.tag == WORK:
                return message.frames
            elif message.tag in (STOP, MASTER_GONE):
                return None

    def reply(report: Report, batch: Batch | None) -> None:
        pvm.send(master, OUTCOMES, seal(report, batch[1] if batch is not None else ()))
        watcher.sent()

    def at_hand() -> bool:
        if not arrived and (message := pvm.receive()) is not None:
            arrived.append(message)
        return bool(arrived)

    def note(task: int) -> None:
        task_memory.write(memory, task)
        watcher.note(task)

    try:
        serve(processor, context, receive, reply, note, at_hand)
    finally:
        watcher.stop()
        context.descriptors.close()
        _leave(pvm)
        end_what_commands_left()


def _setup(pvm: Pvm, master: int) -> dict[str, Any] | None:
    """The master's description of this slave's place, or None if it is gone first."""
    while True:
        message = _next(pvm, None)
        assert message is not None  # (no time limit)
        if message.tag == SETUP:
            return pickle.loads(message.frames[0])  # type: ignore[no-any-return]
        elif message.tag in (MASTER_GONE, STOP):
            return None


def _leave(pvm: Pvm) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    pvm.exit()


class _Watcher:
    """A thread that, while the slave's main thread runs commands, says which command runs
    (once it has run ``WATCH_SECONDS``), beats every ``BEAT_SECONDS`` of silence, and ends the
    slave's process group once its master is gone. When no command runs, the main thread waits
    on PVM itself and sees the master go.

    libpvm takes in every message that has arrived whenever it is called: after its calls the
    watcher writes to a pipe (``wake``) that the main thread waits on beside PVM's sockets, so
    that a batch it took in is not left waiting while the main thread sleeps.
    """

    def __init__(self, pvm: Pvm, master: int) -> None:
        self.pvm = pvm
        self.master = master
        self.task = -1
        self.started = 0.0
        self.noted = -1
        self.said = time.monotonic()  # when the slave last sent the master anything
        self.busy = threading.Event()  # set when a command starts; cleared by the watcher
        self.finished = False
        self.wake, self._poke = os.pipe()
        os.set_blocking(self.wake, False)
        os.set_blocking(self._poke, False)
        self.thread = threading.Thread(target=self._watch, name="multi-pvm-watcher", daemon=True)
        self.thread.start()

    def note(self, task: int) -> None:
        """The main thread starts a command (or has finished a batch: -1). The watcher wakes
        once for a stretch of commands, not once per batch."""
        self.started = time.monotonic()
        self.task = task
        if task >= 0 and not self.busy.is_set():
            self.busy.set()

    def sent(self) -> None:
        self.said = time.monotonic()

    def stop(self) -> None:
        self.finished = True
        self.busy.set()
        self.thread.join()
        os.close(self.wake)
        os.close(self._poke)

    def _watch(self) -> None:
        pvm, master = self.pvm, self.master
        while True:
            self.busy.wait()
            time.sleep(WATCH_SECONDS)
            task, started, now = self.task, self.started, time.monotonic()
            if self.finished:
                return
            if task < 0:  # idle again: sleep until a command starts
                self.busy.clear()
                if self.task >= 0:  # (one started meanwhile)
                    self.busy.set()
                continue
            if pvm.receive(-1, MASTER_GONE) is not None:
                end_group()
            if task != self.noted:
                self.noted = task
                pvm.send(master, NOTE, _control((task, now - started)))
                self.said = now
            elif now - self.said >= BEAT_SECONDS:
                pvm.send(master, BEAT)
                self.said = now
            with suppress(BlockingIOError):
                os.write(self._poke, b"\0")


# The fabric ---------------------------------------------------------------------------------


class Pvm_processor(Processor):
    """Slaves are ``processor_size`` tasks of a PVM virtual machine (one per usable core of
    this host by default), placed by PVM over its hosts."""

    fabric = "pvm"
    slaves_in_process = False
    options = (
        *Processor.options,
        Option(
            "daemon",
            "the PVM daemon to use: auto (the one running for this user, else one of its "
            "own), own (start one, halt it at the end) or running (the one running)",
            "auto",
            one_of(DAEMONS),
            DAEMONS,
        ),
        Option(
            "hostfile",
            "a PVM host file: the hosts the daemon of its own adds (PVM's format: a host "
            "per line, with options such as ep= wd= dx=)",
            None,
            file_to_read,
        ),
        Option(
            "route",
            "how messages travel: direct (task to task) or daemon (through the daemons)",
            "direct",
            one_of(ROUTES),
            ROUTES,
        ),
    )

    @classmethod
    def check_available(cls) -> None:
        library()
        find_daemon()

    def make_transport(self) -> Transport:
        return Pvm_transport(self, self._processor_size)

    def can_stop_commands(self) -> bool:
        return True

    def get_intro_string(self) -> str:
        return f"PVM: {self._processor_size} slave tasks and 1 master."
