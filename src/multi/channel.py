"""Messages of pickle frames over a stream socket, written and read without blocking.

A message is its frames (the pickle stream, then its out-of-band buffers) behind a header that
gives their number and sizes::

    !I count | !Q size of each frame | frame 0 | frame 1 | ...

The writer gathers a message's pieces in one ``sendmsg`` call, straight from the memory they lie
in: a numpy array is never copied into the stream. The reader takes small messages from a
scratch buffer, many in one ``recv``, and receives large frames straight into memory of their
own, which then becomes the array on this side (writable, never copied again).

On the master, every channel is non-blocking and one selector drives them all: the master
never blocks writing to a slave that is itself blocked writing to the master, whatever the
size of socket buffers. A slave uses its channel blocking, one message at a time.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections import deque
from typing import Any

from multi import wire

#: Bytes read at once into the scratch buffer (whole small messages, a big frame's start).
SCRATCH_BYTES = 1 << 16
#: Pieces given to one ``sendmsg`` (well under any system's IOV_MAX).
PIECES_PER_WRITE = 256
_COUNT = struct.Struct("!I")
#: The header of a message of one to four frames, and the sizes in it, made once: a format
#: made and looked up anew for each message cost a tenth of queuing a small one.
_HEADERS = {count: struct.Struct(f"!I{count}Q") for count in range(1, 5)}
_SIZES = {count: struct.Struct(f"!{count}Q") for count in range(1, 5)}


class Undecodable:
    """A message that arrived whole but does not unpickle here: the reason, in its place."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Channel:
    """One end of a socket pair: queued messages written as the socket takes them, and
    messages read as their bytes arrive: unpickled, or, with ``decode`` false, as their frames
    (a slave shows that it holds a batch before it rebuilds it)."""

    def __init__(self, sock: socket.socket, decode: bool = True) -> None:
        self.sock = sock
        self._decode = decode
        self._out: deque[memoryview] = deque()
        self._scratch = bytearray(SCRATCH_BYTES)
        self._view = memoryview(self._scratch)
        self._head = 0  # unread bytes are self._scratch[self._head:self._tail]
        self._tail = 0
        self._sizes: tuple[int, ...] | None = None  # frame sizes of the message being read
        self._frames: list[Any] = []
        self._frame: memoryview | None = None  # the frame being filled, and how far
        self._filled = 0
        self._ready: deque[Any] = deque()
        self._poll: select.poll | None = None  # (made by at_hand, where it is used)
        #: Bytes read from the socket so far.
        self.received = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    # Writing -------------------------------------------------------------------------------

    def put(self, frames: wire.Frames) -> int:
        """Queue a message; return its size on the wire. ``write`` sends it."""
        views = [wire.byte_view(frame) for frame in frames]
        count = len(views)
        sizes = [view.nbytes for view in views]
        layout = _HEADERS.get(count) or struct.Struct(f"!I{count}Q")
        header = layout.pack(count, *sizes)
        out = self._out
        out.append(memoryview(header))
        for view, size in zip(views, sizes):  # noqa: B905 (made from the same list)
            if size:
                out.append(view)
        return len(header) + sum(sizes)

    def pending(self) -> bool:
        """Whether queued bytes wait to be written."""
        return bool(self._out)

    def write(self) -> bool:
        """Write what the socket takes now; True once everything queued is written.

        On a blocking socket this returns only when everything is written.
        """
        out = self._out
        while out:
            pieces = [out[i] for i in range(min(len(out), PIECES_PER_WRITE))]
            try:
                sent = self.sock.sendmsg(pieces)
            except (BlockingIOError, InterruptedError):
                return False
            while sent:
                first = out[0]
                if sent >= first.nbytes:
                    sent -= first.nbytes
                    out.popleft()
                else:
                    out[0] = first[sent:]
                    sent = 0
        return True

    def send(self, frames: wire.Frames) -> int:
        """Write a message on a blocking socket; return its size."""
        size = self.put(frames)
        self.write()
        return size

    # Reading -------------------------------------------------------------------------------

    def read(self) -> list[Any]:
        """The messages completed by what has arrived (perhaps none), without blocking.

        A message that does not unpickle comes as ``Undecodable``. Raises ``EOFError`` once
        the other end has closed and everything it sent has been read. A peer that ends with
        bytes of ours unread resets the socket, which is an end too: the messages completed
        before are returned first (a slave's last report says how it ended).
        """
        done: list[Any] = []
        while True:
            self._parse(done)
            try:
                received, drained = self._receive()
            except (BlockingIOError, InterruptedError):
                return done
            except OSError:
                if done:
                    return done
                raise
            if not received:
                if done:
                    return done
                raise EOFError("the other end closed the channel")
            if drained:  # (asking again would only say so, at the cost of a call and an error)
                self._parse(done)
                return done

    def at_hand(self) -> bool:
        """Whether a message, or the start of one, has arrived and waits to be read (one call
        to the kernel at most, which never blocks)."""
        if self._ready or self._head != self._tail or self._frame is not None:
            return True
        if self._poll is None:
            self._poll = select.poll()  # (select would refuse a descriptor past 1023)
            self._poll.register(self.sock, select.POLLIN)
        return bool(self._poll.poll(0))

    def receive(self, spin: float = 0.0) -> Any:
        """The next message, waiting for it (on a blocking socket), for the first ``spin``
        seconds without sleeping (see ``_recv_into``)."""
        while not self._ready:
            self._parse(self._ready)
            if self._ready:
                break
            if not self._receive(spin)[0]:
                raise EOFError("the other end closed the channel")
        return self._ready.popleft()

    def _receive(self, spin: float = 0.0) -> tuple[int, bool]:
        """Receive what the socket has: straight into a large frame, else into the scratch.
        Return how many bytes came, and whether they took less room than was offered: the
        socket then had no more."""
        frame = self._frame
        if frame is not None and self._head == self._tail:
            room = frame.nbytes - self._filled
            received = self._recv_into(frame[self._filled :], spin)
            self._filled += received
            self.received += received
            return received, received < room
        if self._head == self._tail:
            self._head = self._tail = 0
        elif self._tail == len(self._scratch):  # make room: move what is unread to the front
            left = self._tail - self._head
            self._view[:left] = self._view[self._head : self._tail]
            self._head, self._tail = 0, left
        room = len(self._scratch) - self._tail
        received = self._recv_into(self._view[self._tail :], spin)
        self._tail += received
        self.received += received
        return received, received < room

    def _recv_into(self, view: memoryview, spin: float = 0.0) -> int:
        """Receive into ``view``; 0 at the end, which a reset is too (the peer ended with bytes
        of ours unread).

        On a blocking socket, for the first ``spin`` seconds it only looks: a message that
        comes by then (the next batch of a master that answers at once) is taken without the
        cost of sleeping and waking up, which is most of a round trip's between processes.
        """
        try:
            if spin:
                deadline = time.perf_counter() + spin
                while True:
                    try:
                        return self.sock.recv_into(view, 0, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        if time.perf_counter() >= deadline:
                            break
            return self.sock.recv_into(view)
        except ConnectionResetError:
            return 0

    def _parse(self, done: Any) -> None:
        """Advance through the bytes at hand: headers, then frames, completing messages."""
        while True:
            if self._frame is not None:
                if not self._fill():
                    return
                continue
            available = self._tail - self._head
            if self._sizes is None:
                if available < 4:
                    return
                (count,) = _COUNT.unpack_from(self._scratch, self._head)
                header = 4 + 8 * count
                if header > len(self._scratch):
                    self._grow(header)
                if available < header:
                    return
                sizes_layout = _SIZES.get(count) or struct.Struct(f"!{count}Q")
                self._sizes = sizes_layout.unpack_from(self._scratch, self._head + 4)
                self._head += header
                self._frames = []
                available -= header
                sizes = self._sizes
                if len(sizes) == 1 and sizes[0] <= available:  # a small message, all here
                    start = self._head
                    self._head += sizes[0]
                    self._sizes = None
                    if not self._decode:
                        done.append([self._scratch[start : self._head]])
                        continue
                    stream = self._view[start : self._head]
                    done.append(_decode(stream, []))
                    stream.release()
                    continue
            self._next_frame(done)

    def _next_frame(self, done: Any) -> None:
        """Start the next frame of the message, or finish the message."""
        sizes = self._sizes
        assert sizes is not None
        while len(self._frames) < len(sizes):
            size = sizes[len(self._frames)]
            buffer = bytearray(size)
            if size:
                self._frame, self._filled = memoryview(buffer), 0
                self._frames.append(buffer)
                return
            self._frames.append(buffer)
        frames, self._frames, self._sizes = self._frames, [], None
        done.append(_decode(frames[0], frames[1:]) if self._decode else frames)

    def _fill(self) -> bool:
        """Move bytes at hand into the frame being filled; False when more must arrive."""
        frame = self._frame
        assert frame is not None
        take = min(self._tail - self._head, frame.nbytes - self._filled)
        if take:
            frame[self._filled : self._filled + take] = self._view[self._head : self._head + take]
            self._head += take
            self._filled += take
        if self._filled < frame.nbytes:
            return False
        self._frame = None
        return True

    def _grow(self, size: int) -> None:
        left = self._tail - self._head
        scratch = bytearray(max(size, 2 * len(self._scratch)))
        scratch[:left] = self._view[self._head : self._tail]
        self._view.release()
        self._scratch, self._view = scratch, memoryview(scratch)
        self._head, self._tail = 0, left


def _decode(stream: Any, buffers: list[bytearray]) -> Any:
    try:
        return wire.unpickle(stream, buffers)
    except Exception as exc:
        return Undecodable(exc)
