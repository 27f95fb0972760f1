"""Per-command capture of a slave's stdout and stderr, and its replay on the master.

While a command runs, whatever it writes to ``sys.stdout`` or ``sys.stderr`` is kept, in the
order written, as ``(stream, text)`` chunks: stream 0 is stdout, 1 is stderr. The streams are
replaced by routers that send a thread's writes to the chunks of the command it is running,
and everything else to the stream they replaced, so slaves that are threads of the master
capture their own output and nobody else's.

On the master, the chunks of a command are written out as one block. With more than one slave
at verbosity >= 1 every line carries the slave's prefix: its rank right-aligned to the width of
the largest rank, then ``"  | "`` for stdout or ``" E| "`` for stderr.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any, TextIO

Chunk = tuple[int, str]

STDOUT, STDERR = 0, 1
LOG = 2  # a logging record of a slave process (see multi.logs), among the chunks
_MARKS = ("  | ", " E| ")


class _Thread_route(threading.local):
    """Where this thread's writes go: a command's chunks, or None (through). A class default,
    so that a thread that never set it reads None without an exception raised and caught."""

    chunks: list[Chunk] | None = None


_local = _Thread_route()
_install_lock = threading.Lock()


def redirect(chunks: list[Chunk] | None) -> list[Chunk] | None:
    """Send this thread's writes to stdout and stderr into ``chunks`` (None: pass them
    through); return where they went before, to be restored the same way."""
    previous = _local.chunks
    _local.chunks = chunks
    return previous


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: captures or passes writes through."""

    def __init__(self, target: TextIO, stream: int) -> None:
        super().__init__()
        self.target = target
        self.stream = stream
        self._bytes = _Bytes_router(self)

    def write(self, text: str) -> int:
        chunks = _local.chunks
        if chunks is None:
            return self.target.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            chunks.append((self.stream, text))
        return len(text)

    def flush(self) -> None:
        if _local.chunks is None:
            self.target.flush()

    def isatty(self) -> bool:
        return _local.chunks is None and self.target.isatty()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def buffer(self) -> _Bytes_router:
        return self._bytes

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.target, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


class _Bytes_router:
    """Stands in for the bytes under a router's stream (``sys.stdout.buffer``): what a command
    writes there is its output too, decoded as the stream would."""

    def __init__(self, router: _Router) -> None:
        self._router = router

    def write(self, data: Any) -> int:
        router = self._router
        if _local.chunks is None:
            return router.target.buffer.write(data)
        view = memoryview(data)
        router.write(view.tobytes().decode(router.encoding, "replace"))
        return view.nbytes

    def flush(self) -> None:
        if _local.chunks is None:
            self._router.target.buffer.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router.target.buffer, name)


class routing:  # a context manager, named as contextlib names its own
    """Install the routers on ``sys.stdout`` and ``sys.stderr`` while inside (those already
    installed stay as they are: entering costs a check then)."""

    __slots__ = ("_installed",)

    def __enter__(self) -> None:
        if type(sys.stdout) is _Router and type(sys.stderr) is _Router:
            self._installed: list[str] = []
            return
        with _install_lock:
            self._installed = [
                name
                for stream, name in enumerate(("stdout", "stderr"))
                if not isinstance(getattr(sys, name), _Router)
            ]
            for name in self._installed:
                setattr(sys, name, _Router(getattr(sys, name), 0 if name == "stdout" else 1))

    def __exit__(self, *exc: object) -> None:
        if not self._installed:
            return
        with _install_lock:
            for name in self._installed:
                router = getattr(sys, name)
                if isinstance(router, _Router):
                    setattr(sys, name, router.target)


def prefixes(rank: int, slaves: int, verbosity: int) -> tuple[str, str] | None:
    """The stdout and stderr prefixes of a slave's lines, or None when lines go bare."""
    if verbosity < 1 or slaves < 2:
        return None
    width = len(str(slaves))
    return tuple(f"{rank:>{width}}{mark}" for mark in _MARKS)  # type: ignore[return-value]


def replay(chunks: list[Chunk], prefix: tuple[str, str] | None) -> None:
    """Write a command's output on the current ``sys.stdout`` and ``sys.stderr`` as one block.

    With prefixes, output goes out a whole line at a time, so a line written in pieces gets one
    prefix, and a last line without its newline is ended so that what follows starts clean.
    """
    if not chunks:
        return
    records = [chunk for chunk in chunks if chunk[0] == LOG]
    if records:
        chunks = [chunk for chunk in chunks if chunk[0] != LOG]
    targets = (sys.stdout, sys.stderr)
    if prefix is None:
        for stream, text in chunks:
            targets[stream].write(text)
    else:
        pending = ["", ""]
        for stream, text in chunks:
            *lines, pending[stream] = (pending[stream] + text).split("\n")
            if lines:
                targets[stream].write("".join(f"{prefix[stream]}{line}\n" for line in lines))
        for stream, rest in enumerate(pending):
            if rest:
                targets[stream].write(f"{prefix[stream]}{rest}\n")
    for target in targets:
        target.flush()
    if records:
        from multi.logs import replay

        for _, record in records:
            replay(record)  # type: ignore[arg-type]


class Redirect_text:
    """A text stream that keeps what is written as ``[text, stream]`` pairs in a list.

    Every line, the first included, starts with ``token``.
    """

    def __init__(self, data: list[list[Any]], token: str = "", stream: int = 0) -> None:
        self.data = data
        self.token = token
        self.stream = stream
        self._at_line_start = True

    def write(self, string: str) -> int:
        if not string:
            return 0
        if self.token:
            *lines, last = string.split("\n")
            starts = [self._at_line_start] + [True] * len(lines)
            pieces = [*lines, last]
            text = "\n".join(
                self.token + piece if start and (piece or i < len(lines)) else piece
                for i, (start, piece) in enumerate(zip(starts, pieces, strict=True))
            )
            self._at_line_start = string.endswith("\n")
        else:
            text = string
        self.data.append([text, self.stream])
        return len(string)

    def flush(self) -> None:
        """Nothing to flush: the text is already in the list."""

    def isatty(self) -> bool:
        return False
