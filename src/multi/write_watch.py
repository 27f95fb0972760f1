"""Word from the kernel that a slave's capture files were written to, so that the slave need
not ask it after every command.

After each command a slave must know whether anything reached its capture files
(``multi.descriptors``) by a route Python does not see: compiled code, ``os.write``, a child
process. Asking is a system call per file; on a slave that runs tiny commands those two calls
took a third of its CPU. Instead, an inotify watch on both files signals the slave's main
thread as an event is queued (``O_ASYNC``); the handler sets a flag, and the files are looked
at only after the commands that found it set (and after the next one: emptying the files is a
change too).

A write done before the watch's events are read is seen by the look that follows (its event
comes once the data is in place), and one done after queues a new event, which signals again.
The signal goes to the main thread, where the command runs: the thread takes it as it next
enters the kernel (a command that waits for a child does), and its Python handler runs as
``quiet`` begins.

A signal can still be lost to the watch: a command that blocks it, or compiled code that takes
it for itself. Its event then stays unread, and the events of later writes merge into it
without a signal. So the files are looked at once more at the end of each batch (``settle``
in ``multi.descriptors``): what is found there unannounced goes with the batch's last command,
and the watch, no longer trusted, is dropped for the slave's life.

The signal, SIGURG, is ignored by a process that has no handler for it, and it restarts the
system calls it finds under way (``SA_RESTART``), as Python retries its own: what it can cut
short is a sleep or a poll in compiled code, while a child or another thread writes.

Linux only. ``start`` returns None (and the slave asks after every command) where a step fails:
no inotify, not the main thread, a watch already on, a signal that does not come back to this
thread as it should (``start`` tries one), or a slave beyond a quarter of the inotify instances
that a user may hold (``fs.inotify.max_user_instances``), which leaves the others to the
user's other programs.
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
from contextlib import suppress
from types import FrameType

_IN_MODIFY = 0x2
#: Which signal the watch sends (its default action: none).
SIGNAL = signal.SIGURG
# (Linux's numbers, which Python does not all name)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
_F_SETOWN_EX = getattr(fcntl, "F_SETOWN_EX", 15)
_F_OWNER_TID = getattr(fcntl, "F_OWNER_TID", 0)
_EVENTS_READ = 1 << 16  # (bytes: 4,096 events of a watched file, in one read)
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

    def __init__(self, fd: int) -> None:
        self.fd = fd
        #: The handler to put back (the default, where none was set from Python).
        self._previous: object = signal.SIG_DFL

    @staticmethod
    def start(files: tuple[int, int], rank: int) -> Write_watch | None:
        """Watch ``files`` (open descriptors, empty) for the slave of ``rank``; None where
        this process cannot, or should not."""
        global _active, _written
        if (
            not sys.platform.startswith("linux")
            or _active is not None
            or threading.current_thread() is not threading.main_thread()
            or rank > _instance_limit() // 4
        ):
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        watch = Write_watch(fd)
        try:
            for file in files:
                if libc.inotify_add_watch(fd, f"/proc/self/fd/{file}".encode(), _IN_MODIFY) < 0:
                    raise OSError(ctypes.get_errno(), "inotify_add_watch")
            previous = signal.signal(SIGNAL, _note)
            watch._previous = signal.SIG_DFL if previous is None else previous
            signal.siginterrupt(SIGNAL, False)  # (system calls of commands go on, not EINTR)
            # To the main thread itself: a signal to the process may go to a thread that
            # sleeps, which runs its handler only once it is scheduled, perhaps after the
            # command that wrote has returned and its files were found quiet.
            owner = struct.pack("ii", _F_OWNER_TID, threading.get_native_id())
            fcntl.fcntl(fd, _F_SETOWN_EX, owner)
            fcntl.fcntl(fd, _F_SETSIG, SIGNAL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
            _written = False
            os.ftruncate(files[0], 0)  # (a change: the watch must say so)
            if watch.quiet():
                raise OSError("the watch's signal did not come")
        except (OSError, ValueError):
            watch.close()
            return None
        watch.clear()
        _active = watch
        return watch

    def quiet(self) -> bool:
        """Whether nothing was written to the files since the last ``clear``. (A Python call:
        as it begins, the handler of a signal that came meanwhile runs.)"""
        return not _written and _handler_of(SIGNAL) is _note

    def clear(self) -> None:
        """Forget the writes so far: called just before the files are looked at. (The events
        are read, so that the next write queues a new one, which signals.)"""
        global _written
        _written = False
        try:
            while len(os.read(self.fd, _EVENTS_READ)) == _EVENTS_READ:
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close the watch, and give the signal back its handler where ours is still on."""
        global _active
        if _active is self:
            _active = None
        os.close(self.fd)
        if _handler_of(SIGNAL) is _note:
            with suppress(ValueError):  # (a forked child of a thread that Python does not know)
                signal.signal(SIGNAL, self._previous)  # type: ignore[arg-type]


def _instance_limit() -> int:
    """How many inotify instances a user may hold (Linux's default where it cannot be read)."""
    try:
        with open("/proc/sys/fs/inotify/max_user_instances") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 128


def _forget() -> None:
    """A forked child forgets its parent's watch (whose events are the parent's, and signal
    the parent; the parent's descriptor stays open): it may start its own, as a slave of a
    master that a command started."""
    if _active is not None:
        _active.close()


os.register_at_fork(after_in_child=_forget)
