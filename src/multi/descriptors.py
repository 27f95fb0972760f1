"""Capture at the file descriptors, for slaves that are processes of their own.

What a command writes by any route (``print``, C's ``printf``, ``os.write``, a child process)
ends up on descriptor 1 or 2. While a slave runs a batch, both point into files of its own,
opened for appending (so that a child process sharing the descriptor never writes past a
truncation), and Python's own writes go there too (``append``, which the stream routers of
``multi.capture`` call), so that each stream keeps the order in which it was written. After
each command the files are read, cut into chunks and emptied.

Between the two streams the order is kept as far as this process can know it: where Python
writes to the other stream than last time, the sizes of both files are noted, and the
command's output is replayed interval by interval, the stream Python wrote to first.

Where the kernel can say that the files were written to (``multi.write_watch``), they are
looked at after the commands that wrote to them (and the next), and at the end of each batch
(``settle``), not after every command.

The files have no name (``unnamed_files``): however the master and its slaves end, nothing
stays behind. Where the master can hold them too (a slave that it starts inherits them; those
of a PVM task on its host it opens through /proc, ``files_of``), it reads what a command wrote
before its slave died in the middle of it (``read_left``), and replays it before the news of
the death; so too what was written between two batches that followed at once, while the
descriptors pointed into the files still.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import sys
import tempfile
from contextlib import suppress

from multi.capture import STDERR, STDOUT, Chunk
from multi.write_watch import Write_watch

_libc: ctypes.CDLL | None = None
#: Whether C's stdout writes each line as it ends (set up once), so that no flush is needed
#: after every command; else C's buffers are flushed after each.
_line_buffered = False


def _c_library() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None)
    return _libc


def _flush_c_streams() -> None:
    """Flush C's stdio buffers (printf), which would otherwise reach the file much later."""
    _c_library().fflush(None)


def _line_buffer_c_stdout() -> bool:
    """Make C's stdout line buffered, as on a terminal (glibc: ``stdout``; macOS:
    ``__stdoutp``); False where the stream cannot be found."""
    libc = _c_library()
    for name in ("stdout", "__stdoutp"):
        try:
            stream = ctypes.c_void_p.in_dll(libc, name)
        except ValueError:
            continue
        libc.fflush(stream)
        status: int = libc.setvbuf(stream, None, 1, 0)  # _IOLBF
        return status == 0
    return False


#: The descriptors of a slave's two files: its stdout's, then its stderr's.
Files = tuple[int, int]


def files_of(pid: int, fds: Files) -> Files | None:
    """The files that descriptors ``fds`` of process ``pid`` (on this host) point to, opened
    for reading here, names or no names (Linux: /proc); None where that cannot be done."""
    opened: list[int] = []
    try:
        for fd in fds:
            opened.append(os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY))
    except OSError:
        for fd in opened:
            os.close(fd)
        return None
    out, err = opened
    return out, err


def unnamed_files() -> Files:
    """Two files without a name, opened for appending: they go with the last descriptor that
    points to them, however the processes that hold them end."""
    first = unnamed_file()
    try:
        return first, unnamed_file()
    except BaseException:  # (out of descriptors, say: the first is not left open)
        os.close(first)
        raise


def unnamed_file() -> int:
    """A file without a name, opened for appending; its descriptor."""
    with tempfile.TemporaryFile(buffering=0) as file:
        fd = os.dup(file.fileno())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


class Descriptor_capture:
    """Descriptors 1 and 2 of this process, pointed into two files while a batch runs."""

    def __init__(self, files: Files, rank: int) -> None:
        self.fds = files
        for fd in files:  # (those of the slave that it replaces, read or not)
            os.ftruncate(fd, 0)
        #: Where descriptors 1 and 2 pointed first, kept for the process's life: pointing them
        #: back after a batch is then two calls, not six.
        self._saved: tuple[int, int] | None = None
        self._pointed = False  # into the files
        self._marks: list[tuple[int, int, int]] = []  # (stream Python wrote first, sizes)
        self._last = -1  # the stream Python wrote to last
        self._wrote = False  # (Python wrote since the files were last looked at)
        self._watch = Write_watch.start(files, rank)
        global _line_buffered
        if not _line_buffered:
            _line_buffered = _line_buffer_c_stdout()

    def begin(self) -> None:
        """Point descriptors 1 and 2 into the files (the streams flushed first), unless they
        point there still: a slave that has its next batch at hand leaves them so between
        batches, which spares four calls to the kernel and two flushes per batch."""
        if self._pointed:
            return
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        _flush_c_streams()
        if self._saved is None:
            self._saved = (os.dup(1), os.dup(2))
        os.dup2(self.fds[STDOUT], 1)
        os.dup2(self.fds[STDERR], 2)
        self._pointed = True

    def end(self) -> None:
        """Point descriptors 1 and 2 back where they were. What the files hold then was
        written outside any command (by a thread, while the slave looked for its next batch):
        it goes where it would have gone, as it would have; where it cannot go (a pipe whose
        reader is gone), it is dropped: the thread's own write would have failed, not the
        slave."""
        if not self._pointed or self._saved is None:
            return
        _flush_c_streams()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
        self._pointed = False
        if self._watch is not None:
            self._watch.clear()
        for fd, file in zip((1, 2), self.fds, strict=True):
            size = os.lseek(file, 0, os.SEEK_END)
            if size:
                data = os.pread(file, size, 0)
                os.ftruncate(file, 0)
                with suppress(OSError):
                    _write_all(fd, data)

    def append(self, chunk: Chunk) -> None:
        """A Python write of a command: to its stream's file, noting a change of stream."""
        stream, text = chunk
        if stream != self._last:
            self._marks.append((stream, *self._sizes()))
            self._last = stream
        if text:
            self._wrote = True
            _write_all(self.fds[stream], text.encode("utf-8", "backslashreplace"))

    def take(self) -> list[Chunk]:
        """What the command wrote since the last ``take``, as chunks; the files are emptied."""
        if not _line_buffered:
            _flush_c_streams()
        watch = self._watch
        if watch is not None:
            if watch.quiet() and not self._wrote:  # (after every command that wrote nothing)
                if self._marks:  # (Python wrote empty strings)
                    self._marks, self._last = [], -1
                return []
            watch.clear()
        self._wrote = False
        out, err = self.fds
        sizes = os.lseek(out, 0, os.SEEK_END), os.lseek(err, 0, os.SEEK_END)  # (``_sizes``)
        if sizes == (0, 0):  # (nothing written: unwatched, or the change the watch told of
            # was the files' own emptying by the look before)
            if self._marks:  # (Python wrote empty strings)
                self._marks, self._last = [], -1
            return []
        marks, self._marks, self._last = self._marks, [], -1
        data = [os.pread(fd, size, 0) if size else b"" for fd, size in zip(self.fds, sizes)]  # noqa: B905
        for fd, size in zip(self.fds, sizes):  # noqa: B905
            if size:
                os.ftruncate(fd, 0)
        return _interleave(data, marks, sizes)

    def settle(self) -> list[Chunk]:
        """At the end of a batch, where a watch spared the looks: what the files hold that it
        did not tell of, which goes with the batch's last command. There is none, unless its
        signal was lost (``multi.write_watch``); the watch, no longer trusted, then goes, and the
        files are looked at after every command from then on."""
        watch = self._watch
        if watch is None:
            return []
        if self._sizes() == (0, 0):
            return []
        if watch.quiet():  # (after a call to the kernel: a signal on its way has come)
            self._watch = None
            watch.close()
        return self.take()

    def _sizes(self) -> tuple[int, int]:
        """The sizes of both files (a seek to the end: far cheaper than fstat)."""
        out, err = self.fds
        return os.lseek(out, 0, os.SEEK_END), os.lseek(err, 0, os.SEEK_END)

    def close(self) -> None:
        self.end()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        for fd in (*self.fds, *(self._saved or ())):
            os.close(fd)
        self._saved = None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _interleave(
    data: list[bytes], marks: list[tuple[int, int, int]], sizes: tuple[int, int]
) -> list[Chunk]:
    """Cut both streams at the marks; each interval gives its first stream, then the other."""
    chunks: list[Chunk] = []
    done = [0, 0]
    first = STDOUT  # before Python wrote anything, the order of the streams is unknown
    for stream, *at in [*marks, (STDOUT, *sizes)]:
        for which in (first, 1 - first):
            if at[which] > done[which]:
                text = data[which][done[which] : at[which]].decode("utf-8", "replace")
                chunks.append((which, text))
                done[which] = at[which]
        first = stream
    return chunks


def read_left(files: Files | None) -> list[Chunk] | None:
    """What a slave that died left in its files: its stdout, then its stderr; None where it
    left nothing, or its files cannot be read here (``files`` None)."""
    if files is None:
        return None
    left = [os.pread(fd, os.fstat(fd).st_size, 0) for fd in files]
    chunks = [(stream, data.decode("utf-8", "replace")) for stream, data in enumerate(left) if data]
    return chunks or None
