"""A doorbell: a FIFO that the slaves on the master's host ring once each report has left, so
that a master whose slaves run long commands sleeps until one reports, not in naps between
looks at MPI.

MPI has no wait that does not poll. A master that napped between its looks (see
``mpi4py_processor._wait``) woke some 2,000 times in a run of 64 commands of 50 ms on 2
slaves, each time on a core a slave wanted: it took 3.3 % of a core, and the run lasted 3 %
longer than under ``multiprocessing``, whose master sleeps in the kernel until a pipe has
something. Woken by rings, it woke 110 times and took 1.1 %. A ring only wakes the master:
what it reads comes by MPI as before, so a ring that is lost (the FIFO full, a slave of
another host, which cannot ring) costs a later look at most, never a message.

Each ring is the slave's rank (4 bytes, which a FIFO writes whole or not at all): the master
learns which slaves ring, and sleeps long only while it waits for those alone.
"""

from __future__ import annotations

import os
import select
import struct
import threading
from contextlib import suppress

#: The FIFO's name in the directory of the master's notes.
NAME = "bell"
_RING = struct.Struct("<i")
#: The rank that the master's own rings carry (see ``Doorbell.ring``).
MASTER_RING = -1
#: The descriptors that ``select`` can watch (FD_SETSIZE): past them, ``poll``, which sleeps
#: a millisecond at least.
SELECTABLE = 1024


class Doorbell:
    """The master's end of the FIFO in ``directory``, which it makes."""

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, NAME)
        os.mkfifo(path, 0o600)
        self._read = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # (held open, a FIFO never reads as ended, and a slave can open it whenever it starts)
        self._write = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        #: The ranks of the slaves that have rung: they run on this host.
        self.rang: set[int] = set()
        self._closing = threading.Lock()  # (held by a ring, and by the close)
        self._poll: select.poll | None = None
        if self._read >= SELECTABLE:
            self._poll = select.poll()
            self._poll.register(self._read, select.POLLIN)

    def sleep(self, seconds: float) -> bool:
        """Sleep for ``seconds``, or until a ring (a ring that came meanwhile ends it at once);
        whether rung."""
        if self._poll is None:
            ready = bool(select.select([self._read], [], [], seconds)[0])
        else:
            ready = bool(self._poll.poll(seconds * 1000))
        if ready:
            self._take_rings()
        return ready

    def _take_rings(self) -> None:
        with suppress(OSError):
            while data := os.read(self._read, 4096):
                whole = len(data) - len(data) % _RING.size  # (every ring is written whole)
                self.rang.update(rank for (rank,) in _RING.iter_unpack(data[:whole]))
        self.rang.discard(MASTER_RING)

    def ring(self) -> None:
        """Wake the master from its sleep: its own news (a signal) rings too, and a thread
        that has work for it. Safe in a signal handler: a ring that comes as the bell closes
        is dropped, never written to a descriptor closed meanwhile (and perhaps reused)."""
        if not self._closing.acquire(blocking=False):  # (a handler must not wait for it)
            return
        try:
            if self._write >= 0:
                with suppress(OSError):
                    os.write(self._write, _RING.pack(MASTER_RING))
        finally:
            self._closing.release()

    def close(self) -> None:
        with self._closing:
            for fd in (self._read, self._write):
                with suppress(OSError):
                    os.close(fd)
            self._read = self._write = -1


class Ringer:
    """A slave's end of the FIFO: calling it rings as ``rank``.

    A command may close its descriptor, or put a file of its own there (``dup2``): each ring
    first checks that the descriptor is still the FIFO, and opens the FIFO again where it is
    not. (Else the rings went into the command's file, 4 bytes at each report, and the master
    waited for rings that no longer came.)"""

    __slots__ = ("_fd", "_fifo", "_message", "_path")

    def __init__(self, path: str, rank: int) -> None:
        self._path = path
        self._message = _RING.pack(rank)
        self._fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self._fifo = _identity(self._fd)

    def __call__(self) -> None:
        if not self._holds_fifo() and not self._reopen():
            return
        with suppress(OSError):  # full (the master has rings enough to take), or gone
            os.write(self._fd, self._message)

    def _holds_fifo(self) -> bool:
        """Whether its descriptor is still the FIFO it opened."""
        try:
            return _identity(self._fd) == self._fifo
        except OSError:  # closed
            return False

    def _reopen(self) -> bool:
        """Open the FIFO anew (the descriptor it had is the command's now, or closed)."""
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # the master is gone
            self._fd = -1
            return False
        self._fifo = _identity(self._fd)
        return True

    def close(self) -> None:
        if self._holds_fifo():
            os.close(self._fd)
        self._fd = -1


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def ringer(directory: str, rank: int) -> Ringer | None:
    """A slave's way to ring the doorbell in ``directory`` as ``rank``; None where it cannot
    (no such FIFO: the master runs on another host, or has none)."""
    try:
        return Ringer(os.path.join(directory, NAME), rank)
    except OSError:
        return None
