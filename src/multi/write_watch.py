"""Word from the kernel that a slave's capture files were written to, so that the slave need
not ask it after every command.

After each command a slave must know whether anything reached its capture files
(``multi.descriptors``) by a route Python does not see: compiled code, ``os.write``, a child
process. Asking is a system call per file; on a slave that runs tiny commands those two calls
took a third of its CPU. Instead, an inotify watch on both files signals the slave's main
thread as an event is queued (``O_ASYNC``); the handler sets a flag, and the files are looked
at only after the commands that found it set.

No write is missed: one done before the watch's events are read is seen by the look that
follows (its event comes once the data is in place), and one done after queues a new event,
which signals again. The signal goes to the main thread, where the command runs: its handler
has run by the time the command returns, even where the writer was a child that it waited for.

The signal comes only as the files are written to, and it restarts the system calls it finds
under way (``SA_RESTART``), as Python retries its own: what it can cut short is a sleep or a
poll in compiled code, while a child or another thread writes.

Linux only. Where a step fails (no inotify, no instance left, not the main thread, a watch
already on), ``start`` returns None and the slave asks after every command. The signal is
SIGURG, which a process ignores by default: a command that takes the handler away, or puts in
its own, ends nothing; ``quiet`` then finds the handler not ours and says the files must be
looked at.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable
from types import FrameType

_IN_MODIFY = 0x2
#: Which signal the watch sends (its default action: none).
SIGNAL = signal.SIGURG
# (Linux's numbers, which Python does not all name)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
_F_SETOWN_EX, _F_OWNER_TID = 15, 0
#: The handler Python holds for a signal, as it holds it: ``signal.getsignal`` makes an enum of
#: it first, which for a function costs a caught exception (2.5 µs, at every command).
_handler_of: Callable[[int], object]
try:
    from _signal import getsignal as _handler_of  # type: ignore[import-not-found,no-redef]
except ImportError:  # (an interpreter other than CPython)
    _handler_of = signal.getsignal

#: Set as the kernel says a watched file changed, cleared as the files are looked at.
_written = False
_active: Write_watch | None = None


def _note(signum: int, frame: FrameType | None) -> None:
    global _written
    _written = True


class Write_watch:
    """An inotify watch on a slave's capture files that signals its main thread."""

    def __init__(self, fd: int, previous: signal.Handlers | object) -> None:
        self.fd = fd
        #: The handler to put back (none set from Python: the default).
        self._previous = signal.SIG_DFL if previous is None else previous

    @staticmethod
    def start(files: tuple[int, ...]) -> Write_watch | None:
        """Watch ``files`` (open descriptors); None where this process cannot."""
        global _active, _written
        if (
            not sys.platform.startswith("linux")
            or _active is not None
            or threading.current_thread() is not threading.main_thread()
        ):
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        try:
            for file in files:
                if libc.inotify_add_watch(fd, f"/proc/self/fd/{file}".encode(), _IN_MODIFY) < 0:
                    raise OSError(ctypes.get_errno(), "inotify_add_watch")
            previous = signal.signal(SIGNAL, _note)
            signal.siginterrupt(SIGNAL, False)  # (system calls of commands go on, not EINTR)
            # To the main thread itself: a signal to the process may go to a thread that
            # sleeps, which runs its handler only once it is scheduled, perhaps after the
            # command that wrote has returned and its files were found quiet.
            owner = struct.pack("ii", _F_OWNER_TID, threading.get_native_id())
            fcntl.fcntl(fd, _F_SETOWN_EX, owner)
            fcntl.fcntl(fd, _F_SETSIG, SIGNAL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
        except (OSError, ValueError):
            os.close(fd)
            return None
        _written = True  # (what the files hold already is looked at once)
        _active = Write_watch(fd, previous)
        return _active

    def quiet(self) -> bool:
        """Whether nothing was written to the files since the last ``clear``. (A Python call:
        as it begins, the handler of a signal that came meanwhile runs.)"""
        return not _written and _handler_of(SIGNAL) is _note

    def clear(self) -> None:
        """Forget the writes so far: called just before the files are looked at."""
        global _written
        _written = False
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        global _active
        if _active is not self:
            return
        _active = None
        os.close(self.fd)
        if signal.getsignal(SIGNAL) is _note:
            signal.signal(SIGNAL, self._previous)  # type: ignore[arg-type]
