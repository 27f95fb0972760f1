"""The engine: the master's dispatch loop, shared by every fabric.

::

    run_queue ──> Run ──> Scheduler.run ──send(batch)──> transport ──> slaves
                              ^                                          │
                              └──── receive(report | Slave_lost | None) ─┘
                              │
                    deliver(index), in queue order, on the master's main thread

Dispatch is breadth first: a slave that holds nothing gets a batch before any slave gets a
second one, and a second batch goes out only where it hides a round trip (``batching``). The
policies live here, never in a transport:

- **Failures** (``on_failure``): by default a command that fails stops nothing; every command
  runs and everything is delivered in queue order, then the first failure is raised with the
  others counted in a note and listed in the run's statistics. If the first
  ``EARLY_STOP_FAILURES`` commands to finish all failed, the run stops early (a bug, not bad
  data). ``stop`` stops dispatch at the first failure; ``run-all`` never stops early.
- **Lost slaves**: the command a slave died under counts an attempt and travels alone next
  time; it fails for good after ``retries`` more. The other commands the slave held go back to
  the queue. A slave that died under a command is replaced (where the transport can); one
  that dies without running any, ``START_FAILURES`` times in a row, is given up. Each death
  that the run survives is told (``tell``) as it happens: the command it ran, and what next.
- **Timeouts** (``timeout``): a command that runs longer fails with ``CommandTimeoutError``; its
  slave is stopped and replaced.
- **Liveness** (``liveness``): a slave whose transport heard no sign of life from it (a
  heartbeat) for that long is taken for hung: it is stopped and handled as lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from multi import sent_code, wire
from multi.batching import UNSIZED, Batch_sizer
from multi.errors import (
    BrokenProcessorError,
    CommandTimeoutError,
    Failure,
    MultiError,
    SlaveDiedError,
    UnpicklableError,
    add_note,
    describe,
    times,
)
from multi.run import Run, Sent
from multi.slave import SETUP_ID, Report, batch_for_wire
from multi.statistics import Failure_record, Slave_statistics
from multi.transport import Slave_lost, Transport

if TYPE_CHECKING:
    from multi.timeline import Timeline

ON_FAILURE = ("continue", "stop", "run-all")
#: An open run takes from its source what makes this many batches per slave: enough to keep
#: every slave busy, no more (what the source keeps can still be cancelled there).
REFILL_BATCHES = 2
#: How often an open run looks for new commands while it waits for its slaves, and, once it
#: takes no more, whether its source drops it: where the transport cannot be woken by the
#: source instead (``Transport.wakes``).
SOURCE_SECONDS = 0.002
DROP_SECONDS = 0.05
EARLY_STOP_FAILURES = 10
START_FAILURES = 3

#: Delivers on the master the commands of a run from one index to another (excluded), which
#: share an outcome; returns the exceptions they raised, with their indices, in queue order.
Deliver = Callable[[Run, int, int, Report | BaseException], list[tuple[int, BaseException]]]


class Scheduler:
    """Runs the commands of each ``Run`` on one transport's slaves."""

    def __init__(
        self,
        transport: Transport,
        deliver: Deliver,
        setup: Callable[[], list[Any]],
        retries: int,
        timeout: float | None = None,
        on_failure: str = "continue",
        liveness: float | None = None,
        tell: Callable[[str], None] = lambda news: None,
    ) -> None:
        self.transport = transport
        self.deliver = deliver
        self.setup = setup
        self.retries = retries
        self.timeout = timeout
        self.on_failure = on_failure
        self.liveness = liveness
        #: Says a line of news to the application's user (a death the run survives).
        self.tell = tell
        self._period = self._deadline_period()  # (settings and transport stay as they are)
        self._check_at: float | None = None  # when deadlines are next looked at
        #: Deaths of a rank's slaves in a row without running a command.
        self._start_failures: dict[int, int] = {}
        #: Ranks whose slave has answered once: the round trip of a slave's first batch
        #: includes its start-up, which says nothing of the round trips to come.
        self._answered: set[int] = set()
        #: What each slave process holds of the script's code, sent once (``multi.sent_code``).
        self._peers: dict[int, sent_code.Peer] = {}
        #: Why no slave is left, once every one was lost for good.
        self.broken: str | None = None
        #: Where the runs' events are noted, with the option ``timeline``.
        self.timeline: Timeline | None = None

    def new_run(
        self,
        commands: list[Any],
        memo_ids: list[int | None],
        pinned: list[int] | None = None,
        in_order: bool = True,
    ) -> Run:
        """The state of a run of ``commands`` on the slaves there are now."""
        if self.timeline is not None:
            self.timeline.begin_run()
        transport = self.transport
        ranks = transport.ranks
        if len(commands) == 1:  # (an open run starts with none, and takes more)
            sizer = UNSIZED
        else:
            sizer = Batch_sizer(
                len(ranks), transport.batching, transport.pickled, transport.largest_message
            )
        return Run(commands, memo_ids, ranks, sizer, pinned, in_order)

    def run(self, run: Run) -> None:
        """Run every command of ``run`` and deliver each outcome; raise the first failure."""
        transport = self.transport
        traffic = transport.traffic
        moved = dict(traffic) if traffic else {}  # (none where slaves share the master's memory)
        if not run.in_flight:
            self._no_slave_left(run, self.broken or "no slave could be started")
        held = transport.pickled and run.source is None  # (an open run may last across cells)
        if held:
            sent_code.hold()  # the script's code as it is now, for every batch of the run
        try:
            if run.count == 1 and transport.inline and run.source is None:
                self._run_inline(run)
            else:
                self._run_loop(run)
            self._deliver_ready(run, True)  # (everything: a keyword costs a run of one 60 ns)
        finally:
            if held:
                sent_code.release()
            self._account(run, moved)
        if run.failures and run.on_error is None:
            self._raise_first(run)

    def _run_loop(self, run: Run) -> None:
        """Send, receive and deliver until no slave holds a command of the run."""
        transport = self.transport
        self._dispatch(run)
        period = self._period
        deadlines = period is not None
        # Nothing is due before the first batch has been out for this long: looking at every
        # slave at once would cost each run of a few commands its number of slaves.
        self._check_at = time.monotonic() + period if period is not None else None
        open_run = run.source is not None
        timed_wait = open_run or deadlines  # (else every wait is for a message, unbounded)
        while True:
            if open_run:
                self._refill(run)
                self._dispatch(run)
                if run.ready:  # calls that failed as they were sent (they do not pickle): no
                    self._deliver_ready(run)  # report comes for them, and the source, asked
                    continue  # again, may have nothing more (else the wait would never end)
            taking = open_run and not run.closed and run.stopped is None
            if not taking and not run.busy():
                break
            message = transport.receive(self._wait_seconds(run) if timed_wait else None)
            if message is not None:
                rank, body = message
                if isinstance(body, Slave_lost):
                    self._on_lost(
                        run, rank, body.reason, body.task_id, body.idle, body.output,
                        stage=body.stage, stage_of=body.stage_of,
                    )  # fmt: skip
                else:
                    self._on_report(run, rank, body)
            if deadlines and time.monotonic() >= self._check_at:  # type: ignore[operator]
                self._enforce_deadlines(run)
            if open_run:  # its source first: it may drop the run (uni runs a batch as sent)
                self._refill(run)
            self._dispatch(run)  # (before delivery: the slave that reported does not wait)
            self._deliver_ready(run)

    def _run_inline(self, run: Run) -> None:
        """The loop of a run of one command, on a transport that runs it as it is sent: its
        report is there at once, and nothing else can be (no deadline can pass meanwhile).
        The loop, with nothing to wait for, took about a tenth of such a run's time."""
        rank = next(iter(run.in_flight))
        if self._send(run, rank, run.take(rank, 1)):  # (nothing left where it does not pickle)
            rank, report = self.transport.receive()  # type: ignore[misc]
            self._on_report(run, rank, report)  # type: ignore[arg-type]

    def _refill(self, run: Run) -> None:
        """Let an open run take what its source has, as much as keeps every slave busy, until
        the source says that nothing more will come (the run is ``closed``). It is asked for
        none when every slave is busy, once the run is closed or stopped too: it may drop the
        run (by raising) at any time."""
        wanted = 0
        if not run.closed and run.stopped is None:
            enough = REFILL_BATCHES * max(1, len(run.in_flight)) * run.sizer.size(1 << 30)
            wanted = max(0, enough - run.waiting())
        if not run.source(run, wanted) and not run.closed:  # type: ignore[misc]
            run.closed = True

    # Dispatch ------------------------------------------------------------------------------

    def _dispatch(self, run: Run) -> None:
        """A batch for every slave that holds none; then a second where it hides a round trip."""
        if run.stopped is not None or not (run.pinned or run.waiting()):
            return  # (nothing to send: the state of most calls once a run's tail is out)
        in_flight = run.in_flight
        for rank, batches in in_flight.items():
            if not batches and not self._send_next(run, rank) and not run.pinned:
                break  # nothing is left to send: the other idle slaves would find nothing too
        if self.transport.window < 2 or not run.waiting():
            return
        if any(batches and batches[0].blind for batches in in_flight.values()):
            # A slave holds the one command it got before anything was known: its report,
            # most likely there already, is read before anyone gets a second batch. (Tiny
            # commands on two slaves: one idled 1-3 ms at the start of each run while the
            # master pickled a second batch for the other.)
            return
        sizer = run.sizer
        now = time.perf_counter()
        for rank, batches in in_flight.items():
            if len(batches) == 1 and not run.pinned.get(rank):
                waiting = run.waiting()
                if not sizer.second_batch_pays(waiting, sizer.size(waiting)):
                    return
                held = batches[0]
                if sizer.overdue(len(held.indices), now - held.sent_at):
                    continue  # it runs something long: what is left may go to a free slave
                self._send_next(run, rank)

    def _send_next(self, run: Run, rank: int) -> bool:
        """Send a slave its next batch; False if there is nothing for it.

        Commands that fail before they leave (they do not pickle) make room for the next ones.
        """
        while (waiting := run.waiting()) or run.pinned.get(rank):
            indices = run.take(rank, run.sizer.size(waiting))
            if self._send(run, rank, indices):
                return True
            if run.stopped is not None:
                break
        return False

    def _send(self, run: Run, rank: int, indices: Sequence[int]) -> Sequence[int]:
        """Send the commands at ``indices``: pickled and cut to the byte bound where they
        travel to another process; a command that does not pickle fails, the others go."""
        transport = self.transport
        commands = run.commands
        nbytes = 0
        payload: Any
        peer: sent_code.Peer | None = None  # (code is sent once only where batches pickle)
        if transport.pickled:
            peer = self._peer(rank)
            try:
                payload = _pickled(run, indices, peer)
            except UnpicklableError:
                indices = self._drop_unpicklable(run, rank, indices)
                if not indices:
                    return indices
                payload = _pickled(run, indices, peer)
            nbytes = wire.size(payload)
            fit = run.sizer.fit_in_bytes(len(indices), nbytes)
            while fit < len(indices):
                run.put_back(indices[fit:])
                indices = indices[:fit]
                payload = _pickled(run, indices, peer)
                nbytes = wire.size(payload)
                fit = run.sizer.fit_in_bytes(len(indices), nbytes)
            largest = transport.largest_message
            if largest is not None and nbytes > largest:  # (alone: the sizer cut the batch)
                self._fail(run, indices[0], _too_large(run, indices[0], nbytes, largest))
                return ()
            run.sizer.sent(len(indices), nbytes)
        else:
            payload = (indices, _pick(commands, indices))
        batches = run.in_flight[rank]
        timed = not batches and rank in self._answered
        blind = run.sizer.seconds is None
        batches.append(Sent(indices, time.perf_counter(), timed, False, blind))  # (not setup)
        run.statistics.slave(rank).batches += 1  # (it takes part: its bytes are counted)
        transport.send(rank, payload)
        if peer is not None:
            peer.confirm()
        if self.timeline is not None:
            self.timeline.sent(rank, indices, nbytes)
        return indices

    def _peer(self, rank: int) -> sent_code.Peer:
        """What the slave of ``rank`` holds of the code sent once (made on first use)."""
        peer = self._peers.get(rank)
        if peer is None:
            peer = self._peers[rank] = sent_code.Peer()
        return peer

    def _drop_unpicklable(self, run: Run, rank: int, indices: Sequence[int]) -> list[int]:
        sendable = []
        for index in indices:
            command = run.commands[index]
            if wire.find_unpicklable(command) is None:
                sendable.append(index)
                continue
            advice = wire.COMMAND_ADVICE if run.source is None else wire.CALL_ADVICE
            error = wire.unpicklable_error(run.named(index, noun=True), command, advice)
            self._fail(run, index, error)
        return sendable

    def _send_setup(self, run: Run, rank: int) -> None:
        """Give a new slave the data that the others hold before anything else."""
        commands = self.setup()
        if not commands:
            return
        ids = [SETUP_ID] * len(commands)
        payload: Any = (ids, commands)
        peer = self._peer(rank)
        if self.transport.pickled:
            payload = wire.dumps(batch_for_wire(payload), peer)
        run.in_flight[rank].append(Sent(ids, time.perf_counter(), timed=False, setup=True))
        run.statistics.slave(rank)
        self.transport.send(rank, payload)
        peer.confirm()

    # Receipt -------------------------------------------------------------------------------

    def _on_report(self, run: Run, rank: int, report: Report) -> None:
        self._answered.add(rank)
        batches = run.in_flight[rank]
        sent = batches[0]
        finished = len(report.seconds)  # (report.finished(), on the path of every report)
        if report.unreadable is not None:  # it may lack the code that the batch defined
            self._peers.pop(rank, None)
        if sent.setup:
            batches.pop(0)
            if report.failures or report.unreadable or report.lost:
                self.tell(f"slave {rank} could not restore its data store")
        elif report.unreadable is not None and not (report.output and len(sent.indices) == 1):
            batches.pop(0)
            self._start_failures[rank] = 0
            self._on_unreadable(run, sent.indices, report.unreadable)
        else:
            self._start_failures[rank] = 0
            indices = sent.indices
            if report.unreadable is not None:  # a lone command's results: it fails, its output
                report.failures = {0: self._named(run, indices[0], report.unreadable)}
                report.unreadable = None
            run.finish(indices, report, finished)
            busy = run.statistics.ran(rank, run.commands, indices, report.seconds)
            if self.timeline is not None:
                self.timeline.ran(rank, indices, run.commands, report)
            if run.sizer is not UNSIZED:  # (a run of one command's, which learns nothing)
                elapsed = time.perf_counter() - sent.sent_at if sent.timed else None
                run.sizer.reported(finished, busy, elapsed)
            if finished < len(indices):  # the slave ended in the middle of the batch
                sent.indices = indices[finished:]
            else:
                batches.pop(0)
            if report.failures:
                self._failed(run)
        if report.lost is not None:
            culprit = sent.indices[0] if not sent.setup and sent.indices else None
            # (what the command it ended in wrote, which the report holds at its position)
            output = report.output.get(finished) if report.output else None
            self._on_lost(run, rank, report.lost, culprit, output=output)

    def _on_unreadable(self, run: Run, indices: Sequence[int], failure: Failure) -> None:
        """A batch the slave could not rebuild, or whose report the master could not: alone, a
        command fails; in company, each goes again alone, so that the others are not lost with
        the one that cannot travel."""
        if len(indices) > 1:
            run.again(indices, alone=True)
            return
        self._fail(run, indices[0], self._named(run, indices[0], failure))

    @staticmethod
    def _named(run: Run, index: int, failure: Failure) -> BaseException:
        """The exception of a failure that a command did not raise itself, naming it."""
        error = failure.exception()
        add_note(error, f"the command: {run.named(index)}")
        return error

    def _on_lost(
        self,
        run: Run,
        rank: int,
        reason: str,
        task_id: int | None,
        idle: bool = False,
        output: list[tuple[int, str]] | None = None,
        died: bool = True,
        stage: str | None = None,
        stage_of: int | None = None,
    ) -> None:
        """A slave ended (``died``, or was stopped by the engine): its commands go back, the one
        it ran counts an attempt; replace it.

        One that died at a ``stage`` of its oldest batch (unpickling it, returning its results;
        ``stage_of`` names the batch by its first command, where the slave did: once its
        report has come, the death is no batch's) died of that batch: of its one command,
        which counts an attempt, or of one of its commands, which all go again one by one (no
        attempt counted), so that the next death names the command. Where the transport
        cannot tell which command it ran, the first it held is blamed, unless it was idle or
        still restoring its data store. What it wrote outside any command (a thread, between
        two batches) goes with the first command it held.
        """
        statistics = self._note_lost(run, rank, reason, died)
        batches = run.in_flight.get(rank)
        starting = bool(batches) and batches[0].setup  # type: ignore[index]
        #: the commands of the oldest batch, where the death was that batch's doing
        of_batch = list(batches[0].indices) if stage and batches and not starting else []
        if of_batch and stage_of is not None and of_batch[0] != stage_of:
            of_batch, idle = [], True  # (it died as its report had gone: it held the next)
        held = run.in_flight_indices(rank)
        run.in_flight.pop(rank, None)
        if task_id in held:
            culprit: int | None = task_id
        elif of_batch:
            culprit = of_batch[0] if len(of_batch) == 1 else None
        else:
            culprit = None if idle or starting or not held else held[0]
        doing = stage if stage and of_batch else "running"
        if culprit is not None:
            if output:  # what it wrote before it died, replayed with its outcome
                run.left_output.setdefault(culprit, []).append((rank, output))
            attempts = run.attempts[culprit] = run.attempts.get(culprit, 0) + 1
            command = describe(run.commands[culprit])
            news = f"while {doing} {run.named(culprit)}, which "
            if attempts > self.retries:
                self._fail(run, culprit, SlaveDiedError(rank, reason, command, attempts, doing))
                news += f"fails: it was tried {times(attempts)}"
            else:
                statistics.retries += 1
                run.again([culprit], alone=True)
                if self.timeline is not None:
                    self.timeline.retried(rank, culprit, attempts)
                news += f"runs again (attempt {attempts + 1} of {self.retries + 1})"
        else:
            if output and held:  # written between two batches (by a thread): with the next
                run.left_output.setdefault(held[0], []).append((rank, output))
            if starting:
                news = "while it restored its data store"
            elif of_batch:
                news = (
                    f"while {stage} a batch of {len(of_batch)} commands, which run again one by one"
                )
                run.again(of_batch, alone=True)
            else:
                news = "before it ran a command" if rank not in self._answered else "while idle"
        gone = {culprit, *of_batch}  # (gone again already, where they must)
        run.again([index for index in held if index not in gone])
        then = self._replace_or_give_up(
            run, rank, reason, died_under_a_command=culprit is not None or bool(of_batch)
        )
        if then is not None:
            self.tell(f"slave {rank} {reason} {news}; {then}")

    def _replace_or_give_up(
        self, run: Run, rank: int, reason: str, died_under_a_command: bool
    ) -> str | None:
        """Start a slave in place of a lost one, or give its rank up; say which (None once no
        slave is left, which every waiting command's failure says)."""
        failures = 0 if died_under_a_command else self._start_failures.get(rank, 0) + 1
        self._start_failures[rank] = failures
        self._answered.discard(rank)
        if self.transport.replaceable and failures < START_FAILURES:
            self._peers.pop(rank, None)  # a new process, which has received nothing
            self.transport.replace(rank)
            run.in_flight[rank] = []
            self._send_setup(run, rank)
            return "a new slave takes its place"
        for index in run.pinned.pop(rank, ()):
            command = describe(run.commands[index])
            attempts = run.attempts.get(index, 0)
            self._fail(run, index, SlaveDiedError(rank, reason, command, attempts))
        if not run.in_flight:
            self.broken = f"slave {rank} {reason}"
            self._no_slave_left(run, self.broken)
            return None
        if not self.transport.replaceable:
            return "the run goes on with the other slaves"
        return (
            f"its place stays empty: {failures} slaves in a row died there before running a command"
        )

    def _no_slave_left(self, run: Run, reason: str) -> None:
        """Every slave is lost: the commands that wait fail, saying so."""
        waiting = [*run.alone, *run.returned, *range(run.fresh, run.count)]
        run.alone = run.returned = ()
        run.fresh = run.count
        for index in waiting:
            error = BrokenProcessorError(
                describe(run.commands[index]), reason, restartable=self.transport.replaceable
            )
            self._fail(run, index, error)

    # Deadlines: timeouts and liveness ----------------------------------------------------

    def _wait_seconds(self, run: Run) -> float | None:
        """How long to wait for a message before the next deadline must be checked, or, in
        an open run, before its source is looked at again."""
        wait = None
        if run.source is not None and not self.transport.wakes:  # (else its source wakes it)
            taking = not run.closed and run.stopped is None
            wait = SOURCE_SECONDS if taking else DROP_SECONDS
        if self._check_at is None:
            return wait
        left = max(0.0, self._check_at - time.monotonic())
        return left if wait is None else min(wait, left)

    def _liveness(self) -> float | None:
        """The liveness in force: none where the transport hears no heartbeats."""
        return self.liveness if self.transport.heartbeats else None

    def _deadline_period(self) -> float | None:
        """The shortest deadline there is (timeout, liveness), or None where there is none."""
        periods = [s for s in (self.timeout, self._liveness()) if s is not None]
        return min(periods) if periods else None

    def _enforce_deadlines(self, run: Run) -> None:
        """Stop the commands past their timeout and the slaves that showed no sign of life for
        ``liveness`` seconds; note when to look again."""
        timeout, transport, liveness = self.timeout, self.transport, self._liveness()
        now = time.monotonic()
        soonest = now + self._period  # type: ignore[operator]
        for rank in [rank for rank, batches in run.in_flight.items() if batches]:
            running = transport.running(rank)
            if timeout is not None and running is not None:
                due = running[1] + timeout
                if due > now:
                    soonest = min(soonest, due)
                elif running[0] in run.in_flight_indices(rank):
                    self._time_out(run, rank, *running)
                    continue
            silent = transport.silent_for(rank) if liveness is not None else None
            if silent is not None and liveness is not None:
                due = now - silent + liveness
                if due > now:
                    soonest = min(soonest, due)
                    continue
                task = running[0] if running is not None else None
                ended = transport.end_slave(rank)
                reason = (
                    f"{ended.name} showed no sign of life for {silent:.0f} s and was stopped "
                    f"(option liveness: {liveness:g} s)"
                )
                if self.timeline is not None:
                    self.timeline.silenced(rank, silent)
                self._on_lost(run, rank, reason, task, output=ended.output, died=False)
        self._check_at = soonest

    def _time_out(self, run: Run, rank: int, index: int, started: float) -> None:
        """A command ran past the timeout (since ``started``, on the monotonic clock): it fails,
        its slave is stopped and replaced."""
        ended = self.transport.end_slave(rank)
        if ended.output:  # what it wrote until then, replayed before its failure
            run.left_output.setdefault(index, []).append((rank, ended.output))
        command = describe(run.commands[index])
        self._fail(run, index, CommandTimeoutError(rank, ended.name, command, self.timeout or 0.0))
        if self.timeline is not None:
            self.timeline.stopped(rank, index, run.commands[index], time.monotonic() - started)
        reason = f"{ended.name} was stopped: {command} ran past the timeout"
        self._note_lost(run, rank, reason, died=False)
        held = [i for i in run.in_flight_indices(rank) if i != index]
        run.in_flight.pop(rank)
        run.again(held)
        self._replace_or_give_up(run, rank, reason, died_under_a_command=True)

    def _note_lost(self, run: Run, rank: int, reason: str, died: bool = True) -> Slave_statistics:
        """Count a slave's loss in the run's statistics, and in its timeline if it died (a stop
        by a deadline is there as such: ``Timeline.stopped``, ``Timeline.silenced``); its
        record."""
        statistics = run.statistics.slave(rank)
        statistics.lost += 1
        if died and self.timeline is not None:
            self.timeline.lost(rank, reason)
        return statistics

    # Failures ------------------------------------------------------------------------------

    def _fail(self, run: Run, index: int, error: BaseException) -> None:
        run.fail(index, error)
        self._failed(run)

    def _failed(self, run: Run) -> None:
        """Apply the failure policy once a command failed."""
        policy = run.on_failure or self.on_failure
        if run.stopped is not None or policy == "run-all":
            return
        if policy == "stop":
            run.stopped = "the run stopped at its first failure (on_failure='stop')"
        elif run.failed_first >= EARLY_STOP_FAILURES:
            run.stopped = (
                f"the run stopped early: the first {run.failed_first} commands to finish all "
                "failed, which is a bug rather than bad data (on_failure='run-all' runs every "
                "command whatever fails)"
            )

    # Delivery ------------------------------------------------------------------------------

    def _deliver_ready(self, run: Run, everything: bool = False) -> None:
        """Deliver finished commands in queue order, a stretch of them that share a report at
        a time; at the end, pass over those that never ran."""
        if not run.in_order:
            self._deliver_as_finished(run, everything)
            return
        outcomes = run.outcomes
        index, count = run.delivered, run.count
        while index < count:
            outcome = outcomes[index]
            if outcome is None:
                if not everything:
                    break
                run.unrun.append(index)
                index += 1
                run.delivered = index
                continue
            stop = index + 1
            while stop < count and outcomes[stop] is outcome:
                stop += 1
            outcomes[index:stop] = [None] * (stop - index)
            self._deliver_stretch(run, index, stop, outcome)  # sets run.delivered as it goes
            index = stop
            run.delivered = index

    def _deliver_as_finished(self, run: Run, everything: bool) -> None:
        """Deliver finished commands in the order they finished, a stretch of consecutive
        commands that share a report at a time; at the end, pass over those that never ran."""
        outcomes, settled = run.outcomes, run.settled
        while run.ready:
            ready, run.ready = run.ready, []
            at, end = 0, len(ready)
            while at < end:
                index = ready[at]
                outcome = outcomes[index]
                stop, at = index + 1, at + 1
                while at < end and ready[at] == stop and outcomes[stop] is outcome:
                    stop, at = stop + 1, at + 1
                outcomes[index:stop] = [None] * (stop - index)
                settled[index:stop] = b"\x01" * (stop - index)
                self._deliver_stretch(run, index, stop, outcome)  # type: ignore[arg-type]
        if everything:
            run.unrun = run.undelivered()
            run.delivered = run.count

    def _deliver_stretch(
        self, run: Run, start: int, stop: int, outcome: Report | BaseException
    ) -> None:
        """Deliver commands that share an outcome; keep the failures that delivery met (or
        hand each to the run's own handler), and apply the failure policy."""
        timeline = self.timeline
        began = time.time() if timeline is not None else 0.0
        errors = self.deliver(run, start, stop, outcome)
        if timeline is not None:
            timeline.delivered(start, stop, began)
        if not errors:
            return
        run.failures += errors
        if run.on_error is not None:
            for index, error in errors:
                run.on_error(index, error)
        if not isinstance(outcome, BaseException):
            self._failed(run)

    def _raise_first(self, run: Run) -> None:
        _, first = run.failures[0]
        others = run.failures[1:]
        if others:
            names = ", ".join(f"{type(error).__name__} from command {i}" for i, error in others[:3])
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            add_note(
                first,
                f"{len(others)} more failure(s) in this run: {names}{more}; "
                "processor.last_run.failures lists them all",
            )
        if run.stopped is not None:
            unrun = len(run.unrun)
            add_note(
                first,
                f"{run.stopped}: {unrun} command(s) were not run; "
                "processor.last_run.not_run holds them",
            )
        raise first

    # Statistics ----------------------------------------------------------------------------

    def _account(self, run: Run, moved: dict[tuple[int, str], int]) -> None:
        statistics = run.statistics
        statistics.seconds = time.perf_counter() - run.started
        statistics.queued = run.count
        traffic = self.transport.traffic
        if moved or traffic:  # (a fabric whose slaves share the master's memory moves no byte,
            # and a run of one command there is timed in microseconds)
            now = traffic.get
            for rank, slave in statistics.worked.items():  # (none moved to or from the others)
                slave.bytes_sent = now((rank, "sent"), 0) - moved.get((rank, "sent"), 0)
                slave.bytes_received = now((rank, "received"), 0) - moved.get((rank, "received"), 0)
        if run.failures:
            statistics.failures = [
                Failure_record(index, describe(run.commands[index]), error)
                for index, error in run.failures
            ]


def _pickled(run: Run, indices: Sequence[int], peer: sent_code.Peer) -> wire.Frames:
    """The frames of the batch of the commands at ``indices``, for the slave ``peer``."""
    batch = (indices, _pick(run.commands, indices))
    return wire.dumps(batch_for_wire(batch, run.memo_ids), peer)


def _too_large(run: Run, index: int, nbytes: int, largest: int) -> MultiError:
    """The failure of a command larger than one message of the transport."""
    return MultiError(
        f"{run.named(index, noun=True)} pickles to "
        f"{nbytes:,} bytes, more than one message of this fabric takes ({largest:,} bytes): "
        "split its data between several commands"
    )


def _pick(commands: list[Any], indices: Sequence[int]) -> list[Any]:
    if isinstance(indices, range):
        return commands[indices.start : indices.stop]
    return [commands[index] for index in indices]
