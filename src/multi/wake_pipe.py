"""A pipe that another thread writes a byte to, so that a thread asleep in ``select`` on it
(beside its slaves' descriptors) wakes at once: how a new call to an executor reaches the
engine that waits for its slaves, which then need not look for new calls every few
milliseconds.

A wake and the pipe's close are serialised: a wake never writes to a descriptor that was
closed meanwhile, and perhaps given to another file.
"""

from __future__ import annotations

import os
import threading
from contextlib import suppress


class Wake_pipe:
    """The read end to watch (``fileno``), and ``wake`` for any thread to call."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._read

    def descriptors(self) -> tuple[int, int]:
        """Both ends: what a forked child, which has a copy of them, closes."""
        return self._read, self._write

    def wake(self) -> None:
        """Make the read end readable, unless it is already (or the pipe is closed)."""
        with self._lock:
            if self._write >= 0:
                with suppress(BlockingIOError):  # (full: it is readable)
                    os.write(self._write, b"\0")

    def take(self) -> bool:
        """Whether a wake came since the last ``take``; the read end is readable no more."""
        woken = False
        with suppress(BlockingIOError, OSError):
            while os.read(self._read, 4096):
                woken = True
        return woken

    def close(self) -> None:
        with self._lock:
            for fd in (self._read, self._write):
                with suppress(OSError):
                    os.close(fd)
            self._read = self._write = -1
