"""The ``mpi4py`` fabric: slaves are MPI processes, on one machine or across a cluster.

Launched by ``mpiexec -n P+1 python app.py``, every rank runs the application: rank 0 is the
master and ranks 1 to P serve it from ``processor.run()``. Started alone (``python app.py``),
the master creates its P slaves with ``MPI_Comm_spawn`` (option ``launch=spawn``, the default),
or runs the program again under ``mpiexec -n P+1`` (``launch=mpiexec``)::

    master (rank 0, main thread)                  slave (rank r)
    ────────────────────────────                  ──────────────
    send(r, batch) ──isend WORK──────────────────> main thread (idle) / watcher (busy)
    receive() <── Iprobe(any slave) + backoff <──────── isend OUTCOMES <── execute
    stop():  STOP to all, wait for BYE ──────────> leave the loop, BYE, (disconnect), exit 0
    kill():  KILL to all, wait for BYE ──────────> interrupt the command (SIGINT), BYE ...

Messages travel on a communicator of their own (a duplicate of ``COMM_WORLD``, or the
intercommunicator of the spawned slaves) under a fixed set of tags, and as pickle protocol 5
frames whose large buffers go out of band (``mpi4py.util.pkl5``). Nobody waits in a blocking
MPI call, which spins: an idle master or slave probes with a backoff from 10 µs to 2 ms.

MPI ends the whole job when one of its processes dies, so a lost slave is not replaced here:
``mpiexec`` names it and stops every rank.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from multi import wire
from multi.application import Processor_box
from multi.descriptors import Descriptor_capture
from multi.errors import MultiError, MultiWarning, ProcessorSizeError
from multi.logs import Log_forwarding
from multi.options import Option
from multi.processor import Processor, usable_cores
from multi.slave import Batch, Report, Slave_context, seal, serve
from multi.transport import Message, Payload, Transport

INSTALL_HINT = "pip install 'multi[mpi]' (mpi4py with MPICH from PyPI)"
LAUNCHES = ("spawn", "mpiexec", "none")
HOW_TO_LAUNCH = (
    "launch the program with P slaves as `mpiexec -n P+1 python app.py ...`, or start it "
    "alone with the option launch=spawn or launch=mpiexec"
)

# The tags of the messages, master to slave then slave to master: never a task id.
SETUP, WORK, STOP, KILL, OUTCOMES, BYE, BEAT = range(7)
MASTER = 0

#: A thread that waits for a message alone in its process (the master, an idle slave) looks
#: without sleeping for this long first: the other side of a quick round trip answers by then.
SPIN_SECONDS = 300e-6
#: The backoff of every wait: a sleep of a tenth of the time waited so far, from 10 µs to
#: 2 ms. Doubling the sleep instead would let a wait overshoot by as long as it has lasted, and
#: the two sides of a round trip would push each other's waits to the longest sleep.
FIRST_WAIT = 10e-6
LONGEST_WAIT = 2e-3
WAIT_GROWTH = 0.1
#: How often a slave that runs a command looks for the master's KILL.
WATCH_SECONDS = 0.05
#: How often a slave that runs a command tells the master it lives (see option liveness).
BEAT_SECONDS = 1.0
#: How long the slaves have to leave once told to stop or to drop their work.
FAREWELL_SECONDS = 2.0
#: How long an aborting master leaves mpiexec to forward its last output (its traceback).
ABORT_GRACE_SECONDS = 0.2
#: Set in the environment of a program that relaunched itself under mpiexec.
RELAUNCHED = "MULTI_MPI4PY_RELAUNCHED"


def _mpi() -> Any:
    """The ``mpi4py.MPI`` module (MPI is initialised when it is first imported)."""
    from mpi4py import MPI

    return MPI


def _wait(test: Callable[[], Any], seconds: float | None = None, spin: float = 0.0) -> Any:
    """Call ``test`` until it gives a true value, and return it, sleeping ever longer between
    calls; False on timeout.

    For the first ``spin`` seconds it does not sleep: a quick answer is then taken without the
    cost of waking up (a sleep lasts 50 µs at least), and a slow one costs that little CPU.
    Only a thread alone in its process may spin: it holds the GIL while it does.
    """
    start = time.monotonic()
    while not (found := test()):
        waited = time.monotonic() - start
        if waited < spin:
            continue
        if seconds is not None and waited > seconds:
            return False
        time.sleep(min(LONGEST_WAIT, max(FIRST_WAIT, WAIT_GROWTH * waited)))
    return found


def _out_of_band(frames: wire.Frames) -> list[pickle.PickleBuffer]:
    """Frames as buffers that pkl5 sends as they are, the pickle stream included."""
    return [f if isinstance(f, pickle.PickleBuffer) else pickle.PickleBuffer(f) for f in frames]


# The master's side ---------------------------------------------------------------------------


class Mpi4py_transport(Transport):
    """The slaves of one communicator: ranks 1 to P of the world, or the spawned ones."""

    pickled = True
    heartbeats = True

    def __init__(self, comm: Any, slaves: int, spawned: bool) -> None:
        from mpi4py.util import pkl5

        MPI = _mpi()
        self.comm = (pkl5.Intercomm if spawned else pkl5.Intracomm)(comm)
        self.slaves = slaves
        self.spawned = spawned
        self.offset = 1 if spawned else 0  # multi's rank = the slave's rank in comm + offset
        self._sending: list[tuple[Any, Any]] = []  # requests, with the buffers they send
        self._work_sent: Counter[int] = Counter()  # batches sent to each slave
        self._answered: Counter[int] = Counter()  # and answered
        self._heard: dict[int, float] = {}  # when each slave last gave a sign of life
        self._gone: set[int] = set()  # slaves given up
        self._status = MPI.Status()
        self._left = False  # the slaves have been told to leave
        if spawned:
            _stop_at_exit(self)

    @property
    def ranks(self) -> Sequence[int]:
        return [rank for rank in range(1, self.slaves + 1) if rank not in self._gone]

    def end_slave(self, rank: int) -> str:
        """Give a slave up: MPI cannot stop one process of a job, so it is forgotten, and the
        job ends with the program's status at shutdown (see ``_farewell``)."""
        self._gone.add(rank)
        return f"(MPI rank {rank - self.offset})"

    def send(self, rank: int, payload: Payload) -> None:
        frames = _out_of_band(payload)  # type: ignore[arg-type]
        self.traffic[rank, "sent"] += wire.size(frames)
        if self._work_sent[rank] == self._answered[rank]:  # it was idle: the clock starts now
            self._heard[rank] = time.monotonic()
        self._work_sent[rank] += 1
        self._post(rank, frames, WORK)

    def _post(self, rank: int, obj: Any, tag: int) -> None:
        self._sending = [(r, o) for r, o in self._sending if not r.test()[0]]
        self._sending.append((self.comm.isend(obj, rank - self.offset, tag), obj))

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        MPI, status, comm = _mpi(), self._status, self.comm

        def probe() -> bool:
            """A report is there; a heartbeat is taken on the way."""
            while comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
                source = status.Get_source()
                if status.Get_tag() != BEAT:
                    return True
                comm.recv(None, source, BEAT)
                self._heard[source + self.offset] = time.monotonic()
            return False

        while True:
            if not _wait(probe, timeout, spin=SPIN_SECONDS):
                return None
            source = status.Get_source()
            frames = comm.recv(None, source, OUTCOMES)
            rank = source + self.offset
            if rank not in self._gone:  # (what a slave given up says comes too late)
                break
        report: Report = wire.loads(frames)
        self._heard[rank] = time.monotonic()
        self._answered[rank] += 1
        self.traffic[rank, "received"] += wire.size(frames)
        return rank, report

    def silent_for(self, rank: int) -> float | None:
        return time.monotonic() - self._heard[rank]

    def stop(self, timeout: float, status: int = 0) -> None:
        self._farewell(STOP, timeout, status)

    def kill(self, status: int = 1) -> None:
        self._farewell(KILL, FAREWELL_SECONDS, status)

    def _farewell(self, tag: int, timeout: float, status: int) -> None:
        """Tell every slave to leave (saying how many batches it was sent, which it takes
        before it leaves, so that no send stays pending), and wait until each has said
        goodbye. A slave that does not leave in time ends the MPI job, with ``status``: the
        program's exit status survives a slow slave."""
        if self._left:
            return
        self._left = True
        _spawned_open.discard(self)
        MPI = _mpi()
        if MPI.Is_finalized():
            return
        for rank in self.ranks:
            self._post(rank, self._work_sent[rank], tag)
        probe, left = MPI.Status(), set()

        def goodbye() -> bool:
            while self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, probe):
                source = probe.Get_source()
                self.comm.recv(None, source, probe.Get_tag())  # reports nobody awaits now
                if probe.Get_tag() == BYE:
                    left.add(source + self.offset)
            return set(self.ranks) <= left

        def sent() -> bool:
            self._sending = [(r, o) for r, o in self._sending if not r.test()[0]]
            return not self._sending

        seconds = max(timeout, FAREWELL_SECONDS)
        if not _wait(goodbye, seconds) or not _wait(sent, seconds) or self._gone:
            late = ", ".join(str(rank) for rank in self.ranks if rank not in left)
            if late:
                why = f"slave(s) {late} did not stop within {seconds:g} s"
            else:
                why = f"slave(s) {', '.join(map(str, sorted(self._gone)))} were given up"
            print(
                f"multi: {why}: ending the MPI job with status {status}",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(ABORT_GRACE_SECONDS)  # mpiexec forwards what was printed before the end
            # On COMM_WORLD itself: MPICH's mpiexec then exits with the status given, where an
            # abort on a duplicate of it races with the ranks it kills (status 9 at times).
            (self.comm if self.spawned else MPI.COMM_WORLD).Abort(status)
        if self.spawned:
            self.comm.Disconnect()
        else:
            self.comm.Free()


#: Spawned slaves not told to leave yet (see ``_stop_at_exit``).
_spawned_open: weakref.WeakSet[Mpi4py_transport] = weakref.WeakSet()


def _stop_at_exit(transport: Mpi4py_transport) -> None:
    """Stop spawned slaves when the program ends, if it has not: a program that calls
    ``run_queue`` without ``run()`` (a script's top level, a notebook) would otherwise leave
    them serving a master that is gone. Registered after MPI starts, so that it runs before
    MPI is finalised."""
    global _exit_registered
    if not _exit_registered:
        atexit.register(_stop_spawned)
        _exit_registered = True
    _spawned_open.add(transport)


_exit_registered = False


def _stop_spawned() -> None:
    for transport in list(_spawned_open):
        transport.stop(FAREWELL_SECONDS)


# The slave's side ----------------------------------------------------------------------------


def _serve_master(processor: Processor, comm: Any, rank: int, slaves: int) -> None:
    """Run batches for the master until it says stop; then say goodbye.

    The main thread takes the master's messages in order. While it runs a command, a watcher
    thread looks every ``WATCH_SECONDS`` for KILL alone (MPI lets a message of another tag
    overtake), and interrupts the command if it comes. Told to leave, a slave first takes every
    batch the master says it sent, so that none of the master's sends stays pending. A lock
    serialises the MPI calls (MPI_THREAD_SERIALIZED is enough).
    """
    MPI = _mpi()
    lock = threading.Lock()
    running = threading.Event()
    killed = threading.Event()
    finished = threading.Event()
    main = threading.main_thread().ident
    status = MPI.Status()
    batches = {"received": 0, "sent": -1}  # WORK received; WORK sent, once the master says

    def take() -> tuple[int, Any] | None:
        """The next message from the master, if one is there (KILL if the watcher saw it)."""
        if killed.is_set():
            return KILL, batches["sent"]
        with lock:
            if not comm.Iprobe(MASTER, MPI.ANY_TAG, status):
                return None
            tag = status.Get_tag()
            return tag, comm.recv(None, MASTER, tag)

    beats: list[Any] = []  # heartbeats on their way (their buffers must live until sent)

    def watch() -> None:
        beat = time.monotonic()
        while not finished.is_set() and not killed.is_set():
            if not running.wait(WATCH_SECONDS):
                continue
            time.sleep(WATCH_SECONDS)
            with lock:
                if time.monotonic() - beat >= BEAT_SECONDS:  # alive, if busy
                    beat = time.monotonic()
                    beats[:] = [request for request in beats if not request.test()[0]]
                    beats.append(comm.isend(None, MASTER, BEAT))
                if not comm.Iprobe(MASTER, KILL, status):
                    continue
                batches["sent"] = comm.recv(None, MASTER, KILL)
            killed.set()
            if running.is_set() and main is not None:
                signal.pthread_kill(main, signal.SIGINT)

    def receive() -> Batch | Exception | None:
        tag, payload = _wait(take, spin=SPIN_SECONDS)
        if tag != WORK:  # STOP or KILL, with the number of batches the master sent
            batches["sent"] = payload
            return None
        batches["received"] += 1
        try:
            return wire.loads(payload)
        except Exception as exc:  # the batch arrived, but does not unpickle here
            return exc

    def reply(report: Report, batch: Batch | None) -> None:
        frames = seal(report, batch[1] if batch is not None else ())
        with lock:
            request = comm.isend(_out_of_band(frames), MASTER, OUTCOMES)
        _wait(lambda: _tested(lock, request))

    def note(task_id: int) -> None:
        (running.set if task_id >= 0 else running.clear)()

    def drained() -> bool:
        """Take the batches still on their way; True once all the master sent are taken."""
        if batches["sent"] < 0:  # leaving without the master's word (Ctrl-C): wait for it
            message = take()
            if message is not None and message[0] != WORK:
                batches["sent"] = message[1]
            elif message is not None:
                batches["received"] += 1
            return False
        while batches["received"] < batches["sent"]:
            with lock:
                if not comm.Iprobe(MASTER, WORK, status):
                    return False
                comm.recv(None, MASTER, WORK)
            batches["received"] += 1
        return True

    signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=watch, name="multi-mpi-watcher", daemon=True)
    watcher.start()
    context = Slave_context(rank, slaves, processor.data_store)
    output_directory = tempfile.mkdtemp(prefix="multi-output-")
    context.descriptors = Descriptor_capture(output_directory, rank)
    context.logs = Log_forwarding(rank, logging.DEBUG)  # the master's levels decide
    try:
        serve(processor, context, receive, reply, note)
    except KeyboardInterrupt:  # told to drop the work (KILL), or Ctrl-C under mpiexec
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        context.descriptors.close()
        shutil.rmtree(output_directory, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        running.clear()
        finished.set()
        watcher.join()
        _wait(drained, FAREWELL_SECONDS)
        with lock:
            request = comm.isend(None, MASTER, BYE)
        _wait(lambda: _tested(lock, request), FAREWELL_SECONDS)


def _end_own_group() -> None:
    """End what this slave's commands started and left running (SIGTERM to its process group,
    which the slave itself ignores as it leaves)."""
    if os.getpgid(0) != os.getpid():
        return  # not the leader of a group of its own: the launcher ends the job's processes
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with suppress(OSError):
        os.killpg(0, signal.SIGTERM)


def _tested(lock: threading.Lock, request: Any) -> bool:
    with lock:
        return request.test()[0]


# Slaves spawned by a master started alone ----------------------------------------------------


def _main_description() -> dict[str, Any]:
    """What a spawned slave needs to import what the master imports by name: its module path,
    its directory and its arguments. Not its main module, which the slave never runs: what it
    defines travels by value (see ``multi.wire``)."""
    cwd = os.getcwd()
    return {
        "sys_path": [cwd if entry == "" else entry for entry in sys.path],
        "cwd": cwd,
        "argv": list(sys.argv),
    }


def _take_place(description: dict[str, Any]) -> None:
    """Stand where the master stands: its module path, directory and arguments."""
    sys.path[:] = description["sys_path"]
    sys.argv[:] = description["argv"]
    os.chdir(description["cwd"])


def spawned_slave_main() -> None:
    """The program of a slave spawned by a master started alone."""
    with suppress(OSError):  # a group of its own: what its commands start, it can end
        os.setpgid(0, 0)
    MPI = _mpi()
    parent = MPI.Comm.Get_parent()
    description = parent.recv(None, MASTER, SETUP)
    try:
        _take_place(description)
    except OSError as exc:  # its directory is not there: modules on the path still import
        print(
            f"multi: slave {parent.Get_rank() + 1} could not enter the master's directory: {exc}",
            file=sys.stderr,
            flush=True,
        )
    processor = Mpi4py_processor(callback=None)
    Processor_box().processor = processor
    processor.serve()


# The fabric ----------------------------------------------------------------------------------


def _launch(text: str) -> str:
    if text not in LAUNCHES:
        raise ValueError(f"expected one of {', '.join(LAUNCHES)}, not {text!r}")
    return text


class Mpi4py_processor(Processor):
    """Slaves are the other ranks of ``mpiexec``, or processes that the master spawns.

    On a slave rank, ``run()`` does not return: the slave serves the master until the master
    stops, then its process ends with status 0, and the application's code after ``run()``
    runs on the master alone.
    """

    fabric = "mpi4py"
    slaves_in_process = False
    options = (
        *Processor.options,
        Option(
            "launch",
            "how a program started alone gets its slaves: spawn (MPI_Comm_spawn), "
            "mpiexec (run the program again under mpiexec -n P+1), or none (refuse)",
            "spawn",
            _launch,
            LAUNCHES,
        ),
    )

    @classmethod
    def check_available(cls) -> None:
        try:
            _mpi()
        except (ImportError, RuntimeError) as exc:
            raise ImportError(
                f"mpi4py with an MPI library is needed: {exc}; {INSTALL_HINT}"
            ) from exc

    def __init__(
        self, processor_size: int | None = -1, callback: Any = None, **options: Any
    ) -> None:
        self.check_available()
        MPI = _mpi()
        world = MPI.COMM_WORLD
        self._parent = MPI.Comm.Get_parent()
        self._comm: Any = None
        self._spawned_slave = self._parent != MPI.COMM_NULL
        self._launched = world.Get_size() > 1 and not self._spawned_slave
        if self._spawned_slave:
            self.process_rank = world.Get_rank() + 1
        elif self._launched:
            self.process_rank = world.Get_rank()
            self._comm = world.Dup()  # every rank makes the processor: the collective is safe
        super().__init__(processor_size, callback, **options)
        self._served = False

    def slave_count(self, requested: int | None) -> int:
        world = _mpi().COMM_WORLD.Get_size()
        if self._spawned_slave:
            return world
        if self._launched:
            if requested is not None and requested != world - 1 and self.process_rank == 0:
                warnings.warn(
                    f"the mpi4py fabric runs {world - 1} slaves, as mpiexec started {world} "
                    f"processes, not the {requested} asked for",
                    MultiWarning,
                    stacklevel=4,
                )
            return world - 1
        wanted = requested if requested is not None else usable_cores()
        launch = self.settings["launch"]
        if launch == "none" or os.environ.get(RELAUNCHED):
            raise ProcessorSizeError(
                f"the mpi4py fabric has no slaves: this program runs as the only MPI process. "
                f"To run {wanted} slaves, {HOW_TO_LAUNCH.replace('P+1', str(wanted + 1))}"
            )
        if launch == "mpiexec":
            self._relaunch(wanted)
        return wanted

    def _relaunch(self, slaves: int) -> None:
        """Run this program again, from the start, as the master of mpiexec -n P+1."""
        mpiexec = _find_mpiexec()
        if mpiexec is None:
            raise ProcessorSizeError(f"launch=mpiexec, but no mpiexec is on PATH: {INSTALL_HINT}")
        sys.stdout.flush()
        sys.stderr.flush()
        os.environ[RELAUNCHED] = "1"
        command = [mpiexec, "-n", str(slaves + 1), sys.executable, *sys.orig_argv[1:]]
        os.execv(mpiexec, command)

    # The slave's side --------------------------------------------------------------------

    def serve(self) -> None:
        """Serve the master until it stops us; then end this process with status 0."""
        if self._served:
            raise MultiError("the slaves of this MPI job have served their master already")
        self._served = True
        from mpi4py.util import pkl5

        raw = self._parent if self._spawned_slave else self._comm
        comm = (pkl5.Intercomm if self._spawned_slave else pkl5.Intracomm)(raw)
        _serve_master(self, comm, self.process_rank, self._processor_size)
        if self._spawned_slave:
            raw.Disconnect()
            _end_own_group()
        else:
            raw.Free()
        sys.exit(0)

    # The master's side -------------------------------------------------------------------

    def make_transport(self) -> Transport:
        if self._launched:
            if self._comm is None:
                raise MultiError(
                    "the slaves of this MPI job have stopped: mpiexec started them once, and "
                    "they cannot be started again"
                )
            comm, self._comm = self._comm, None
            return Mpi4py_transport(comm, self._processor_size, spawned=False)
        return Mpi4py_transport(self._spawn(), self._processor_size, spawned=True)

    def _spawn(self) -> Any:
        MPI = _mpi()
        path = os.environ.get("PATH", "")
        if MPI.get_vendor()[0] == "MPICH":  # its singleton start runs mpiexec from PATH
            os.environ["PATH"] = _mpich_launcher() + os.pathsep + path
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (
            f"import sys; sys.path.insert(0, {package!r}); "
            "from multi.mpi4py_processor import spawned_slave_main; spawned_slave_main()"
        )
        try:
            comm = MPI.COMM_SELF.Spawn(sys.executable, ["-c", code], self._processor_size)
        finally:
            os.environ["PATH"] = path
        description = _main_description()
        for slave in range(self._processor_size):
            comm.send(description, slave, SETUP)
        return comm

    def abort(self) -> None:
        if not self._launched:
            super().abort()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)  # mpiexec forwards what was printed before it ends all
        _mpi().COMM_WORLD.Abort(1)

    def get_name(self) -> str:
        name = f"{_mpi().Get_processor_name()}-pid{os.getpid()}"
        context = self._context()
        return name if context is None else f"{name}-slave{context.rank}"

    def get_intro_string(self) -> str:
        MPI = _mpi()
        major, minor = MPI.Get_version()
        vendor, version = MPI.get_vendor()
        return (
            f"MPI {major}.{minor} running via mpi4py with {self._processor_size} slave "
            f"processors & 1 master. Using {vendor} {'.'.join(map(str, version))}."
        )


def _mpich_launcher() -> str:
    """A directory whose ``mpiexec`` runs MPICH's in a session of its own.

    MPICH starts a process manager (``mpiexec``) for a process that spawns; when that process
    ends by a signal (Ctrl-C), the manager kills its own process group, which it inherited from
    the master: the master's parent (a shell script, a test runner) would die with it.
    """
    global _launcher_directory
    mpiexec = _find_mpiexec()
    if mpiexec is None:
        raise ProcessorSizeError(
            f"MPICH spawns slaves through its mpiexec, which is not on PATH: add its "
            f"directory to PATH, or {HOW_TO_LAUNCH}"
        )
    if _launcher_directory is None:
        _launcher_directory = tempfile.mkdtemp(prefix="multi-mpiexec-")
        atexit.register(shutil.rmtree, _launcher_directory, ignore_errors=True)
    shim = os.path.join(_launcher_directory, "mpiexec")
    with open(shim, "w") as file:
        file.write(
            f"#!{sys.executable}\nimport os, sys\nos.setsid()\n"
            f"os.execv({mpiexec!r}, [{mpiexec!r}, *sys.argv[1:]])\n"
        )
    os.chmod(shim, 0o755)
    return _launcher_directory


_launcher_directory: str | None = None


def _find_mpiexec() -> str | None:
    """The mpiexec of this environment's MPI (the MPICH wheel's first), or the one on PATH."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, "mpiexec")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mpiexec")
