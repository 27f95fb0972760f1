"""What the slaves did: per slave and per run, and the summary printed at the end of a run."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Run times kept per command class for its percentile: beyond, a sample of them.
SAMPLE = 20_000


@dataclass(slots=True)
class Slave_statistics:
    """What one slave did."""

    commands: int = 0  # that finished on it
    batches: int = 0  # sent to it
    busy_seconds: float = 0.0
    bytes_sent: int = 0  # to the slave
    bytes_received: int = 0  # from the slave
    retries: int = 0  # commands run again after this slave died under them
    lost: int = 0  # times this slave died

    def add(self, other: Slave_statistics) -> None:
        self.commands += other.commands
        self.batches += other.batches
        self.busy_seconds += other.busy_seconds
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.retries += other.retries
        self.lost += other.lost


class Class_times:
    """The run times of one class's finished commands: their count and total, and a sample of
    at most ``SAMPLE`` of them for the percentile.

    The sample holds every ``stride``-th time in the order they came; the stride doubles (every
    other time kept is dropped) whenever the sample would hold more. Each time kept then stands
    for as many commands, early and late ones alike: a sample that took every new time at
    first and halved itself when full held mostly the last ones.
    """

    __slots__ = ("count", "sample", "stride", "total")

    def __init__(
        self, count: int, total: float, sample: array[float] | list[float], stride: int = 1
    ) -> None:
        # (made for every class of every run: a dataclass's own took twice as long)
        self.count = count
        self.total = total
        self.sample = sample
        self.stride = stride

    def __repr__(self) -> str:
        return f"Class_times(count={self.count}, total={self.total}, stride={self.stride})"

    def keep(self, times: Sequence[float], count: int, total: float, stride: int = 1) -> None:
        """Count ``count`` more commands that took ``total`` seconds, of which ``times`` are
        every ``stride``-th (a power of two, as this one's)."""
        mine = self.stride
        if type(self.sample) is list:  # the one time of a run's first report: an array now
            self.sample = array("d", self.sample)
        if stride == mine == 1:  # (every time is kept until the sample is first full)
            self.sample.extend(times)
        else:
            if stride > mine:  # (theirs are sparser: this sample thins to match)
                self.sample = self.sample[:: stride // mine]
                mine = self.stride = stride
            # The times kept are those at a multiple of the stride, counting from the first
            # command of the class: the first of theirs there, then one in every step.
            first = (-self.count % mine + stride - 1) // stride
            self.sample.extend(times[first :: mine // stride])
        self.count += count
        self.total += total
        if len(self.sample) > SAMPLE:
            self.thin()

    def thin(self) -> None:
        """Drop every other time kept until the sample holds ``SAMPLE`` at most."""
        sample = self.sample
        while len(sample) > SAMPLE:
            sample = self.sample = sample[::2]
            self.stride *= 2


@dataclass(frozen=True, slots=True)
class Failure_record:
    """A command of a run that failed: its place in the run, its name, and the exception."""

    index: int
    command: str
    error: BaseException


@dataclass(slots=True, init=False)
class Run_statistics:
    """What one ``run_queue``, or all of a program's, did.

    A slave gets its record when it first takes part (is sent work, or is lost); ``slaves``
    adds the idle ones when it is read. A run of one command on 64 slaves then costs the
    same as on one: a record per slave at every run took a third of such a run's time.
    """

    #: The records of the slaves that took part, by rank.
    worked: dict[int, Slave_statistics]
    #: The ranks of every slave there was, idle ones included.
    ranks: set[int]
    seconds: float  # wall time inside run_queue
    queued: int  # commands of the run, or of the runs counted in
    #: Every failure of the run, in queue order (the first is the one raised).
    failures: list[Failure_record]
    #: The commands a run that stopped early did not run, with their memos, to queue again.
    not_run: list[tuple[Any, Any]]
    #: Failures of every run counted in (``add``), for the totals of a program.
    failed: int
    #: The run times of finished commands, by class name (one record each: a run of one
    #: command looks it up once).
    classes: dict[str, Class_times]

    def __init__(self, ranks: set[int] | None = None) -> None:
        # (made at every run: a dataclass's own, with its factories, took a third longer)
        self.worked = {}
        self.ranks = set() if ranks is None else ranks
        self.seconds = 0.0
        self.queued = self.failed = 0
        self.failures = []
        self.not_run = []
        self.classes = {}

    def ran(
        self, rank: int, commands: Sequence[Any], indices: Sequence[int], seconds: list[float]
    ) -> float:
        """Note what a slave's report says its finished commands took; return their total.

        The commands at ``indices`` finished on the slave of ``rank`` in ``seconds`` each (one
        figure per finished command: fewer than ``indices`` where the slave ended mid-batch).
        """
        record = self.worked.get(rank) or self.slave(rank)  # (made when its batch was sent)
        if len(seconds) == 1:  # a round trip of one command, the path of a run of one
            busy = seconds[0]
            name = kind(commands[indices[0]])
            known = self.classes.get(name)  # (``_keep``, inline, with a list of one for the
            if known is None:  # sample: the call and an array cost a run of one 0.2 µs more)
                self.classes[name] = Class_times(1, busy, [busy])
            else:
                known.keep(seconds, 1, busy)
        else:
            busy = sum(seconds)
            self.timed(commands, indices, seconds)
        record.commands += len(seconds)
        record.busy_seconds += busy
        return busy

    def timed(self, commands: Sequence[Any], indices: Sequence[int], seconds: list[float]) -> None:
        """Note the run times of a batch's finished commands, by their class."""
        if type(indices) is range and len(seconds) == len(indices):
            batch = commands[indices.start : indices.stop]
            # The usual batch: one class, whose commands do not name themselves one by one.
            if len(set(map(type, batch))) == 1 and not hasattr(batch[0], "multi_kind"):
                self._keep(kind(batch[0]), seconds, len(seconds), sum(seconds))
                return
        by_kind: dict[str, list[float]] = {}
        for index, taken in zip(indices, seconds):  # noqa: B905 (the finished ones only)
            by_kind.setdefault(kind(commands[index]), []).append(taken)
        for name, times in by_kind.items():
            self._keep(name, times, len(times), sum(times))

    @property
    def slaves(self) -> dict[int, Slave_statistics]:
        """What each slave did, by rank: every slave there was, idle ones at zero."""
        worked = self.worked
        for rank in self.ranks:
            if rank not in worked:
                worked[rank] = Slave_statistics()
        return worked

    def slave(self, rank: int) -> Slave_statistics:
        """The record of one slave, made when it first takes part."""
        record = self.worked.get(rank)
        if record is None:
            record = self.worked[rank] = Slave_statistics()
        return record

    def _keep(
        self, name: str, times: Sequence[float], count: int, total: float, stride: int = 1
    ) -> None:
        record = self.classes.get(name)
        if record is None:
            record = self.classes[name] = Class_times(count, total, array("d", times), stride)
            if len(times) > SAMPLE:
                record.thin()
        else:
            record.keep(times, count, total, stride)

    @property
    def times(self) -> dict[str, array[float]]:
        """A sample of each class's run times (see ``Class_times``): copies, which the caller
        may change without changing what the statistics go on counting."""
        return {name: array("d", record.sample) for name, record in self.classes.items()}

    @property
    def counts(self) -> dict[str, int]:
        """How many commands of each class finished."""
        return {name: record.count for name, record in self.classes.items()}

    @property
    def totals(self) -> dict[str, float]:
        """The run time of each class's commands, in all."""
        return {name: record.total for name, record in self.classes.items()}

    @property
    def commands(self) -> int:
        return sum(slave.commands for slave in self.worked.values())

    @property
    def retries(self) -> int:
        return sum(slave.retries for slave in self.worked.values())

    def efficiency(self) -> float:
        """Work done over the time the slaves had for it: 1.0 when none ever waited."""
        slaves = self.slaves
        if self.seconds <= 0 or not slaves:
            return 0.0
        busy = sum(slave.busy_seconds for slave in slaves.values())
        return busy / (self.seconds * len(slaves))

    def add(self, *others: Run_statistics) -> None:
        """Count other runs in (their failures as a number, not the exceptions themselves):
        many at once, as the processor counts a program's runs."""
        worked = self.worked
        for other in others:
            for rank, slave in other.worked.items():
                (worked.get(rank) or self.slave(rank)).add(slave)
            self.ranks |= other.ranks
            self.seconds += other.seconds
            self.queued += other.queued
            self.failed += len(other.failures)
            for name, record in other.classes.items():
                self._keep(name, record.sample, record.count, record.total, record.stride)

    def one_line(self) -> str:
        batches = sum(slave.batches for slave in self.worked.values())
        return (
            f"run_queue: {self.queued} commands in {batches} batches on {len(self.slaves)} "
            f"slaves, {self.seconds:.3f} s, {self.efficiency():.0%} efficient, "
            f"{self.retries} retried, {len(self.failures)} failed, {len(self.not_run)} not run"
        )

    def table(self) -> str:
        """A table of what each slave did, and the parallel efficiency."""
        rows = [("slave", "commands", "busy", "sent", "received", "retries", "lost")]
        slaves = self.slaves
        for rank in sorted(slaves):
            s = slaves[rank]
            rows.append(
                (
                    str(rank),
                    str(s.commands),
                    f"{s.busy_seconds:.2f} s",
                    _size(s.bytes_sent),
                    _size(s.bytes_received),
                    str(s.retries),
                    str(s.lost),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
            for row in rows
        ]
        busy = sum(slave.busy_seconds for slave in slaves.values())
        lines.append(
            f"Parallel efficiency: {self.efficiency():.0%} ({busy:.2f} s of work in "
            f"{self.seconds:.2f} s of run_queue on {len(slaves)} slave"
            f"{'' if len(slaves) == 1 else 's'})"
        )
        if self.classes:
            lines += ["", self.class_table()]
        return "\n".join(lines)

    def class_table(self) -> str:
        """A table of the run times of each command class: count, mean, 95th percentile."""
        rows = [("class", "count", "mean", "95th percentile")]
        classes = self.classes
        for name in sorted(classes, key=lambda name: -classes[name].total):
            record = classes[name]
            rows.append((name, str(record.count), _duration(record.total / record.count),
                         _duration(_percentile(record.sample, 0.95))))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        )


def kind(command: Any) -> str:
    """What a command is, for tables and timelines: its ``multi_kind`` where it gives one (a
    string, from its class or of its own), else its class's name."""
    name = getattr(command, "multi_kind", None)
    return name if type(name) is str and name else type(command).__name__


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    return ""
