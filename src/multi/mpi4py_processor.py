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
intercommunicator of each spawned slave) under a fixed set of tags, and as pickle protocol 5
frames whose large buffers go out of band (``mpi4py.util.pkl5``); a small batch or report is
its pickle stream alone, in one message. Nobody waits in a blocking MPI call, which spins: a
waiting master probes with a backoff from 10 µs to 2 ms, an idle slave up to 2 ms per MPI
process its host has for each core (at most 20 ms). Slaves on the master's host ring its
doorbell once a report has left (``multi.doorbell``): a master that waits for those alone
sleeps until a ring.

A slave's death (a signal, an exit) ends the whole job under a plain ``mpiexec -n P+1``,
which a slave's guard (see ``_guard``) names on the way, saying how to launch for survival.
Under ``mpiexec -disable-auto-cleanup`` (MPICH), the guard lets the job survive, the master
hears of the death at once (SIGUSR1, then ``MPIX_Comm_get_failed``) and the run goes on on the
other slaves: the ranks of a job cannot be started again. Spawned slaves' guards tell their
master themselves and close the dead slave's session with the launcher, which then lets the
others be; the master spawns a slave in its place. The heartbeat (option ``liveness``) is the
backstop for what nobody reports: a hung slave, a lost node.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import json
import mmap
import os
import pickle
import select
import shutil
import signal
import socket
import sys
import sysconfig
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, ClassVar

from multi import descriptors, scratch, task_memory, wire
from multi.application import Processor_box
from multi.descriptors import Descriptor_capture, unnamed_files
from multi.doorbell import Doorbell, Ringer, ringer
from multi.errors import MultiError, ProcessorSizeError, ending, warn
from multi.logs import Log_forwarding
from multi.options import Option
from multi.processor import Processor, on_interrupted_exit, usable_cores
from multi.slave import (
    Batch,
    Report,
    Slave_context,
    by_sigint,
    die_by,
    raise_on_sigint,
    rebuilt_report,
    refuse_on_its_own_slave,
    seal,
    serve,
)
from multi.slave_process import (
    end_what_commands_left,
    end_with_parent,
    master_place,
    program,
    take_place,
)
from multi.transport import Message, Payload, Slave_ended, Slave_lost, Transport

INSTALL_HINT = "pip install 'multi-fabric[mpi]' (mpi4py with MPICH from PyPI)"
LAUNCHES = ("spawn", "mpiexec", "none")
HOW_TO_LAUNCH = (
    "launch the program with P slaves as `mpiexec -n P+1 python app.py ...`, or start it "
    "alone with the option launch=spawn or launch=mpiexec"
)

# The tags of the messages, master to slave then slave to master: never a task id.
SETUP, WORK, STOP, KILL, OUTCOMES, BYE, BEAT = range(7)
#: Added to the tag of a batch or a report that is one small pickle stream, sent as it is:
#: pkl5 spends three messages on it, some 17 µs each way. One with out-of-band buffers, or
#: larger than ``PLAIN_BYTES``, goes through pkl5.
PLAIN = 8
PLAIN_BYTES = 1 << 20
MASTER = 0
#: Where MPICH's shared memory files are, and how their names start (``_unname_mpi_memory``).
MPICH_MEMORY = b"/dev/shm/mpich_shm_"

#: A thread that waits for a message alone in its process (an idle slave; the master, while
#: its waits are quick: ``_Waiter``) looks without sleeping for this long first: the other
#: side of a quick round trip answers by then.
SPIN_SECONDS = 300e-6
#: A wait longer than this is taken for a sign that the next one will be long too: it sleeps
#: from the start (see ``_Waiter``).
SLOW_WAIT = 3e-3
#: How long a master sleeps at most while it waits for slaves that ring its doorbell: a ring
#: ends the sleep, and this bounds what a ring that never came costs (a report of a slave of
#: another host, a heartbeat, a note of a death where no signal tells it).
BELL_WAIT = 20e-3
#: The backoff of every wait: a sleep of a tenth of the time waited so far, from 10 µs to
#: 2 ms. Doubling the sleep instead would let a wait overshoot by as long as it has lasted, and
#: the two sides of a round trip would push each other's waits to the longest sleep.
FIRST_WAIT = 10e-6
LONGEST_WAIT = 2e-3
WAIT_GROWTH = 0.1
#: The longest sleep of a slave that waits for work, where many share a core: under
#: ``mpiexec -n 17`` on 2 cores, 15 idle slaves that looked every 2 ms made a round trip 1.6
#: times as long as under ``-n 3``. Where few do, an idle slave sleeps less (``_idle_sleep``):
#: a run's first batch, queued while the slaves idled, waited up to 17 ms for them, an eighth
#: of a run of 20,000 tiny commands on 2 slaves.
IDLE_LONGEST_WAIT = 20e-3
#: How often a slave that runs a command looks for the master's KILL.
WATCH_SECONDS = 0.05
#: How often a slave that runs a command tells the master it lives (see option liveness).
BEAT_SECONDS = 1.0
#: How long a slave that Ctrl-C interrupted waits for its master's word to stop (which
#: follows the same Ctrl-C under mpiexec) before it reports itself lost.
INTERRUPT_GRACE = 1.0
#: How long the slaves have to leave once told to stop or to drop their work.
FAREWELL_SECONDS = 2.0
#: How long an aborting master leaves mpiexec to forward its last output (its traceback).
ABORT_GRACE_SECONDS = 0.2
#: How often a master that cannot hear SIGUSR1 looks at the notes of its slaves' deaths.
NOTES_SECONDS = 0.1
#: How the names of a master's directories begin (``multi.scratch``): the notes of its slaves'
#: deaths, the shim of MPICH's mpiexec.
NOTES_KIND = "multi-mpi-deaths-"
LAUNCHER_KIND = "multi-mpiexec-"
#: Set in the environment of a program that relaunched itself under mpiexec.
RELAUNCHED = "MULTI_MPI4PY_RELAUNCHED"
#: How MPICH's launcher tells the survivors that a process of the job failed (where the job
#: survives it); a spawned slave's guard tells its master so too.
FAILED = signal.SIGUSR1
#: What an MPI launcher sets in the environment of the processes it starts.
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_FD", "PMI_PORT", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")
#: MPICH's mpiexec option that lets a job go on when one of its processes ends badly.
SURVIVE = "-disable-auto-cleanup"
SURVIVAL_HINT = (
    f"for the run to go on without it, launch with `mpiexec {SURVIVE} -n P+1 python app.py` "
    "(MPICH), or start the program alone with the option launch=mpiexec, which does so"
)
IN_A_THREAD = (
    "under mpiexec, every rank makes the program's first mpi4py processor or executor in its "
    "main thread: ranks 1 to P serve the master there, where they can take signals (the "
    "master's order to drop a command interrupts it with one). Make it before the threads "
    "start, or start the program alone (python app.py), where a processor or executor made in "
    "any thread spawns slaves of its own"
)
SINGLETON_DEATH = (
    "this MPI cannot go on in a master started alone (a singleton) once one of its slaves has "
    "died: with MPICH, the slave would be replaced; with Open MPI, launch with `mpiexec "
    "--with-ft ulfm -n P+1 python app.py` for the run to go on without it"
)


def _mpi() -> Any:
    """The ``mpi4py.MPI`` module (MPI is initialised when it is first imported).

    Before MPI starts, a slave that mpiexec started gets a guard (see ``_guard``), and MPICH
    is told not to wait at the end for processes that died (it would wait for ever).
    """
    global _MPI
    if _MPI is not None:  # (taken in every probe of a wait: an import would cost 1.5 µs)
        return _MPI
    if "mpi4py.MPI" not in sys.modules:
        os.environ.setdefault("MPIR_CVAR_NO_COLLECTIVE_FINALIZE", "1")
        if (
            _under_launcher()
            and os.environ.get("PMI_RANK", "0") != "0"
            and threading.current_thread() is threading.main_thread()  # (else refused, once
        ):  # MPI has started on every rank: see ``_refuse_a_thread``)
            _guard(int(os.environ["PMI_RANK"]))
    from mpi4py import MPI

    _MPI = MPI
    if MPI.COMM_WORLD.Get_size() == 1:  # (a master started alone, a spawned slave)
        _unname_mpi_memory()
    return MPI


_MPI: Any = None


def _refuse_a_thread() -> None:
    """Refuse the ranks of an MPI job to a thread other than the main one (``IN_A_THREAD``).
    Every rank refuses, and only once MPI has started on all: a rank that refused before,
    without MPI, left the others waiting for it in ``MPI_Init``."""
    if threading.current_thread() is not threading.main_thread():
        raise MultiError(IN_A_THREAD)


def _unname_mpi_memory() -> None:
    """Take their name off the shared memory files of MPICH that this process maps.

    MPICH gives the processes of a job on one host a file in /dev/shm (1 MB), which it removes
    only as they leave MPI: a process killed, an abort, a program that runs itself again under
    mpiexec never do, and the file would stay for as long as the machine runs. Called once
    every process that shares it has mapped it (a process alone in its world, at once; the
    ranks of mpiexec, once all have made the processor), as UCX does with its own: what is
    mapped stays, and nobody opens it by its name later.
    """
    for path in mapped_mpi_memory():
        if path.startswith(MPICH_MEMORY) and not path.endswith(b" (deleted)"):
            with suppress(OSError):
                os.unlink(path)


def mapped_mpi_memory(maps: str = "/proc/self/maps") -> set[bytes]:
    """The shared memory files of MPICH that a process maps, as its ``maps`` names them (those
    whose name was taken off end with " (deleted)"); none where it cannot be read."""
    try:
        with open(maps, "rb") as lines:
            return {line.split(None, 5)[5].rstrip() for line in lines if MPICH_MEMORY in line}
    except (OSError, IndexError):
        return set()


def named_mpi_memory() -> set[str]:
    """The shared memory files of MPICH on this host that still have a name."""
    return set(glob.glob(os.fsdecode(MPICH_MEMORY) + "*"))


def _wait(
    test: Callable[[], Any],
    seconds: float | None = None,
    spin: float = 0.0,
    longest: float = LONGEST_WAIT,
    sleep: Callable[[float], Any] | None = None,
    first: float = FIRST_WAIT,
) -> Any:
    """Call ``test`` until it gives a true value, and return it, sleeping ever longer between
    calls (from ``first`` up to ``longest``, never past the timeout); False on timeout. The
    sleep is ``time.sleep``, or a doorbell's, which a ring ends early (it returns True then).

    For the first ``spin`` seconds it does not sleep: a quick answer is then taken without the
    cost of waking up (a sleep lasts 50 µs at least), and a slow one costs that little CPU.
    Only a thread alone in its process may spin: it holds the GIL while it does. A ring whose
    report the tests do not show yet has it spin ``SPIN_SECONDS`` too: a slave rings once its
    send has started, and MPI may show a large report a little later. (Asleep again at once,
    the master woke ``BELL_WAIT`` later, 3 times in 2,000 reports of 1 MiB.)

    It tests twice before its first sleep and after each: MPICH's ``Iprobe`` takes in a
    message that came meanwhile at its first call and shows it at the second (always, on
    shared memory), so that a single test found it a whole sleep late: the first batch after an
    idle spell reached its slave 5 ms after it was sent, where the slave slept 3 ms at a time;
    a report that came with the one before, whose ring that one's wait took, was taken a whole
    ``BELL_WAIT`` late.
    """
    start = time.monotonic()
    spin_until = start + spin
    sleep = time.sleep if sleep is None else sleep
    if found := test():  # (the loop's first test is the second)
        return found
    while not (found := test()):
        now = time.monotonic()
        if now < spin_until:
            continue
        waited = now - start
        if seconds is not None and waited > seconds:
            return False
        pause = min(longest, max(first, WAIT_GROWTH * waited))
        rung = sleep(pause if seconds is None else max(0.0, min(pause, seconds - waited)))
        if found := test():  # (and the loop's own test is the second after the sleep)
            return found
        if rung is True:
            spin_until = time.monotonic() + SPIN_SECONDS
    return found


class _Waiter:
    """The master's waits for its slaves, which spin first (see ``_wait``) unless the last one
    took longer than ``SLOW_WAIT``: a master whose slaves ran 50 ms commands spun 300 µs at
    each of their reports for nothing, near a core's 1 % on top of its sleeps, taken from the
    slaves. (The bar is well above the spin: waits that a sleep made late by some 100 µs would
    each make the next one late.) A slave's wait for work always spins: the next batch, when
    the master has one, comes at once, and one late by a sleep made the 99th percentile of a
    round trip on 16 slaves five times as long.

    With a doorbell (slaves on the master's host, see ``multi.doorbell``), the master sleeps
    until a ring. While it waits for slaves that ring, alone, it sleeps ``BELL_WAIT`` at once;
    else it naps as ever, woken early by a ring."""

    __slots__ = ("bell", "quick")

    def __init__(self, bell: Doorbell | None = None) -> None:
        self.quick = True
        self.bell = bell

    def wait(
        self, test: Callable[[], Any], seconds: float | None = None, ringing: bool = False
    ) -> Any:
        """Wait for ``test`` (see ``_wait``); ``ringing`` says that the slaves waited for all
        ring the bell."""
        start = time.monotonic()
        spin = SPIN_SECONDS if self.quick else 0.0
        bell = self.bell
        if bell is None:
            found = _wait(test, seconds, spin)
        elif ringing:
            found = _wait(test, seconds, spin, BELL_WAIT, bell.sleep, BELL_WAIT)
        else:
            found = _wait(test, seconds, spin, sleep=bell.sleep)
        self.quick = time.monotonic() - start < SLOW_WAIT
        return found


def _probed_twice(probe: Callable[[], bool]) -> bool:
    """Whether a message is there, asked of MPI twice where the first says no: MPICH's
    ``Iprobe`` takes in what came since the last call to MPI at its first call, and shows it
    at the second (see ``_wait``)."""
    return bool(probe() or probe())


def _out_of_band(frames: wire.Frames) -> list[pickle.PickleBuffer]:
    """Frames as buffers that pkl5 sends as they are, the pickle stream included."""
    return [f if isinstance(f, pickle.PickleBuffer) else pickle.PickleBuffer(f) for f in frames]


def _isend(comm: Any, obj: Any, peer: int, tag: int) -> Any:
    """Start sending a message: a batch or a report (``WORK``, ``OUTCOMES``) is the frames
    that ``wire`` made, which a small lone stream leaves as it is (``PLAIN``); anything else is
    an object for pkl5 to pickle."""
    if tag not in (WORK, OUTCOMES):
        return comm.isend(obj, peer, tag)
    if len(obj) == 1 and len(obj[0]) <= PLAIN_BYTES:
        return comm.Isend(obj[0], peer, tag + PLAIN)
    return comm.isend(_out_of_band(obj), peer, tag)


def _recv(comm: Any, peer: int, status: Any) -> tuple[int, Any]:
    """Receive the message from ``peer`` that a probe described in ``status``: its tag without
    ``PLAIN``, and the object, or the frames of a batch or a report. (The probe's status gives
    the size of a plain message: probing again would cost a call to MPI's progress engine.)"""
    tag = status.Get_tag()
    if tag < PLAIN:
        return tag, comm.recv(None, peer, tag)
    stream = bytearray(status.Get_count(_mpi().BYTE))
    comm.Recv(stream, peer, tag)
    return tag - PLAIN, [stream]


# A slave's guard -----------------------------------------------------------------------------


def _guard(
    rank: int,
    notes: str | None = None,
    master: str | None = None,
    survives: bool = False,
    key: int | None = None,
) -> None:
    """Fork before MPI starts: the child goes on as the slave, the parent stays as its guard.

    MPICH's launcher ends every process of a job as soon as one of its own children dies by a
    signal, even under ``mpiexec -disable-auto-cleanup``, which survives only a plain exit. The
    guard, the launcher's child, outlives the slave and ends with an exit status instead (128 +
    the signal). It names the death on stderr, and for its master in a note in ``notes``, with
    a SIGUSR1 to ``master`` ("host:pid") where it runs on the same host. A slave of mpiexec
    learns those two from its master once MPI runs, and passes them on (``_tell_guard``).
    Where the master ``survives`` the death, so named, the guard ends with status 0: a failed
    process would make the status of mpiexec its own.

    A spawned slave's guard, which knows ``notes`` from the start, notes there its slave's pid
    (``_slave_pid``) under its ``key`` (the slave's rank where none is given): the master ends
    a slave that way, and then the guard leaves quietly.

    The guard holds the files where its slave captures what commands write (``_guard_files``):
    it reads what a command wrote before its slave died, for the note of the death, and, on
    the master's host, tells where they are (``_guard_files_of``), for a slave the master ends.
    """
    global _guard_pipe, _guard_task, _guard_files
    if "mpi4py.MPI" in sys.modules or not hasattr(os, "fork"):
        return  # MPI runs already in this process: the launcher knows it by its own pid
    sys.stdout.flush()
    sys.stderr.flush()
    guard = os.getpid()
    read, write = os.pipe()
    key = rank if key is None else key
    task = _task_memory(notes, key)  # shared with the slave
    files = unnamed_files()
    if notes is not None and os.path.isdir(notes):  # (on the master's host)
        _write_note(notes, f"{key}.files", " ".join(map(str, (guard, *files))))
    child = os.fork()
    if child == 0:
        os.close(read)
        _guard_pipe, _guard_task, _guard_files = write, task, files
        _die_with(guard)
        return
    os.close(write)
    signal.signal(FAILED, signal.SIG_IGN)  # the launcher's news of a failure is the master's
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the slave takes Ctrl-C itself
    signal.signal(signal.SIGTERM, lambda number, frame: os.kill(child, number))
    if notes is not None:
        os._exit(_guard_spawned(rank, key, child, task, files, notes, master, survives))
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    # What its commands left in the group the guard leads (mpiexec ends a rank's group only
    # when the job fails); only where the guard leads a session of its own, as each rank of
    # MPICH's mpiexec does: another launcher's group may hold other ranks (Slurm's, a node's).
    end_what_commands_left(session=True)
    # (a slave that marked its end a leave, with a status, ended on an error that its master
    # reports: ``_leave_to_the_master``)
    if code != 0 and not (code > 0 and task_memory.read(task)[0] == LEFT):
        what = f"slave {rank} (pid {child} on {socket.gethostname()}) {ending(code)}"
        os.set_blocking(read, False)  # where to note the death, if the slave passed it on
        with suppress(OSError, ValueError):
            notes, master = os.read(read, 4096).decode().splitlines()[:2]
        if code < 0 and notes is None:
            if code != -signal.SIGINT:  # (Ctrl-C needs no word)
                print(f"multi: {what} as it started: the MPI job ends", file=sys.stderr)
            # No master can go on without it: one still in MPI_Init waits for it for ever. A
            # death by a signal has mpiexec end every rank, as it ends a plain program's; the
            # guard's plain exit did not (a Ctrl-C as the ranks started hung the job so).
            die_by(-code)
        running = task_memory.read(task)[0]
        told = _note_death(what, key, running, descriptors.read_left(files), notes, master)
        if RELAUNCHED in os.environ:  # (under mpiexec with SURVIVE, started by the option)
            if not told:  # (else the master, which survives it, names it)
                print(f"multi: {what}", file=sys.stderr, flush=True)
        else:
            print(
                f"multi: {what}. Unless mpiexec runs with {SURVIVE}, this ends the MPI job: "
                f"{SURVIVAL_HINT}",
                file=sys.stderr,
                flush=True,
            )
        if told and survives:
            code = 0
    os._exit(128 - code if code < 0 else code)


def _guard_spawned(
    rank: int,
    key: int,
    child: int,
    task: mmap.mmap,
    files: descriptors.Files,
    notes: str,
    master: str | None,
    survives: bool,
) -> int:
    """Guard a slave that a master spawned; return the guard's exit status.

    On the master's host the guard notes its slave's pid, so that the master can end it (see
    ``end_slave``), and ends it if the master dies (a master killed outright tells no one).
    A death, which the slave did not mark as a leave (``LEFT``), is told to the master (which
    names it), or else named on stderr, after the slave's session with its launcher is closed
    (``_end_pmi_session``): a replacement that the master spawns must not start before.
    """
    local = os.path.isdir(notes)
    if local:
        _write_note(notes, f"{key}.pid", _address(child))
    try:
        if not _outlived(child, master):
            with suppress(OSError):
                os.killpg(child, signal.SIGKILL)  # the slave, and what its commands started
            shutil.rmtree(notes, ignore_errors=True)
            return 0
        died = os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # (its pid stays its own)
        if died is not None and not (died.si_code == os.CLD_EXITED and died.si_status == 0):
            with suppress(OSError):  # what its commands started and left running
                os.killpg(child, signal.SIGKILL)
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        running = task_memory.read(task)[0]
        if code == 0 and running == LEFT:
            return 0
        _end_pmi_session()
        if local and os.path.exists(_note_path(notes, key, ".ended")):
            return 0  # the master ended it
        what = f"slave {rank} (pid {child} on {socket.gethostname()}) {ending(code)}"
        if (
            _note_death(what, key, running, descriptors.read_left(files), notes, master)
            and survives
        ):
            return 0  # the master names it, with the command and what follows
        print(f"multi: {what}", file=sys.stderr, flush=True)
        return 128 - code if code < 0 else code or 1
    finally:
        for suffix in (".pid", ".task", ".ended", ".files"):
            with suppress(OSError):
                os.unlink(_note_path(notes, key, suffix))


def _outlived(child: int, master: str | None) -> bool:
    """Wait until the slave ``child`` ends (True) or its master ("host:pid", if on this host)
    does (False), where the kernel can say (Linux: pidfd)."""
    pid = _local_pid(master)
    if pid is None or not hasattr(os, "pidfd_open"):
        return True
    try:
        watched = [os.pidfd_open(child), os.pidfd_open(pid)]
    except OSError:
        return True
    return watched[0] in select.select(watched, [], [])[0]


def _end_pmi_session() -> None:
    """End the session of a dead spawned slave with its launcher, as its MPI would have.

    MPICH's launcher ends every process it runs once the session of one (a socket, which the
    guard shares with its slave) closes without a word; where it is told to let the others
    live (``-disable-auto-cleanup``), it sends them all SIGUSR1 instead, which kills a
    replacement still starting, and breaks its own mpiexec where a slave leaves at the same
    time. Told "finalize" first (PMI-1, MPICH's default), it lets the session close quietly.
    """
    fd = os.environ.get("PMI_FD", "")
    if not fd.isdigit() or os.environ.get("PMI_VERSION", "1") != "1":
        return
    with suppress(OSError):
        os.write(int(fd), b"cmd=finalize\n")
        if select.select([int(fd)], [], [], FAREWELL_SECONDS)[0]:
            os.read(int(fd), 4096)  # cmd=finalize_ack


def _task_memory(notes: str | None, key: int) -> mmap.mmap:
    """The memory where a slave shows the command it runs (``multi.task_memory``): to its
    guard, for the note of its death, and where ``notes`` are known from the start (spawned
    slaves), in a file there, to its master on the same host (for its timeouts)."""
    if notes is None or not os.path.isdir(notes):  # (not on the master's host)
        return task_memory.shared()
    with open(_note_path(notes, key, ".task"), "w+b") as file:
        return task_memory.shared(file.fileno())


def _note_task(task_id: int) -> None:
    """Show this slave's guard (and master) the command it runs (-1: none)."""
    if _guard_task is not None:
        task_memory.write(_guard_task, task_id)


def _tell_guard(notes: str, master: str) -> None:
    """Pass on to this slave's guard, if it has one, where to note its death and whom to tell."""
    if _guard_pipe is not None:
        with suppress(OSError):
            os.write(_guard_pipe, f"{notes}\n{master}\n".encode())


def _die_with(guard: int) -> None:
    """Let the kernel end this process when its guard ends (Linux): nothing outlives a job
    that the launcher ends by killing the guards."""
    if sys.platform != "linux":
        return
    end_with_parent()
    if os.getppid() != guard:  # it ended before the kernel was told
        os._exit(1)


def _note_death(
    what: str,
    key: int,
    task: int,
    output: list[tuple[int, str]] | None,
    notes: str | None,
    master: str | None,
) -> bool:
    """Tell the master on this host how a slave died, in a note named ``key`` with a signal:
    the command it ran (``task``), how it died, and what the command wrote. True if told; else
    the master learns it from MPI, or from the heartbeat. The signal waits for the master's
    word that it hears it (SIGUSR1 would end a process that does not)."""
    pid = _local_pid(master)
    if notes is None or pid is None:
        return False
    how = what.partition(" ")[2].partition(" ")[2]
    try:
        _write_note(notes, str(key), json.dumps({"task": task, "how": how, "output": output}))
        if os.path.exists(_note_path(notes, LISTENING)):
            os.kill(pid, FAILED)
    except OSError:
        return False
    return True


def _note_path(notes: str, key: int | str, suffix: str = "") -> str:
    return os.path.join(notes, f"{key}{suffix}")


def _write_note(notes: str, name: str, text: str) -> None:
    """Write a note whole: a reader sees it complete or not at all."""
    with open(os.path.join(notes, f".{name}"), "w") as note:
        note.write(text)
    os.replace(os.path.join(notes, f".{name}"), os.path.join(notes, name))


def _local_pid(address: str | None) -> int | None:
    """The pid of a process "host:pid", where that host is this one."""
    host, _, pid = (address or "").rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


# The master's side ---------------------------------------------------------------------------


class Mpi4py_transport(Transport):
    """The slaves of one MPI job: ranks 1 to P of the world, or slaves the master spawned,
    one ``MPI_Comm_spawn`` each (a communicator of its own, which the master can let go of
    when its slave dies).

    A slave's death reaches the master in two ways besides the heartbeat: MPICH's launcher
    sends the survivors SIGUSR1 where the job survives deaths (``-disable-auto-cleanup``), and
    a spawned slave's guard (see ``_guard``) leaves a note naming how it died, and signals the
    master too. MPI calls themselves say nothing of a dead peer.

    Spawned slaves can be replaced where the job survives a death: a new one is spawned in the
    rank of the dead. Their guards' notes are named by a key of their own, never reused, so
    that a late note of a slave that was replaced is not taken for its successor's.
    """

    pickled = True
    heartbeats = True
    wakes = True

    def __init__(
        self,
        slaves: int,
        world: Any = None,
        spawn: Any = None,
        notes: str | None = None,
        bell: Doorbell | None = None,
    ) -> None:
        """Slaves of ``world`` (a duplicate of COMM_WORLD), whose guards note their deaths in
        ``notes``, and which ring ``bell``; or made by ``spawn(rank, notes, key, survives)``,
        which returns the intercommunicator of one new slave, whose guard notes under ``key``
        (and ends with status 0 where the master ``survives`` its death)."""
        MPI = _mpi()
        self.slaves = slaves
        self.spawned = spawn is not None
        self._spawn = spawn
        self._world = None if world is None else _pkl5(world, spawned=False)
        #: Each slave's communicator, and its rank there.
        self._links: dict[int, tuple[Any, int]] = {}
        if self._world is not None:
            self._links = {rank: (self._world, rank) for rank in range(1, slaves + 1)}
        self._sending: list[tuple[int, Any, Any]] = []  # rank, request, the buffers it sends
        self._work_sent: Counter[int] = Counter()  # batches sent to each slave
        self._answered: Counter[int] = Counter()  # and answered
        #: The slaves a message is awaited from: those that hold work and, once told to
        #: leave, every one. Where each has a communicator of its own (spawned), they alone
        #: are probed: a probe of every slave took each round trip a microsecond per slave.
        self._awaited: set[int] = set()
        self._heard: dict[int, float] = {}  # when each slave last gave a sign of life
        self._given_up: list[tuple[Any, int]] = []  # slaves given up alive (hung)
        self._lost: deque[tuple[int, Slave_lost]] = deque()  # deaths not reported yet
        self._status = MPI.Status()
        self._left = False  # the slaves have been told to leave
        self._woken = False  # (see ``wake``)
        #: Where slaves' guards leave word of their deaths, one file per slave.
        self.notes = _notes_directory() if self.spawned else notes
        self._bell = _doorbell(self.notes) if self.spawned else bell
        self._waiter = _Waiter(self._bell)  # (receive is called by the engine's thread alone)
        #: The key of each slave's notes: its rank, or for a spawned slave a key of its own.
        self._keys = {rank: rank for rank in self._links}
        self._new_keys = itertools.count(1)
        #: What each spawned slave shows that it runs, by key (see ``running``).
        self._tasks: dict[int, mmap.mmap] = {}
        self.replaceable = self.spawned and _spawned_slaves_survive()
        #: Whether a job that loses a slave goes on: under mpiexec, or where it replaces it.
        self.survives = _under_launcher() or self.replaceable
        #: Where SIGUSR1 cannot be heard (no handler: the transport of a thread that is not
        #: the main one, in a program whose main thread made no processor), when to look at
        #: the guards' notes next.
        self._look_at = None if _listen_for_failures() else time.monotonic()
        self._news = _failures.count  # the SIGUSR1 heard so far
        if self._look_at is None:
            _failures.listeners += 1
            if self.notes is not None:
                with suppress(OSError):
                    _write_note(self.notes, LISTENING, "")
        if self.spawned:
            _stop_at_exit(self)

    @property
    def ranks(self) -> Sequence[int]:
        return sorted(self._links)

    def start(self) -> None:
        """Spawn the slaves, one at a time: a communicator that lost a member cannot
        disconnect, but one of its own per slave can be let go of."""
        if self._spawn is not None:
            for rank in range(1, self.slaves + 1):
                self.replace(rank)

    def replace(self, rank: int) -> None:
        """Spawn a slave in ``rank``, whose guard notes under a key never used before."""
        assert self._spawn is not None and self.notes is not None
        key = self._keys[rank] = next(self._new_keys)
        comm = self._spawn(rank, self.notes, key, self.survives)
        self._links[rank] = (_pkl5(comm, spawned=True), 0)
        self._work_sent[rank] = self._answered[rank] = 0
        self._awaited.discard(rank)
        self._heard[rank] = time.monotonic()

    def end_slave(self, rank: int) -> Slave_ended:
        """End a slave: a spawned one on this host is killed (its guard, told so, leaves
        quietly). Any other is given up: MPI cannot stop one process of a job, so it is
        forgotten, and the job ends with the program's status at shutdown (``_farewell``)."""
        slave = _slave_pid(self.notes, self._keys[rank]) if self.replaceable else None
        if slave is not None and self.notes is not None:
            files = _guard_files_of(self.notes, self._keys[rank])  # (open while the guard is)
            try:
                _write_note(self.notes, f"{self._keys[rank]}.ended", "")
                os.killpg(slave, signal.SIGKILL)  # the slave, and what its commands started
            except OSError:
                pass
            else:
                _let_go(*self._forget(rank))
                return Slave_ended(f"(pid {slave})", descriptors.read_left(files))
            finally:
                for fd in files or ():
                    os.close(fd)
        self._given_up.append(self._forget(rank))
        return Slave_ended(f"(MPI rank {rank})")

    def _forget(self, rank: int) -> tuple[Any, int]:
        """Stop talking to a slave: its sends that are pending stay so for ever."""
        self._sending = [entry for entry in self._sending if entry[0] != rank]
        self._awaited.discard(rank)
        self._lost = deque(item for item in self._lost if item[0] != rank)
        memory = self._tasks.pop(self._keys.pop(rank, -1), None)
        if memory is not None:
            memory.close()
        return self._links.pop(rank)

    def send(self, rank: int, payload: Payload) -> None:
        if rank not in self._links:  # it died, and its loss, queued, takes this batch back
            return
        frames: wire.Frames = payload  # type: ignore[assignment]
        self._post(rank, frames, WORK)  # (first: what follows is done while the slave works)
        if self._work_sent[rank] == self._answered[rank]:  # it was idle: the clock starts now
            self._heard[rank] = time.monotonic()
        self._work_sent[rank] += 1
        self._awaited.add(rank)
        self.traffic[rank, "sent"] += wire.size(frames)

    def _post(self, rank: int, obj: Any, tag: int) -> None:
        """Start a send, then drop the sends that are done (after it: a round trip waits for
        the send alone)."""
        comm, peer = self._links[rank]
        request = _isend(comm, obj, peer, tag)
        self._sent()
        self._sending.append((rank, request, obj))

    def _sent(self, rank: int | None = None) -> bool:
        """Whether every send to ``rank`` (to any slave, by default) is done; the sends that
        are done are dropped."""
        self._sending = [entry for entry in self._sending if not entry[1].test()[0]]
        return all(rank is not None and entry[0] != rank for entry in self._sending)

    def _probe(self, status: Any) -> int | None:
        """The rank of a slave with a message there (its tag in ``status``), if any."""
        MPI = _mpi()
        if self._world is not None:
            try:
                while self._world.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
                    if status.Get_source() in self._links:
                        return status.Get_source()  # type: ignore[no-any-return]
                    _recv(self._world, status.Get_source(), status)  # a dead one's
            except MPI.Exception as error:  # a process failed (an MPI with ULFM says so)
                if error.Get_error_class() != MPI.ERR_PROC_FAILED:
                    raise
                _failures.count += 1
            return None
        links = self._links
        for rank in self._awaited:
            comm, peer = links[rank]
            if comm.Iprobe(peer, MPI.ANY_TAG, status):
                return rank
        return None

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        status = self._status
        found: list[int] = []

        def probe() -> bool:
            """A report is there, or news of a death; a heartbeat is taken on the way. What a
            slave sent before it died comes before the news of its death (a batch that it
            finished is not sent again)."""
            while (rank := self._probe(status)) is not None:
                comm, peer = self._links[rank]
                if status.Get_tag() != BEAT:
                    found[:] = [rank]
                    return True
                comm.recv(None, peer, BEAT)
                self._heard[rank] = time.monotonic()
            return _failures.count != self._news or self._woken or self._time_to_look()

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._lost:
            found.clear()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ringing = self._bell is not None and self._awaited <= self._bell.rang
            if not self._waiter.wait(probe, left, ringing):
                return None
            if not found and self._woken:
                self._woken = False
                return None
            if not found:
                self._news = _failures.count
                deaths = self._deaths()  # (which forgets the dead, and their news)
                self._lost.extend(deaths)
                continue
            rank = found[0]
            comm, peer = self._links[rank]
            _, frames = _recv(comm, peer, status)
            report = rebuilt_report(rank, frames)
            self._heard[rank] = time.monotonic()
            self._answered[rank] += 1
            if self._answered[rank] == self._work_sent[rank]:
                self._awaited.discard(rank)
            self.traffic[rank, "received"] += wire.size(frames)
            if report.lost is not None:  # the slave leaves after this report
                self._retire(rank)
            return rank, report
        return self._lost.popleft()

    def _retire(self, rank: int) -> None:
        """Let go of a slave that leaves on its own (an interrupt ended it), as the farewell
        does: it is told how many batches it was sent, which it takes, and says goodbye."""
        MPI = _mpi()
        comm, peer = self._links[rank]
        self._post(rank, self._work_sent[rank], STOP)
        status = MPI.Status()

        def goodbye() -> bool:
            while comm.Iprobe(peer, MPI.ANY_TAG, status):
                _recv(comm, peer, status)
                if status.Get_tag() == BYE:
                    return True
            return False

        left = _wait(goodbye, FAREWELL_SECONDS) and _wait(
            lambda: self._sent(rank), FAREWELL_SECONDS
        )
        self._forget(rank)
        if self.spawned and left:
            comm.Disconnect()
        elif self.spawned:
            _let_go(comm, peer)

    def _time_to_look(self) -> bool:
        """Whether to look at the guards' notes now, where no SIGUSR1 says when."""
        if self._look_at is None or time.monotonic() < self._look_at:
            return False
        self._look_at = time.monotonic() + NOTES_SECONDS
        return True

    def _deaths(self) -> list[tuple[int, Slave_lost]]:
        """The slaves that died since last asked: named by their guards' notes, or by MPI.

        Where spawned slaves cannot survive a death (an MPI other than MPICH, in a master
        started alone), every slave is lost with the first.
        """
        global _singleton_broken
        noted = _notes(self.notes) if self.notes is not None else {}
        named = {rank: noted[key] for rank, key in self._keys.items() if key in noted}
        failed = set(named) | (_failed_in(self._world) if self._world is not None else set())
        dead = [rank for rank in self.ranks if rank in failed]
        if not dead:
            return []
        reasons = {
            rank: named[rank][1] if rank in named else f"(MPI rank {rank}) died, as MPI reports"
            for rank in dead
        }
        if self.spawned and not self.survives:
            first = f"slave {dead[0]} {reasons[dead[0]]}"
            if _singleton_broken is None:
                atexit.register(_end_unfinalized)  # (runs before mpi4py finalizes MPI)
            _singleton_broken = f"{first}. {SINGLETON_DEATH}"
            reasons = {
                rank: f"{reasons.get(rank, f'was ended by MPI when {first}')}. {SINGLETON_DEATH}"
                for rank in self.ranks
            }
        deaths = []
        for rank, reason in reasons.items():
            # (what a guard noted, the slave showed it: else only whether it had work is known)
            idle = self._work_sent[rank] == self._answered[rank]
            task, _, output = named.get(rank, (task_memory.IDLE, "", None))
            lost = Slave_lost.showing(rank, reason, task, output, rank in named, idle)
            deaths.append((rank, lost))
            link = self._forget(rank)
            if self.spawned:
                _let_go(*link)
        return deaths

    def running(self, rank: int) -> tuple[int, float] | None:
        """What a spawned slave on this host shows that it runs (see ``_task_memory``)."""
        key = self._keys.get(rank)
        if not self.spawned or key is None:
            return None
        if key not in self._tasks:
            found = task_memory.mapped(_note_path(self.notes or "", key, ".task"))
            if found is not None:
                self._tasks[key] = found
        memory = self._tasks.get(key)
        if memory is None:
            return None
        task, since = task_memory.read(memory)
        return (task, since) if task >= 0 else None

    def silent_for(self, rank: int) -> float | None:
        return time.monotonic() - self._heard[rank]

    def wake(self) -> None:
        """The wait under way sees the flag at its next look: at once where a ring of the
        doorbell ends its sleep, else within ``LONGEST_WAIT``."""
        self._woken = True
        bell = self._bell
        if bell is not None:
            bell.ring()

    def stop(self, timeout: float, status: int = 0) -> None:
        self._farewell(STOP, timeout, status)

    def kill(self, status: int = 1) -> None:
        self._farewell(KILL, FAREWELL_SECONDS, status)

    def _farewell(self, tag: int, timeout: float, status: int) -> None:
        """Tell every slave to leave (saying how many batches it was sent, which it takes
        before it leaves, so that no send stays pending), and wait until each has said
        goodbye. A slave that does not leave in time ends the MPI job, with ``status``: the
        program's exit status survives a slow slave."""
        global _exit_status
        if self._left:
            return
        self._left = True
        _exit_status = status
        _spawned_open.discard(self)
        if self._look_at is None:
            _failures.listeners -= 1
        if not _failures.listeners:  # (another transport may live on, which still hears it)
            _stop_listening()  # slaves that leave are taken for failed: no news is for us now
        self._look_at = time.monotonic()  # (so deaths are found in the notes)
        MPI = _mpi()
        if MPI.Is_finalized():
            return
        self._deaths()  # (slaves that died since: no word is for them)
        for rank in self.ranks:
            self._post(rank, self._work_sent[rank], tag)
        self._awaited.update(self._links)  # a goodbye from each
        probe, left = MPI.Status(), set()

        def goodbye() -> bool:
            if self._time_to_look():
                self._deaths()
            while (rank := self._probe(probe)) is not None:
                comm, peer = self._links[rank]
                _recv(comm, peer, probe)  # reports nobody awaits now
                if probe.Get_tag() == BYE:
                    left.add(rank)
            return set(self.ranks) <= left

        seconds = max(timeout, FAREWELL_SECONDS)
        if not _wait(goodbye, seconds) or not _wait(self._sent, seconds) or self._given_up:
            late = ", ".join(str(rank) for rank in self.ranks if rank not in left)
            if late:
                why = f"slave(s) {late} did not stop within {seconds:g} s"
            else:
                why = f"{len(self._given_up)} slave(s) were given up"
            print(
                f"multi: {why}: ending the MPI job with status {status}",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(ABORT_GRACE_SECONDS)  # mpiexec forwards what was printed before the end
            if self.notes is not None:  # (nothing runs after the abort)
                shutil.rmtree(self.notes, ignore_errors=True)
            # On COMM_WORLD itself: MPICH's mpiexec then exits with the status given, where an
            # abort on a duplicate of it races with the ranks it kills (status 9 at times).
            MPI.COMM_WORLD.Abort(status)
        if self.spawned:
            guards = _watch_guards(self.notes, [self._keys[rank] for rank in self.ranks])
            try:
                for comm, _ in self._links.values():
                    comm.Disconnect()
            finally:
                _wait_ended(guards, FAREWELL_SECONDS)  # (which closes their descriptors)
        elif self._world is not None:
            self._world.Free()
        self._links.clear()
        for memory in self._tasks.values():
            memory.close()
        self._tasks.clear()
        if self._bell is not None:
            _failures.bells.discard(self._bell)
            self._bell.close()
        if self.notes is not None:
            shutil.rmtree(self.notes, ignore_errors=True)


def _let_go(comm: Any, peer: int) -> None:
    """Free the communicator of a spawned slave that died (with a dead member, it cannot
    disconnect), taking first what the slave sent that nobody received: MPI would complain
    of it as it ends."""
    MPI = _mpi()
    status = MPI.Status()
    while comm.Iprobe(peer, MPI.ANY_TAG, status):
        size = status.Get_count(MPI.BYTE)
        MPI.Comm.Recv(comm, [bytearray(size), MPI.BYTE], peer, status.Get_tag())
    comm.Free()


class _failures:
    """What this process heard of failures: a count of SIGUSR1, which each transport compares
    with the count it last saw."""

    count = 0
    listening = False
    listeners = 0  # the transports that rely on it, not on looking at their notes
    ends = False  # whether the program stops listening at its end
    bells: ClassVar[set[Doorbell]] = set()  # the masters' doorbells, which a failure rings


def _doorbell(notes: str | None) -> Doorbell | None:
    """A master's doorbell in the directory of its notes, rung by the failures it hears too;
    None where no FIFO can be made there."""
    if notes is None:
        return None
    try:
        bell = Doorbell(notes)
    except OSError:
        return None
    _failures.bells.add(bell)
    return bell


def _listen_for_failures() -> bool:
    """Hear SIGUSR1 from now on, if this is the main thread (or it did already)."""
    if not _failures.listening and threading.current_thread() is threading.main_thread():
        signal.signal(FAILED, _on_failure_signal)
        _failures.listening = True
        if not _failures.ends:  # (Python's handlers are gone by its very end)
            _failures.ends = bool(atexit.register(_stop_listening))
    return _failures.listening


def _on_failure_signal(number: int, frame: Any) -> None:
    _failures.count += 1
    for bell in list(_failures.bells):  # (a master asleep on its doorbell wakes to it)
        bell.ring()


def _stop_listening() -> None:
    if _failures.listening and threading.current_thread() is threading.main_thread():
        signal.signal(FAILED, signal.SIG_IGN)
        _failures.listening = False


def _exit_plainly_if_interrupted() -> None:
    """At the end of a master of ``mpiexec`` ranks that Ctrl-C ends (a KeyboardInterrupt that
    nothing caught), have Python end it with status 130 rather than by SIGINT, which it sends
    itself once MPI is finalised: SIGINT held back, it exits with that status instead.

    MPICH's mpiexec ends every process of a job as soon as one dies by a signal, and the
    slaves, which had left as told, were still ending: it killed them, and reported the job's
    statuses together, 2 | 9, as a segmentation fault (in 5 runs of 6). (Held back in this
    thread only: another thread of the program that still runs, and does not hold it back,
    takes the signal, and the process dies by it as before.)"""
    if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _abort_interrupted() -> None:
    """End a master of ``mpiexec`` ranks whose program Ctrl-C ended after its end (dropping
    the calls of an open executor) as ``python -m mpi4py`` ends one that Ctrl-C interrupted:
    the job aborted with status 130. Killed by SIGINT, or ended with 130 while its slaves
    still left, it had mpiexec kill them and report the job as a crash (a segmentation
    fault, 2 | 9)."""
    MPI = _mpi()
    if MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.COMM_WORLD.Abort(128 + signal.SIGINT)


def _address(pid: int) -> str:
    """How a process of this host is found from another process: "host:pid" (the master by
    its slaves' guards, a spawned slave by its master; see ``_local_pid``)."""
    return f"{socket.gethostname()}:{pid}"


def _pkl5(comm: Any, spawned: bool) -> Any:
    """A communicator that sends pickles with their large buffers out of band."""
    from mpi4py.util import pkl5

    return (pkl5.Intercomm if spawned else pkl5.Intracomm)(comm)


def _spawned_slaves_survive() -> bool:
    """Whether a master goes on when a slave it spawned dies, and can spawn another: under
    MPICH, whose launcher lets the others be once the slave's guard ended its session (see
    ``_end_pmi_session``)."""
    return _mpi().get_vendor()[0] == "MPICH"  # type: ignore[no-any-return]


def _under_launcher() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec), not as a singleton."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _notes_directory() -> str:
    """A directory for the notes of slaves' deaths, which lives as long as the master."""
    return scratch.directory(NOTES_KIND)


#: What a guard notes of its slave's death: the command it ran (or what it did between
#: commands, as ``multi.task_memory`` says it), how it died, and what the command wrote, as
#: (stream, text).
Death = tuple[int, str, list[tuple[int, str]] | None]


def _notes(directory: str) -> dict[int, Death]:
    """What slaves' guards wrote of their deaths, by key. Each note is read once."""
    notes = {}
    with suppress(OSError):
        for name in os.listdir(directory):
            if name.isdigit():
                path = os.path.join(directory, name)
                with suppress(OSError, ValueError), open(path) as note:
                    death = json.load(note)
                    output = [(stream, text) for stream, text in death["output"] or ()]
                    notes[int(name)] = death["task"], death["how"], output or None
                    os.unlink(path)
    return notes


def _guard_note(notes: str | None, key: int) -> tuple[int, int, int] | None:
    """What the guard of a spawned slave on this host noted of itself: its pid, and its
    descriptors of the slave's capture files; None where it noted nothing (another host)."""
    with suppress(OSError, ValueError), open(_note_path(notes or "", key, ".files")) as file:
        guard, out, err = map(int, file.read().split())
        return guard, out, err
    return None


def _guard_files_of(notes: str | None, key: int) -> descriptors.Files | None:
    """The capture files of a spawned slave on this host, opened here through its guard's
    descriptors (which the guard noted), or None."""
    note = _guard_note(notes, key)
    return None if note is None else descriptors.files_of(note[0], note[1:])


def _watch_guards(notes: str | None, keys: Sequence[int]) -> list[int]:
    """Descriptors that tell when the guards of the spawned slaves ``keys`` on this host end
    (Linux: pidfd), opened while they live: they wait for their slaves, which are leaving."""
    watched = []
    for key in keys:
        note = _guard_note(notes, key)
        if note is not None:
            with suppress(OSError, AttributeError):  # (gone already; no pidfd: not Linux)
                watched.append(os.pidfd_open(note[0]))
    return watched


def _wait_ended(watched: list[int], seconds: float) -> None:
    """Wait (up to ``seconds``) until the processes that ``watched`` are pidfds of have ended,
    and close those.

    A master that ends while its spawned slaves' guards still run has MPICH's launcher kill
    them (SIGKILL), which it then reports as a "BAD TERMINATION" of the job: a slave that left
    takes its guard a moment to see it, longer on a busy machine.
    """
    deadline = time.monotonic() + seconds
    watch = select.poll()  # (select would refuse a descriptor past 1023)
    for fd in watched:
        watch.register(fd, select.POLLIN)
    try:
        waiting = len(watched)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in watch.poll(left * 1000):
                watch.unregister(fd)
                waiting -= 1
    finally:
        for fd in watched:
            os.close(fd)


def _slave_pid(notes: str | None, key: int) -> int | None:
    """The pid of a spawned slave, from its guard's note, where it runs on this host."""
    with suppress(OSError), open(_note_path(notes or "", key, ".pid")) as file:
        return _local_pid(file.read())
    return None


def _failed_in(world: Any) -> set[int]:
    """The ranks of ``world`` (a duplicate of COMM_WORLD) that MPI knows have failed: through
    ULFM where the MPI has it (Open MPI 5 under ``mpiexec --with-ft ulfm``), acknowledged so
    that its receives from any source work again; through MPICH's ``MPIX_Comm_get_failed``
    (on COMM_WORLD, through ctypes: mpi4py's ULFM calls are stand-ins with MPICH)."""
    MPI = _mpi()
    if MPI.get_vendor()[0] == "MPICH":
        return _failed_in_mpich()
    try:
        group = world.Get_failed()
        world.Ack_failed()
    except (NotImplementedError, MPI.Exception):
        return set()
    return _ranks_of(group, world)


def _failed_in_mpich() -> set[int]:
    import ctypes

    MPI = _mpi()
    try:
        library = ctypes.CDLL("libmpi.so.12", mode=os.RTLD_NOLOAD)
        get_failed = library.MPIX_Comm_get_failed
    except (OSError, AttributeError):
        return set()
    handle = ctypes.c_int()
    if get_failed(ctypes.c_int(MPI._handleof(MPI.COMM_WORLD)), ctypes.byref(handle)) != 0:
        return set()
    return _ranks_of(MPI.Group.f2py(handle.value), MPI.COMM_WORLD)


def _ranks_of(group: Any, comm: Any) -> set[int]:
    """The ranks in ``comm`` of the members of ``group`` (which is freed)."""
    MPI = _mpi()
    whole = comm.Get_group()
    try:
        ranks = MPI.Group.Translate_ranks(group, list(range(group.Get_size())), whole)
    finally:
        group.Free()
        whole.Free()
    return set(ranks)


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


def _serve_master(
    processor: Processor,
    comm: Any,
    rank: int,
    slaves: int,
    ring: Callable[[], None] | None = None,
) -> None:
    """Run batches for the master until it says stop; then say goodbye. Each report, once
    sent, rings the master's doorbell, where ``ring`` does (see ``multi.doorbell``).

    The main thread takes the master's messages in order. While it runs a command, a watcher
    thread looks every ``WATCH_SECONDS`` for KILL alone (MPI lets a message of another tag
    overtake), and interrupts the command if it comes. Told to leave, a slave first takes every
    batch the master says it sent, so that none of the master's sends stays pending. A lock
    serialises the MPI calls (MPI_THREAD_SERIALIZED is enough).

    A report goes without waiting for its send to be done: the slave looks for its next batch
    meanwhile, and takes it in. It runs it only once every report has left, though: the master
    reads a large report straight from the slave's memory (MPI's large messages), and a slave
    that died in its next batch before the master had read it took the master down with it
    (UCX's process_vm_readv of a process that is gone aborts). Each send's request, which
    holds its buffers, is kept until the send is done; those still on their way as the slave
    leaves are waited for with its goodbye.
    """
    MPI = _mpi()
    lock = threading.Lock()
    running = _Flag()
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
            return _recv(comm, MASTER, status)

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
                if not _probed_twice(lambda: comm.Iprobe(MASTER, KILL, status)):
                    continue
                batches["sent"] = comm.recv(None, MASTER, KILL)
            killed.set()
            if running.is_set() and main is not None:
                signal.pthread_kill(main, signal.SIGINT)

    spawned = comm.Is_inter()  # (not a rank of mpiexec, which passes Ctrl-C to all)
    idle_sleep = _idle_sleep(slaves, spawned)

    def receive() -> list[Any] | None:
        tag, payload = _wait(take, spin=SPIN_SECONDS, longest=idle_sleep)
        if tag != WORK:  # STOP or KILL, with the number of batches the master sent
            batches["sent"] = payload
            return None
        batches["received"] += 1
        if sending and not reported():  # (what the batch runs could end the slave: its
            _wait(reported, spin=SPIN_SECONDS)  # reports go first)
        return payload  # type: ignore[no-any-return]

    sending: list[Any] = []  # reports on their way (a request holds its buffers until sent)

    def reported() -> bool:
        """Whether every report has left (the requests of the sends that are done dropped)."""
        with lock:
            sending[:] = [request for request in sending if not request.test()[0]]
            return not sending

    def told_to_leave() -> bool:
        """Whether the master has said stop, or drop the work (STOP, KILL)."""
        with lock:
            return killed.is_set() or _probed_twice(
                lambda: comm.Iprobe(MASTER, STOP, status) or comm.Iprobe(MASTER, KILL, status)
            )

    def reply(report: Report, batch: Batch | None) -> None:
        if report.interruption is not None and not killed.is_set() and not spawned:
            # Ctrl-C, which mpiexec passes to every rank: the master, interrupted too, is
            # about to say stop, and a report that came first would be told as a death and a
            # command run again, as the program ended. A slave interrupted alone is lost
            # once the grace is over. (A command's own KeyboardInterrupt is its failure.)
            with suppress(KeyboardInterrupt):  # (Ctrl-C again: the report goes now)
                _wait(told_to_leave, INTERRUPT_GRACE)
        frames = seal(report, batch[1] if batch is not None else ())
        with lock:  # (none is on its way: the batch ran once all had left, see ``receive``)
            sending.append(_isend(comm, frames, MASTER, OUTCOMES))
        if ring is not None:
            ring()

    def at_hand() -> bool:
        if sending:  # (looked at meanwhile: the next batch then finds every report gone)
            reported()
        with lock:
            return killed.is_set() or _probed_twice(lambda: comm.Iprobe(MASTER, MPI.ANY_TAG))

    def note(task_id: int) -> None:
        (running.set if task_id >= 0 else running.clear)()
        _note_task(task_id)

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
                if not (
                    comm.Iprobe(MASTER, WORK + PLAIN, status) or comm.Iprobe(MASTER, WORK, status)
                ):
                    return False
                _recv(comm, MASTER, status)
            batches["received"] += 1
        return True

    raise_on_sigint()  # (the master's order comes as one too: see ``watch``)
    watcher = threading.Thread(target=watch, name="multi-mpi-watcher", daemon=True)
    watcher.start()
    context = Slave_context(rank, slaves, processor.data_store, signalled=by_sigint)
    context.descriptors = Descriptor_capture(_guard_files or unnamed_files(), rank)
    context.logs = Log_forwarding(rank)
    try:
        # (a spawned slave starts with SIGINT held back: a Ctrl-C that came as it started
        # ends it here)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        serve(processor, context, receive, reply, note, at_hand)
    except KeyboardInterrupt:  # told to drop the work (KILL), or Ctrl-C under mpiexec
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        context.descriptors.close()
        sys.stdout.flush()
        sys.stderr.flush()
        running.clear()
        finished.set()
        watcher.join()
        _wait(drained, FAREWELL_SECONDS)
        with lock:
            sending.append(comm.isend(None, MASTER, BYE))
        _wait(reported, FAREWELL_SECONDS)


def _idle_sleep(slaves: int, spawned: bool) -> float:
    """The longest sleep of an idle slave: the MPI processes of its host, idle together, look
    for work about as often as one process per core every ``LONGEST_WAIT`` (within
    ``LONGEST_WAIT`` and ``IDLE_LONGEST_WAIT``). Spawned slaves are counted beside their master
    (each is spawned alone: the launcher counts one); under a launcher, as it counts them."""
    local = slaves + 1
    if not spawned:
        for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):  # MPICH, Open MPI
            with suppress(KeyError, ValueError):
                local = int(os.environ[name])
                break
    return min(IDLE_LONGEST_WAIT, max(LONGEST_WAIT, LONGEST_WAIT * local / usable_cores()))


class _Flag:
    """A flag that one thread raises and lowers at every batch and another waits for: a lock
    held while it is down. An Event, whose ``set`` takes a lock and notifies, cost 1.8 µs to
    raise and lower; this, 0.14 µs."""

    def __init__(self) -> None:
        self._down = threading.Lock()
        self._down.acquire()
        self.up = False

    # A KeyboardInterrupt may come between any two steps (and the slave lowers the flag on its
    # way out): the lock is let go before the flag says up, and the flag says down before the
    # lock is taken, so that an interrupted step leaves the lock free, never held by nobody
    # with the flag up, where lowering it would wait for ever.

    def set(self) -> None:
        if not self.up:
            self._down.release()
            self.up = True

    def clear(self) -> None:
        if self.up:
            self.up = False
            self._down.acquire()  # (at most as long as a ``wait`` holds it: a moment)

    def is_set(self) -> bool:
        return self.up

    def wait(self, timeout: float) -> bool:
        """Whether the flag is up, waiting up to ``timeout`` seconds for it."""
        if not self._down.acquire(timeout=timeout):
            return False
        self._down.release()
        return True


# Slaves spawned by a master started alone ----------------------------------------------------


def spawned_slave_main() -> None:
    """The program of a slave spawned by a master started alone, with arguments its rank, the
    number of slaves, where to note its death and under which key, its master ("host:pid"),
    and whether the master survives its death."""
    global _spawned_as
    rank, slaves, notes, key, master, survives = sys.argv[1:7]
    _spawned_as = int(rank), int(slaves)
    _guard(int(rank), notes, master, survives == "survives", int(key))
    with suppress(OSError):  # a group of its own: what its commands start, it can end
        os.setpgid(0, 0)
    MPI = _mpi()
    parent = MPI.Comm.Get_parent()
    take_place(parent.recv(None, MASTER, SETUP), f"slave {rank}")
    processor = Mpi4py_processor(callback=None)
    processor._where = notes, master
    Processor_box().processor = processor
    processor.serve()


def _end_unfinalized() -> None:
    """End a singleton master whose slaves died without finalising MPI, which would crash
    there (MPICH), with the status the program gave its processor (1 if it gave none)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status or 1)


#: Where a slave passes on to its guard what the guard needs to tell its master (``_guard``).
_guard_pipe: int | None = None
#: Where a slave captures what its commands write: files its guard holds too.
_guard_files: descriptors.Files | None = None
#: The memory this slave shares with its guard: the command it runs (``_note_task``).
_guard_task: mmap.mmap | None = None
#: The "command" of a slave that left as told: its guard then knows that it did not die.
LEFT = task_memory.LEFT
#: The note by which a master says that it hears SIGUSR1 (see ``_note_death``).
LISTENING = "listening"
#: The status a master last gave its slaves as it stopped them (see ``_end_unfinalized``).
_exit_status: int | None = None
#: The rank and number of slaves of this process, a spawned slave.
_spawned_as: tuple[int, int] | None = None
#: Whether a processor of this program took the ranks of ``mpiexec -n P+1`` as its slaves.
_world_taken = False
#: Why a master started alone cannot spawn slaves again: one died (see ``SINGLETON_DEATH``).
_singleton_broken: str | None = None


def _agreed(world: Any, make: Callable[[], None]) -> None:
    """Call ``make`` on every rank of ``world``; if it raised on some rank, raise on every one.

    A processor refused on some ranks only (an option whose file exists on the master's node
    alone) left the others waiting in the collectives that follow, for ever. The rank that
    refused raises its own error; the others say which rank refused, and why. Once all have
    answered, each has mapped MPICH's shared memory, whose name goes then
    (``_unname_mpi_memory``), made or refused.
    """
    try:
        make()
    except Exception as exc:
        error: Exception | None = exc
    else:
        error = None
    why = None if error is None else f"{type(error).__name__}: {error}"
    refusals = [(rank, text) for rank, text in enumerate(world.allgather(why)) if text]
    _unname_mpi_memory()  # (every rank has mapped it, having answered: a refusal left it)
    if error is None and refusals:
        rank, text = refusals[0]
        error = MultiError(
            f"the mpi4py processor was refused on rank {rank} of this MPI job, which every "
            f"rank must make alike: {text}"
        )
    if error is not None:
        if world.Get_rank() != MASTER:
            _leave_to_the_master(error)
        raise error


def _leave_to_the_master(error: BaseException) -> None:
    """Let the master alone report ``error``, which every rank raises, where nothing catches
    it: a slave rank then ends with status 1 in silence, and its guard names no death. (A
    mistyped option printed its traceback once per rank, and every slave's guard took the
    slave's end for a death that might end the job.)"""
    error.multi_told_by_master = True  # type: ignore[attr-defined]
    if not isinstance(sys.excepthook, _Quiet_for_the_master):
        sys.excepthook = _Quiet_for_the_master(sys.excepthook)
    if not isinstance(threading.excepthook, _Quiet_for_the_master):  # (made in a thread)
        threading.excepthook = _Quiet_for_the_master(threading.excepthook, thread=True)


class _Quiet_for_the_master:
    """A ``sys.excepthook`` of a slave rank (or, for a ``thread``, ``threading.excepthook``)
    that prints nothing of an error the master reports (``_leave_to_the_master``), and leaves
    every other one to the hook it replaced."""

    def __init__(self, replaced: Callable[..., Any], thread: bool = False) -> None:
        self.replaced = replaced
        self.thread = thread

    def __call__(self, *arguments: Any) -> Any:
        error = arguments[0].exc_value if self.thread else arguments[1]
        if getattr(error, "multi_told_by_master", False):
            _note_task(LEFT)  # (its guard then knows that it did not die)
            return None
        return self.replaced(*arguments)


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
        refuse_on_its_own_slave(Mpi4py_processor, "mpi4py")
        MPI = _mpi()
        world = MPI.COMM_WORLD
        self._parent = MPI.Comm.Get_parent()
        self._comm: Any = None
        self._notes: str | None = None  # where the guards of mpiexec's slaves note deaths
        self._bell: Doorbell | None = None  # which mpiexec's slaves ring
        #: A slave's master's notes and address ("host:pid"), where it was told them.
        self._where: tuple[str | None, str] | None = None
        self._spawned_slave = self._parent != MPI.COMM_NULL
        self._launched = world.Get_size() > 1 and not self._spawned_slave
        if self._spawned_slave:
            self.process_rank = _spawned_as[0] if _spawned_as else world.Get_rank() + 1
        elif self._launched:
            self.process_rank = world.Get_rank()
        if not self._launched:
            if not self._spawned_slave:  # it spawns processes of this machine: it checks
                self.slave_kind = "process"  # that the machine can start them
            super().__init__(processor_size, callback, **options)
            if not self._spawned_slave and _under_launcher():  # (mpiexec -n 1)
                self._end_interrupted_as_mpiexec_wants()
        else:
            global _world_taken
            if _world_taken and self.process_rank == MASTER:  # (its slaves would never answer)
                raise MultiError(
                    "the slaves of this MPI job (ranks 1 to "
                    f"{world.Get_size() - 1}) serve the first mpi4py processor or executor "
                    "of the program only, and end with it: make one for the whole program "
                    "(the joblib backend keeps its own), or start the program alone "
                    "(python app.py), where each one spawns slaves of its own"
                )

            # First what may refuse the processor (the thread, its options, its size), on every
            # rank: one refused takes nothing, and the program's next processor takes the ranks.
            def make() -> None:
                _refuse_a_thread()
                super(Mpi4py_processor, self).__init__(processor_size, callback, **options)

            _agreed(world, make)
            _world_taken = True
            self._comm = world.Dup()  # every rank makes the processor: the collective is safe
            self._notes = _notes_directory() if self.process_rank == 0 else None
            self._bell = _doorbell(self._notes)  # (made before its slaves look for it)
            where = self._comm.bcast((self._notes, _address(os.getpid())), root=MASTER)
            if self.process_rank != 0:
                _tell_guard(*where)
                self._where = where
            else:
                self._end_interrupted_as_mpiexec_wants()
        if self.process_rank == 0:
            _listen_for_failures()  # here, where it may be the main thread (see Executor)

    @staticmethod
    def _end_interrupted_as_mpiexec_wants() -> None:
        """A master that is a rank of ``mpiexec`` ends with status 130 when Ctrl-C ends it,
        not by SIGINT, which mpiexec reports as a crash (see ``_exit_plainly_if_interrupted``)."""
        atexit.register(_exit_plainly_if_interrupted)
        on_interrupted_exit(_abort_interrupted)

    def slave_count(self, requested: int | None) -> int:
        world: int = _mpi().COMM_WORLD.Get_size()
        if self._spawned_slave:
            return _spawned_as[1] if _spawned_as else world
        if self._launched:
            if requested is not None and requested != world - 1 and self.process_rank == 0:
                warn(
                    f"the mpi4py fabric runs {world - 1} slaves, as mpiexec started {world} "
                    f"processes, not the {requested} asked for"
                )
            return world - 1
        wanted = requested if requested is not None else usable_cores()
        launch = self.settings["launch"]
        if launch == "none" or os.environ.get(RELAUNCHED):
            raise ProcessorSizeError(
                f"the mpi4py fabric has no slaves: this program runs as the only MPI process. "
                f"To run {wanted} slaves, {HOW_TO_LAUNCH.replace('P+1', str(wanted + 1))}"
            )
        if launch == "mpiexec":  # (checked first: this process ends there)
            self._check_machine_can_start(wanted)
            self._relaunch(wanted)
        return wanted

    def size_is_given(self) -> bool:
        return bool(self._launched)

    def can_stop_commands(self) -> bool:
        """A slave that a master started alone spawned (MPICH) can be ended and replaced; not
        one of mpiexec, where the program will run again (launch=mpiexec) as well."""
        relaunched = self.settings["launch"] == "mpiexec"
        return not self._launched and not relaunched and _spawned_slaves_survive()

    def _relaunch(self, slaves: int) -> None:
        """Run this program again, from the start, as the master of mpiexec -n P+1."""
        mpiexec = _find_mpiexec()
        if mpiexec is None:
            raise ProcessorSizeError(f"launch=mpiexec, but no mpiexec is on PATH: {INSTALL_HINT}")
        sys.stdout.flush()
        sys.stderr.flush()
        os.environ[RELAUNCHED] = "1"
        survive = [SURVIVE] if _mpi().get_vendor()[0] == "MPICH" else []
        command = [mpiexec, *survive, "-n", str(slaves + 1), sys.executable, *sys.orig_argv[1:]]
        os.execv(mpiexec, command)

    # The slave's side --------------------------------------------------------------------

    def serve(self) -> None:
        """Serve the master until it stops us; then end this process with status 0."""
        if self.serving:
            raise MultiError("the slaves of this MPI job have served their master already")
        self.serving = True  # (from the start: a second call is refused, whatever ended this)
        from mpi4py.util import pkl5

        raw = self._parent if self._spawned_slave else self._comm
        comm = (pkl5.Intercomm if self._spawned_slave else pkl5.Intracomm)(raw)
        _serve_master(self, comm, self.process_rank, self._processor_size, self._ringer())
        if self._spawned_slave:
            raw.Disconnect()
            _note_task(LEFT)
            end_what_commands_left()
        else:
            raw.Free()
        sys.exit(0)

    def _ringer(self) -> Ringer | None:
        """How this slave rings its master's doorbell: where the master runs on this host."""
        if self._where is None:
            return None
        notes, master = self._where
        if notes is None or _local_pid(master) is None:
            return None
        return ringer(notes, self.process_rank)

    # The master's side -------------------------------------------------------------------

    def make_transport(self) -> Transport:
        if self._launched:
            if self._comm is None:
                raise MultiError(
                    "the slaves of this MPI job have stopped: mpiexec started them once, and "
                    "they cannot be started again"
                )
            comm, self._comm = self._comm, None
            return Mpi4py_transport(
                self._processor_size, world=comm, notes=self._notes, bell=self._bell
            )
        if _singleton_broken is not None:
            raise MultiError(f"no slave can be spawned again: {_singleton_broken}")
        return Mpi4py_transport(self._processor_size, spawn=self._spawn)

    def _spawn(self, rank: int, notes: str, key: int, survives: bool) -> Any:
        """Start the slave of one rank, in a job of its own under its guard, which notes its
        death under ``key``."""
        with _spawning:
            return self._spawn_one(rank, notes, key, survives)

    def _spawn_one(self, rank: int, notes: str, key: int, survives: bool) -> Any:
        MPI = _mpi()
        path = os.environ.get("PATH", "")
        if MPI.get_vendor()[0] == "MPICH":  # its singleton start runs mpiexec from PATH
            os.environ["PATH"] = _mpich_launcher() + os.pathsep + path
        master = _address(os.getpid())
        arguments = [
            *program("multi.mpi4py_processor:spawned_slave_main"),
            *(str(rank), str(self._processor_size), notes, str(key), master),
            "survives" if survives else "ends",
        ]
        # Ctrl-C while the slave starts would end it before it connects, and MPICH would wait
        # for it for ever: the slave (and the mpiexec started for it) start with SIGINT held
        # back, as the master does until the spawn returns, and the slave takes it once it
        # serves (``_serve_master``).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            comm = MPI.COMM_SELF.Spawn(sys.executable, arguments, 1)
        finally:
            os.environ["PATH"] = path
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        comm.send(master_place(), 0, SETUP)
        return comm

    def abort(self) -> None:
        if not self._launched:
            super().abort()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)  # mpiexec forwards what was printed before it ends all
        if self._notes is not None:  # (nothing runs after the abort)
            shutil.rmtree(self._notes, ignore_errors=True)
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
    code = (
        f"#!{sys.executable}\nimport os, sys\nos.setsid()\n"
        f"os.execv({mpiexec!r}, [{mpiexec!r}, *sys.argv[1:]])\n"
    )
    if _launcher_directory is None or _launcher_directory[1] != code:
        # (written once: rewritten under a spawn of another thread, it was 'Text file busy')
        directory = scratch.directory(LAUNCHER_KIND)
        shim = os.path.join(directory, "mpiexec")
        with open(shim, "w") as file:
            file.write(code)
        os.chmod(shim, 0o755)
        _launcher_directory = directory, code
    return _launcher_directory[0]


#: The directory of the ``mpiexec`` shim, and its code.
_launcher_directory: tuple[str, str] | None = None
#: Spawns are made one at a time: each sets PATH for MPICH, which starts its mpiexec from it.
_spawning = threading.Lock()


def _find_mpiexec() -> str | None:
    """The mpiexec of this environment's MPI (the MPICH wheel's first), or the one on PATH."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, "mpiexec")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mpiexec")
