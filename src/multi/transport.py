"""What a fabric provides: a transport that starts slaves and moves batches and outcomes.

The shared scheduler does everything else. A transport sends a batch to one slave, receives
the outcomes of a batch from any slave (blocking, never spinning), and stops its slaves.
A slave that dies is reported as a ``Slave_lost`` event in place of outcomes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from multi.slave import Batch, Outcome


@dataclass(slots=True)
class Slave_lost:
    """A slave ended without finishing its batches."""

    rank: int
    reason: str  # e.g. "was killed by signal 9 (SIGKILL)"
    task_id: int | None = None  # the command it was running, when the transport knows
    replaced: bool = False  # a new slave has taken the rank


Message = list[Outcome] | Slave_lost


class Transport(ABC):
    """The moving parts of one fabric."""

    #: Batches a slave holds at once, so that it never waits for the master between batches.
    window: int = 2
    #: Whether many small commands may travel together in one batch.
    batching: bool = True

    @cached_property
    def traffic(self) -> Counter[tuple[int, str]]:
        """Bytes moved so far, by ``(rank, "sent")`` and ``(rank, "received")``."""
        return Counter()

    @property
    @abstractmethod
    def ranks(self) -> Sequence[int]:
        """The ranks of the slaves that take work."""

    def start(self) -> None:  # noqa: B027 (optional hook)
        """Start the slaves; called once, before the first batch."""

    @abstractmethod
    def send(self, rank: int, batch: Batch) -> None:
        """Hand a batch to a slave, without waiting for it to run."""

    @abstractmethod
    def receive(self) -> tuple[int, Message]:
        """Wait for the outcomes of a batch from any slave, or the news of a lost slave."""

    @abstractmethod
    def stop(self, timeout: float) -> None:
        """Stop every slave, waiting ``timeout`` seconds at most; forcing them if need be."""

    def kill(self) -> None:
        """Stop every slave at once, without waiting for their work."""
        self.stop(0.0)
