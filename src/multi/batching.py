"""How many commands travel together, and when a slave holds a second batch.

Everything is learnt from the commands of the current run (a run of other commands says
nothing about these): the time a command takes on its slave, the bytes it takes on the wire,
and the round trip of a batch beyond the work it holds (messages, pickling, waking up).

- Until a command of the run has finished, a batch holds one command: commands of unknown
  length are spread one per slave first.
- A batch then holds as many commands as run in about ``TARGET_SECONDS`` and take at most
  ``MAX_BATCH_BYTES``, or less where the transport's messages hold less (a larger command
  travels alone), and no more than an even share of what
  is left, so that the last commands spread over every slave; but no fewer than run in one
  round trip, since a batch split smaller ends no sooner, each part paying a round trip.
- A slave gets a second batch to hold only where that hides a round trip that would otherwise
  idle it for more than ``IDLE_SHARE`` of its time (tiny commands, large payloads), only while
  enough commands are left for every slave to get another batch after it, and only if the
  batch it holds is not overdue (running a command longer than the others): long commands
  never wait behind each other on one slave while another slave is free.
"""

from __future__ import annotations

import math

TARGET_SECONDS = 0.01
MAX_BATCH = 4096
MAX_BATCH_BYTES = 1 << 20
IDLE_SHARE = 0.02
#: Weight of the newest measure in the running estimates.
NEWEST = 0.3


def _blend(old: float | None, new: float) -> float:
    return new if old is None else (1 - NEWEST) * old + NEWEST * new


class Batch_sizer:
    """The estimates of one run, and the batch sizes they give."""

    __slots__ = ("batching", "bytes", "most_bytes", "pickled", "round_trip", "seconds", "slaves")

    def __init__(
        self, slaves: int, batching: bool, pickled: bool, largest_message: int | None = None
    ) -> None:
        self.slaves = max(1, slaves)
        self.batching = batching
        self.pickled = pickled
        #: The bytes of a batch of several commands, at most (see ``Transport.largest_message``).
        self.most_bytes = min(MAX_BATCH_BYTES, largest_message or MAX_BATCH_BYTES)
        self.seconds: float | None = None  # per command, on the slave
        self.bytes: float | None = None  # per command, on the wire
        self.round_trip: float | None = None  # per batch, beyond the work it holds

    def size(self, waiting: int) -> int:
        """Commands for the next batch, when ``waiting`` are left to send."""
        if not self.batching or self.seconds is None:
            return 1
        wanted = TARGET_SECONDS / max(self.seconds, 1e-7)
        if self.bytes:
            wanted = min(wanted, self.most_bytes / self.bytes)
        share = math.ceil(waiting / (2 * self.slaves))
        if self.round_trip is not None:  # (the tail of tiny commands: 1 ms of a 35 ms run)
            share = max(share, round(self.round_trip / max(self.seconds, 1e-7)))
        return max(1, min(int(wanted), share, MAX_BATCH))

    def second_batch_pays(self, waiting: int, size: int) -> bool:
        """Whether a slave that holds a batch should get another one now."""
        if self.seconds is None or self.round_trip is None:
            return False
        if waiting < self.slaves * size:  # the tail: keep what is left for idle slaves
            return False
        return self.round_trip > IDLE_SHARE * size * self.seconds

    def overdue(self, count: int, elapsed: float) -> bool:
        """Whether a batch of ``count`` commands out for ``elapsed`` seconds takes longer than
        its commands were expected to (the estimate comes first from the shortest commands,
        which finish first): its slave gets no second batch then."""
        seconds, round_trip = self.seconds or 0.0, self.round_trip or 0.0
        return elapsed > 2 * (count * seconds + round_trip)

    def fit_in_bytes(self, count: int, nbytes: int) -> int:
        """How many of ``count`` commands that pickled to ``nbytes`` fit in a batch (>= 1)."""
        if count <= 1 or nbytes <= self.most_bytes:
            return count
        return max(1, min(count - 1, count * self.most_bytes // nbytes))

    def sent(self, count: int, nbytes: int) -> None:
        if count:
            self.bytes = _blend(self.bytes, nbytes / count)

    def reported(self, count: int, busy: float, elapsed: float | None) -> None:
        """A batch of ``count`` commands came back after ``busy`` seconds of work; ``elapsed``
        is its whole round trip when it was the only batch its slave held."""
        if count:
            self.seconds = _blend(self.seconds, busy / count)
        if elapsed is not None:
            self.round_trip = _blend(self.round_trip, max(0.0, elapsed - busy))


class _Unsized(Batch_sizer):
    """The sizer of a run of one command, which learns nothing: nothing is left to size. It
    knows nothing either, so every such run shares one (making one took each 0.2 µs)."""

    __slots__ = ()

    def sent(self, count: int, nbytes: int) -> None:
        pass

    def reported(self, count: int, busy: float, elapsed: float | None) -> None:
        pass


#: The sizer of every run of one command.
UNSIZED: Batch_sizer = _Unsized(1, batching=False, pickled=False)
