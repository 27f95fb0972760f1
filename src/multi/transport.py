"""What a fabric provides: a transport that starts slaves and moves batches and reports.

The shared engine (``multi.scheduler``) does everything else: it chooses what each slave runs,
pickles batches for transports whose slaves are other processes, retries, replaces, times out
and delivers. A transport only moves what it is given, and says what it sees:

- ``send`` hands a batch to one slave without waiting for it to run;
- ``receive`` waits (blocking in the kernel, never spinning for long) for the report of a batch
  from any slave, or the news that a slave ended (``Slave_lost``), or returns None once its
  timeout has passed;
- ``end_slave`` and ``replace``, where the slaves are processes the transport owns, stop one
  slave at once and start another in its rank: the engine decides when.

Reports of one slave arrive in the order its batches were sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from multi import task_memory, wire
from multi.slave import Batch, Report


@dataclass(slots=True)
class Slave_lost:
    """A slave ended without finishing its batches; the transport has forgotten it."""

    rank: int
    reason: str  # e.g. "(pid 123) was killed by signal 9 (SIGKILL)"
    task_id: int | None = None  # the command it was running, when the transport knows
    idle: bool = False  # the transport knows that it was waiting for work
    #: What the slave's command wrote before it ended (stream, text), where the transport
    #: could read it.
    output: list[tuple[int, str]] | None = None
    #: What it was doing with a batch, where the transport knows that a death then is the
    #: batch's doing (``task_memory.stage``): "unpickling" it, before any command of it ran,
    #: or "returning the results of" it, after the last; and that batch's first command,
    #: where the slave named it (its oldest batch otherwise).
    stage: str | None = None
    stage_of: int | None = None

    @classmethod
    def showing(
        cls,
        rank: int,
        reason: str,
        task: int,
        output: list[tuple[int, str]] | None = None,
        shown: bool = True,
        idle: bool = False,
    ) -> Slave_lost:
        """The loss of a slave that showed ``task`` in its task memory (``multi.task_memory``):
        a command's id, or what it did between commands. Where ``shown`` is false the master
        could not read it, and knows the command only if ``task`` names one; ``idle`` is what
        the master knows itself."""
        stage, of = task_memory.stage(task) if shown else (None, None)
        return cls(
            rank,
            reason,
            task if task >= 0 else None,
            idle or (shown and task == task_memory.IDLE),
            output,
            stage,
            of,
        )


Message = Report | Slave_lost


@dataclass(slots=True)
class Slave_ended:
    """A slave that ``end_slave`` stopped: its name for the report, and what the command it ran
    wrote before it was stopped (stream, text), where the transport could read it."""

    name: str  # e.g. "slave 2 (pid 123)"
    output: list[tuple[int, str]] | None = None


#: What ``send`` takes: frames of the pickled batch where ``pickled`` is set (which a slave
#: reads with ``multi.slave.rebuilt_batch``, and answers with ``seal``, read on the master with
#: ``rebuilt_report``), else the batch.
Payload = Batch | wire.Frames


class Transport(ABC):
    """The moving parts of one fabric."""

    #: Batches a slave may hold at once; the engine uses a second one only to hide the round
    #: trip of tiny commands.
    window: int = 2
    #: Whether many small commands may travel together in one batch.
    batching: bool = True
    #: Whether batches travel to other processes: the engine then pickles them (``send`` gets
    #: frames), which bounds them in bytes and names a command that does not pickle.
    pickled: bool = False
    #: Whether the master is the one slave: ``send`` runs the batch before it returns, in the
    #: master's own thread, and its report is the next thing ``receive`` gives.
    inline: bool = False
    #: Whether ``end_slave`` and ``replace`` work: needed for per-command timeouts, and for a
    #: slave that dies to be replaced.
    replaceable: bool = False
    #: Whether slaves beat (``silent_for`` tells), so that a silent one can be taken for hung.
    heartbeats: bool = False
    #: The most bytes that one batch can take to a slave (None: no bound): batches are cut
    #: to it, and a command that pickles to more fails alone.
    largest_message: int | None = None
    #: Whether ``wake`` ends a ``receive`` under way: an open run (an executor's) then waits
    #: for its slaves alone, and is woken when its source has more; else it looks at its
    #: source every few milliseconds.
    wakes: bool = False

    @cached_property
    def traffic(self) -> Counter[tuple[int, str]]:
        """Bytes moved so far, by ``(rank, "sent")`` and ``(rank, "received")``."""
        return Counter()

    @property
    @abstractmethod
    def ranks(self) -> Sequence[int]:
        """The ranks of the slaves that take work now."""

    def start(self) -> None:  # noqa: B027 (optional hook)
        """Start the slaves; called once, before the first batch."""

    @abstractmethod
    def send(self, rank: int, payload: Payload) -> None:
        """Hand a batch to a slave, without waiting for it to run."""

    @abstractmethod
    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        """Wait for a report or a lost slave from any slave; None after ``timeout`` seconds."""

    @abstractmethod
    def stop(self, timeout: float, status: int = 0) -> None:
        """Stop every slave, waiting ``timeout`` seconds at most; forcing them if need be.

        ``status`` is the one the program ends with: a transport that can only force its
        slaves by ending the whole job (MPI) ends it with that status.
        """

    def kill(self, status: int = 1) -> None:
        """Stop every slave at once, without waiting for their work."""
        self.stop(0.0, status)

    def wake(self) -> None:  # noqa: B027 (optional hook)
        """Make the ``receive`` under way, or the next one, return None at once (where
        ``wakes``); called from any thread."""

    def running(self, rank: int) -> tuple[int, float] | None:
        """The id of the command a slave runs and when it started (``time.monotonic()``), or
        None when it runs none or the transport cannot tell."""
        return None

    def silent_for(self, rank: int) -> float | None:
        """Seconds since the slave last gave a sign of life (a heartbeat), or None where the
        transport cannot tell (slaves that cannot hang on their own, such as threads)."""
        return None

    def end_slave(self, rank: int) -> Slave_ended:
        """Stop one slave at once and forget it; say which it was and what its command wrote."""
        raise NotImplementedError(f"{type(self).__name__} cannot stop one slave")

    def replace(self, rank: int) -> None:
        """Start a new slave in the rank of one that was lost."""
        raise NotImplementedError(f"{type(self).__name__} cannot start a slave again")
