"""Serialisation of what crosses between master and slaves: pickle protocol 5.

Large buffers (numpy arrays, bytes-like objects that support it) travel out of band, as
separate frames that the transport sends without copying them into the pickle stream.
When something does not pickle, ``find_unpicklable`` names the attribute that failed, so the
error says what to change.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from multi.errors import UnpicklableError

PROTOCOL = 5

Frames = list[Any]  # the pickle stream, then its out-of-band buffers


COMMAND_ADVICE = (
    "Commands travel to the slaves: keep objects that do not pickle in a Memo on the master, "
    "or create them inside run()."
)


def dumps(obj: Any) -> Frames:
    """Pickle ``obj`` into frames: the stream first, then each out-of-band buffer.

    Raises ``UnpicklableError`` if it does not pickle.
    """
    buffers: list[pickle.PickleBuffer] = []
    try:
        head = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    except Exception as exc:
        raise UnpicklableError(f"{type(exc).__name__}: {exc}") from exc
    return [head, *buffers]


def loads(frames: Sequence[Any]) -> Any:
    """Rebuild an object from the frames that ``dumps`` made."""
    return pickle.loads(frames[0], buffers=frames[1:])


def send(connection: Connection, frames: Frames) -> None:
    """Send frames as one message: a header with the buffer sizes and the stream, then each
    buffer as it lies in memory."""
    buffers = [
        memoryview(frame.raw() if isinstance(frame, pickle.PickleBuffer) else frame)
        for frame in frames[1:]
    ]
    sizes = struct.pack(f"!I{len(buffers)}Q", len(buffers), *(b.nbytes for b in buffers))
    connection.send_bytes(sizes + frames[0])
    for buffer in buffers:
        connection.send_bytes(buffer)


def receive(connection: Connection) -> tuple[Any, int]:
    """Receive a message that ``send`` sent; return its object and the bytes received.

    Buffers are received into fresh writable memory, so arrays arrive writable.
    """
    message = connection.recv_bytes()
    (count,) = struct.unpack_from("!I", message)
    sizes = struct.unpack_from(f"!{count}Q", message, 4)
    buffers = []
    for size in sizes:
        buffer = bytearray(size)
        if size:
            connection.recv_bytes_into(buffer)
        else:
            connection.recv_bytes()
        buffers.append(buffer)
    obj = pickle.loads(memoryview(message)[4 + 8 * count :], buffers=buffers)
    return obj, len(message) + sum(sizes)


def size(frames: Frames) -> int:
    """The bytes that frames take on the wire."""
    return sum(memoryview(frame).nbytes for frame in frames)


def round_trip(obj: Any) -> Any:
    """A copy of ``obj`` made as a slave on another machine would receive it.

    Raises ``UnpicklableError`` if it does not make the trip.
    """
    frames = dumps(obj)
    try:
        return loads(frames)
    except Exception as exc:
        raise UnpicklableError(f"{type(exc).__name__} while unpickling: {exc}") from exc


def find_unpicklable(obj: Any, depth: int = 4) -> tuple[str, Any, str] | None:
    """The innermost part of ``obj`` that does not make the pickle round trip, as
    (path, part, reason), or None if it all does."""
    try:
        round_trip(obj)
    except UnpicklableError as exc:
        reason = str(exc)
    else:
        return None
    if depth > 0:
        for label, part in _parts(obj):
            found = find_unpicklable(part, depth - 1)
            if found is not None:
                return (label + found[0], found[1], found[2])
    return ("", obj, reason)


def _parts(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [(f"[{key!r}]", value) for key, value in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{index}]", value) for index, value in enumerate(obj)]
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        return [(f".{name}", value) for name, value in state.items()]
    return []


def unpicklable_error(what: str, obj: Any, advice: str) -> UnpicklableError:
    """The error for ``obj`` that does not pickle, naming the part that failed."""
    found = find_unpicklable(obj)
    if found is None:
        return UnpicklableError(f"{what} does not pickle with the rest of its batch. {advice}")
    path, part, reason = found
    where = f"its attribute {path.lstrip('.')}" if path else "it"
    kind = type(part).__qualname__
    return UnpicklableError(f"{what} does not pickle: {where} (a {kind}) fails: {reason}. {advice}")
