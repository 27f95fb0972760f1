"""The calls of PVM 3 that the ``pvm`` fabric needs, through ``ctypes`` (no compiler, no
binding to maintain elsewhere: PVM has no maintained Python one).

libpvm3 is not thread-safe: two threads inside it at once end the process. Every call here is
made under one lock, and a message is received and unpacked under one hold of it, so a thread
that waits (the slave's watcher) and one that works (the slave's main thread) can share it.
Nothing here blocks in libpvm: callers wait on ``fds()`` with ``select`` (which Ctrl-C
interrupts, where a blocking ``pvm_recv`` would not return before a message came), then take
what arrived with ``receive``.

A message of frames (``multi.wire``) is packed as the count of frames and their lengths, then
the frames, left in place (``PvmDataInPlace``): libpvm reads the buffers when the message is
sent, without copying them into a packing buffer first. libpvm crashes in ``pvm_send`` on a
message of more than about 27 such pieces (a result of 30 small numpy arrays did), so a
message of many frames is packed in at most ``MAX_PIECES``: the largest frames in place, the
runs of frames between them joined into one piece each (``pieces``). The receiver reads the
frames by their lengths, however they were packed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from multi.wire import byte_view

SONAME = "libpvm3.so.3"  # Debian's libpvm3 (the unversioned link comes with pvm-dev only)
INSTALL_HINT = "install PVM 3 (Debian, Ubuntu: apt-get install pvm)"

# From pvm3.h.
DATA_IN_PLACE = 2
TASK_DEFAULT = 0  # pvm_spawn: PVM places the task on its hosts in turn
TASK_EXIT = 1  # pvm_notify: a task ended
ROUTE, ROUTE_DIRECT, DONT_ROUTE = 1, 3, 1  # pvm_setopt
NO_PARENT = -23
#: The largest message PVM takes: sizes are C ints.
MAX_MESSAGE = 2**31 - 1024
#: The most pieces a message's frames are packed in (see the module's docstring).
MAX_PIECES = 15

ERRORS = {
    -2: "bad parameter",
    -3: "parameter mismatch",
    -4: "value too large",
    -5: "end of buffer",
    -6: "no such host",
    -7: "no such file",
    -8: "permission denied",
    -10: "malloc failed",
    -12: "cannot decode message",
    -14: "cannot contact the local PVM daemon",
    -15: "no current buffer",
    -16: "no such buffer",
    -22: "host failed",
    -23: "no parent task",
    -24: "not implemented",
    -25: "PVM daemon system error",
    -26: "version mismatch",
    -27: "out of resources",
    -28: "duplicate host",
    -29: "cannot start the PVM daemon",
    -30: "already in progress",
    -31: "no such task",
    -32: "not found",
    -33: "already exists",
    -36: "the master host's address is the loopback address",
}


class Pvm_error(OSError):
    """A PVM call failed; ``code`` is PVM's error number."""

    def __init__(self, call: str, code: int) -> None:
        self.code = code
        super().__init__(f"{call} failed: {ERRORS.get(code, 'PVM error')} ({code})")


@dataclass(slots=True)
class Message:
    """What ``receive`` took: who sent it, its tag, and its body (frames, or the integers a
    daemon's notification carries)."""

    source: int
    tag: int
    frames: list[bytearray]
    ints: list[int]


class _Buffer(ctypes.Structure):
    """CPython's ``Py_buffer``: the address of a buffer's memory, readable or not, uncopied."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


class _Host_info(ctypes.Structure):
    """pvm3.h's ``struct pvmhostinfo``: a host of the virtual machine, as ``pvm_config``
    describes it."""

    _fields_ = [
        ("tid", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("arch", ctypes.c_char_p),
        ("speed", ctypes.c_int),
        ("dsig", ctypes.c_int),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_Buffer), ctypes.c_int)
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_Buffer),)


@cache
def library() -> ctypes.CDLL:
    """libpvm3, loaded once; ``OSError`` saying how to install it where it is missing."""
    name = ctypes.util.find_library("pvm3") or SONAME
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise OSError(f"PVM's library {SONAME} is not installed here: {INSTALL_HINT}") from exc
    c_int, p_int = ctypes.c_int, ctypes.POINTER(ctypes.c_int)
    signatures: dict[str, tuple[Any, ...]] = {
        "pvm_mytid": (),
        "pvm_parent": (),
        "pvm_exit": (),
        "pvm_setopt": (c_int, c_int),
        "pvm_spawn": (
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_char_p),
            c_int,
            ctypes.c_char_p,
            c_int,
            p_int,
        ),
        "pvm_notify": (c_int, c_int, c_int, p_int),
        "pvm_kill": (c_int,),
        "pvm_getfds": (ctypes.POINTER(p_int),),
        "pvm_initsend": (c_int,),
        "pvm_pkint": (p_int, c_int, c_int),
        "pvm_pkbyte": (ctypes.c_void_p, c_int, c_int),
        "pvm_send": (c_int, c_int),
        "pvm_nrecv": (c_int, c_int),
        "pvm_bufinfo": (c_int, p_int, p_int, p_int),
        "pvm_upkint": (p_int, c_int, c_int),
        "pvm_upkbyte": (ctypes.c_void_p, c_int, c_int),
        "pvm_config": (p_int, p_int, ctypes.POINTER(ctypes.POINTER(_Host_info))),
        "pvm_addhosts": (ctypes.POINTER(ctypes.c_char_p), c_int, p_int),
    }
    for function, argtypes in signatures.items():
        getattr(lib, function).argtypes = argtypes
        getattr(lib, function).restype = c_int
    return lib


def allow_root(environment: MutableMapping[str, str]) -> None:
    """PVM refuses to run as root unless told that this is meant (a container, a CI runner):
    the daemon exits, and a task's library ends the process."""
    if os.getuid() == 0:
        environment.setdefault("PVM_ALLOW_ROOT", "1")


def pieces(frames: Sequence[memoryview]) -> list[memoryview | bytes]:
    """The non-empty frames of a message as at most ``MAX_PIECES`` buffers, in their order:
    past that many, the largest stay where they lie, and each run of frames between two of
    them is joined into one piece (a copy, of the smaller frames)."""
    frames = [frame for frame in frames if frame.nbytes]
    if len(frames) <= MAX_PIECES:
        return list(frames)
    largest = sorted(range(len(frames)), key=lambda i: frames[i].nbytes)
    in_place = set(largest[-(MAX_PIECES // 2) :])  # (n of them leave n + 1 runs at most)
    joined: list[memoryview | bytes] = []
    run: list[memoryview] = []
    for index, frame in enumerate(frames):
        if index not in in_place:
            run.append(frame)
            continue
        if run:
            joined.append(b"".join(run))
            run = []
        joined.append(frame)
    if run:
        joined.append(b"".join(run))
    return joined


def _checked(call: str, code: int) -> int:
    if code < 0:
        raise Pvm_error(call, code)
    return code


class Pvm:
    """This process's PVM task: every call to libpvm goes through one object, under its lock."""

    def __init__(self) -> None:
        self.lib = library()
        self.lock = threading.RLock()

    def mytid(self) -> int:
        """Enrol in the virtual machine (connecting to the daemon), or this task's id."""
        allow_root(os.environ)
        with self.lock:
            return _checked("pvm_mytid", self.lib.pvm_mytid())

    def parent(self) -> int | None:
        with self.lock:
            tid = self.lib.pvm_parent()
        if tid == NO_PARENT:
            return None
        return _checked("pvm_parent", tid)

    def exit(self) -> None:
        """Leave the virtual machine (the process goes on)."""
        with self.lock:
            self.lib.pvm_exit()

    def route_directly(self, direct: bool) -> None:
        """Messages between tasks go over a connection of their own, or through the daemons."""
        with self.lock:
            code = self.lib.pvm_setopt(ROUTE, ROUTE_DIRECT if direct else DONT_ROUTE)
        _checked("pvm_setopt", code)

    def spawn(self, program: str, arguments: Sequence[str]) -> int:
        """Start one task running ``program arguments...``, where PVM places it; its id."""
        argv = (ctypes.c_char_p * (len(arguments) + 1))(*(a.encode() for a in arguments), None)
        tid = ctypes.c_int(0)
        with self.lock:
            started = self.lib.pvm_spawn(
                program.encode(), argv, TASK_DEFAULT, None, 1, ctypes.byref(tid)
            )
        if started < 0:
            raise Pvm_error("pvm_spawn", started)
        if started == 0:
            raise Pvm_error("pvm_spawn", tid.value)
        return tid.value

    def hosts(self) -> list[str]:
        """The names of the hosts in the virtual machine."""
        count, architectures = ctypes.c_int(), ctypes.c_int()
        table = ctypes.POINTER(_Host_info)()
        with self.lock:
            _checked(
                "pvm_config",
                self.lib.pvm_config(ctypes.byref(count), ctypes.byref(architectures),
                                    ctypes.byref(table)),
            )  # fmt: skip
            return [(table[i].name or b"").decode(errors="replace") for i in range(count.value)]

    def add_hosts(self, names: Sequence[str]) -> list[int]:
        """Ask the daemon to add hosts (which it may take a while to start); for each, the id
        of its daemon, or PVM's error number (``ERRORS``) saying why it was not added."""
        array = (ctypes.c_char_p * len(names))(*(name.encode() for name in names))
        codes = (ctypes.c_int * len(names))()
        with self.lock:
            added = self.lib.pvm_addhosts(array, len(names), codes)
        if added < 0:  # the call failed as a whole (the daemon is gone): no host was added
            return [added] * len(names)
        return list(codes)

    def notify_exit(self, tag: int, tids: Sequence[int]) -> None:
        """Ask the daemon for a message with ``tag`` when any of ``tids`` ends."""
        array = (ctypes.c_int * len(tids))(*tids)
        with self.lock:
            _checked("pvm_notify", self.lib.pvm_notify(TASK_EXIT, tag, len(tids), array))

    def kill(self, tid: int) -> None:
        """End a task (its daemon sends it SIGTERM); an unknown task is no error."""
        with self.lock:
            self.lib.pvm_kill(tid)

    def fds(self) -> list[int]:
        """The descriptors on which messages for this task arrive (to ``select`` on)."""
        pointer = ctypes.POINTER(ctypes.c_int)()
        with self.lock:
            count = _checked("pvm_getfds", self.lib.pvm_getfds(ctypes.byref(pointer)))
            return [pointer[i] for i in range(count)]

    def send(self, tid: int, tag: int, frames: Sequence[Any] = ()) -> int:
        """Send frames (bytes-like objects) to a task; the number of bytes they hold.

        PVM drops a message to a task that has ended without saying so: a task's end is
        learned from ``notify_exit``.
        """
        views = [byte_view(frame) for frame in frames]
        sizes = [view.nbytes for view in views]
        total = sum(sizes)
        if total > MAX_MESSAGE:
            raise ValueError(
                f"a PVM message holds at most {MAX_MESSAGE} bytes, this one {total}: split "
                "the data between several commands"
            )
        header = (ctypes.c_int * (len(sizes) + 1))(len(sizes), *sizes)
        lib = self.lib
        with self.lock:
            _checked("pvm_initsend", lib.pvm_initsend(DATA_IN_PLACE))
            _checked("pvm_pkint", lib.pvm_pkint(header, len(sizes) + 1, 1))
            held = []
            try:
                for piece in pieces(views):
                    buffer = _Buffer()
                    _get_buffer(piece, ctypes.byref(buffer), 0)
                    held.append(buffer)
                    _checked("pvm_pkbyte", lib.pvm_pkbyte(buffer.buf, buffer.len, 1))
                _checked("pvm_send", lib.pvm_send(tid, tag))
            finally:
                for buffer in held:
                    _release_buffer(ctypes.byref(buffer))
        return total

    def receive(self, tid: int = -1, tag: int = -1) -> Message | None:
        """The next message from ``tid`` with ``tag`` (-1: any) if one has arrived, else None.

        A daemon's notification (its source is a daemon) carries integers; our messages,
        frames.
        """
        lib = self.lib
        size, got_tag, source = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        with self.lock:
            buffer = _checked("pvm_nrecv", lib.pvm_nrecv(tid, tag))
            if buffer == 0:
                return None
            _checked(
                "pvm_bufinfo",
                lib.pvm_bufinfo(buffer, ctypes.byref(size), ctypes.byref(got_tag),
                                ctypes.byref(source)),
            )  # fmt: skip
            if source.value < 0:  # from a daemon (its tid has the high bit set)
                value = ctypes.c_int()
                _checked("pvm_upkint", lib.pvm_upkint(ctypes.byref(value), 1, 1))
                return Message(source.value, got_tag.value, [], [value.value])
            count = ctypes.c_int()
            _checked("pvm_upkint", lib.pvm_upkint(ctypes.byref(count), 1, 1))
            sizes = (ctypes.c_int * count.value)()
            if count.value:
                _checked("pvm_upkint", lib.pvm_upkint(sizes, count.value, 1))
            frames = []
            for length in sizes:
                frame = bytearray(length)
                if length:
                    target = (ctypes.c_char * length).from_buffer(frame)
                    _checked("pvm_upkbyte", lib.pvm_upkbyte(target, length, 1))
                frames.append(frame)
            return Message(source.value, got_tag.value, frames, [])
