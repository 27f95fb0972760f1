"""A run's state, shutdown and bad input hold on every path: nested runs, a command queued
twice, a refused call, every slave lost, slaves ended by an interrupt or silent, options, a
command that fails with its result, an application's own gc.freeze() and collector threshold, a
BaseException."""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from multi import (
    FabricUnavailableError,
    MultiError,
    RemoteTraceback,
    SlaveDiedError,
    UnpicklableError,
    collector,
    load_multiprocessor,
)
from multi.multiprocessing_processor import Multiprocessing_processor
from tests import workloads as w
from tests.conftest import run_master


def values(memo: w.Record) -> list[Any]:
    return [value for _, value in memo.values]


#: The fabrics whose slaves a SIGINT ends (and which replace them): processes that take it
#: (mpi4py spawns them here; PVM's ignore it, as Ctrl-C belongs to their master).
ENDING = ("multiprocessing", "mpi4py")


@pytest.fixture
def ending(fabric: str) -> str:
    if fabric not in ENDING:
        pytest.skip(f"no SIGINT ends a slave of the {fabric} fabric")
    return fabric


# Run state -----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["run_queue", "stop_slaves", "send_data_to_slaves"])
def test_a_run_or_stop_from_a_result_is_refused_and_the_outer_run_is_intact(
    fabric: str, call: str
) -> None:
    def body(processor: Any) -> tuple[list[Any], Any]:
        memo = w.Record()
        for i in range(10):
            processor.add_to_queue(w.Starts_a_run(call) if i == 4 else w.Square(i), memo)
        with pytest.raises(MultiError, match=rf"{call}\(\) was called while run_queue\(\)"):
            processor.run_queue()
        assert [record.index for record in processor.last_run.failures] == [4]
        after = w.Record()  # what the refused result queued waits for the next run
        processor.run_queue()
        processor.add_to_queue(w.Square(5), after)
        processor.run_queue()
        return values(memo), values(after)

    delivered, after = run_master(fabric, body)
    assert delivered == [i * i for i in range(10) if i != 4]
    assert after == [25]


def test_the_masters_calls_from_another_thread_during_a_run_are_refused_saying_why(
    fabric: str,
) -> None:
    # (it spoke of "a thread that runs no command: one that a command started", to an
    # application's own thread)
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for i in range(6):
            processor.add_to_queue(
                w.Returns_one_queued_from_another_thread() if i == 2 else w.Square(i), memo
            )
        processor.run_queue()
        return values(memo)

    delivered = run_master(fabric, body)
    told = delivered.pop(2)
    assert delivered == [0, 1, 9, 16, 25]
    assert told.startswith("MultiError: add_to_queue() was called from one thread of the master")
    assert "while run_queue() runs on another" in told


def test_an_empty_run_queue_is_the_last_run_and_did_nothing(fabric: str) -> None:
    def body(processor: Any) -> tuple[int, int, int]:
        processor.add_to_queue(w.Fail(ValueError("bad")))
        with pytest.raises(ValueError):
            processor.run_queue()
        processor.run_queue()  # nothing queued
        last = processor.last_run
        return len(last.failures), len(last.not_run), last.commands

    assert run_master(fabric, body) == (0, 0, 0)


def test_one_command_queued_twice_with_two_memos_reaches_both(fabric: str) -> None:
    def body(processor: Any) -> tuple[list[Any], list[Any]]:
        command, first, second = w.Square(3), w.Record("first"), w.Record("second")
        processor.add_to_queue(command, first)
        processor.add_to_queue(command, second)
        processor.run_queue()
        assert processor.memo_map == {}
        return values(first), values(second)

    assert run_master(fabric, body) == ([9], [9])


def test_a_refused_send_data_to_slaves_keeps_the_queue(fabric: str) -> None:
    if fabric == "thread":
        pytest.skip("threads share objects: a lock is fine data there")
    options = {"pickle_check": True} if fabric == "uni" else {}

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for i in range(4):
            processor.add_to_queue(w.Square(i), memo)
        with pytest.raises(UnpicklableError, match="lock"):
            processor.send_data_to_slaves("lock", threading.Lock())
        assert len(processor.command_queue) == 4
        processor.run_queue()
        processor.add_to_queue(w.Fetch("lock"))
        with pytest.raises(AttributeError, match="no data named 'lock'"):
            processor.run_queue()
        return values(memo)

    assert run_master(fabric, body, **options) == [0, 1, 4, 9]


def test_when_every_slave_is_lost_the_next_run_starts_new_ones() -> None:
    def body(processor: Any) -> tuple[BaseException, list[Any]]:
        with pytest.raises(SlaveDiedError) as caught:  # every slave dies receiving this
            processor.send_data_to_slaves("poison", w.Poison())
        memo = w.Record()
        for i in range(6):
            processor.add_to_queue(w.Square(i), memo)
        processor.run_queue()
        return caught.value, values(memo)

    error, after = run_master("multiprocessing", body)
    assert "exited with status 3 while unpickling Slave_storage_command (tried 3 times)" in str(
        error
    )
    assert after == [i * i for i in range(6)]


def test_a_command_that_fails_and_its_result_that_raises_are_both_counted(fabric: str) -> None:
    def body(processor: Any) -> tuple[BaseException, list[BaseException]]:
        processor.add_to_queue(w.Square(1))
        processor.add_to_queue(w.Fails_and_its_result_too())
        with pytest.raises(ValueError, match="the command failed") as caught:
            processor.run_queue()
        return caught.value, [record.error for record in processor.last_run.failures]

    raised, failures = run_master(fabric, body)
    assert [type(error) for error in failures] == [ValueError, KeyError]
    assert failures[0] is raised
    assert "1 more failure(s) in this run: KeyError from command 1" in raised.__notes__[0]


def test_an_exception_outside_exception_fails_its_command_alone(fabric: str) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for i in range(20):
            processor.add_to_queue(w.Fail(w.Halt(), index=i) if i == 9 else w.Square(i), memo)
        with pytest.raises(w.Halt):
            processor.run_queue()
        return values(memo)

    delivered = run_master(fabric, body)
    assert delivered == [("before failing", 9) if i == 9 else i * i for i in range(20)]


def test_a_command_raising_keyboard_interrupt_itself_fails_alone_and_costs_no_slave(
    fabric: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """No signal came: it is the command's failure, as any exception is. It was taken for an
    interrupted slave, which was replaced and the command run again, each time; under
    mpiexec, whose ranks cannot be started again, that used up every slave. On ``uni`` the
    command runs in the master, which it interrupts as Ctrl-C would: the run ends there."""

    def body(processor: Any) -> tuple[list[Any], int, BaseException]:
        memo = w.Record()
        for i in range(6):
            processor.add_to_queue(w.Raises(KeyboardInterrupt) if i == 3 else w.Square(i), memo)
        with pytest.raises(KeyboardInterrupt) as caught:
            processor.run_queue()
        lost = sum(slave.lost for slave in processor.last_run.slaves.values())
        processor.add_to_queue(w.Square(7), memo)
        processor.run_queue()
        return values(memo), lost, caught.value

    delivered, lost, error = run_master(fabric, body)
    assert delivered == ([] if fabric == "uni" else [0, 1, 4, 16, 25]) + [49]
    assert lost == 0 and "was ended by" not in capfd.readouterr().err
    assert fabric == "uni" or isinstance(error.__cause__, RemoteTraceback)


def test_a_failure_to_stop_the_slaves_does_not_hide_what_ended_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from multi.multiprocessing_processor import Multiprocessing_transport

    kill = Multiprocessing_transport.kill

    def kill_then_fail(self: Multiprocessing_transport, status: int = 1) -> None:
        kill(self, status)  # (the slaves stop, but the transport fails, as with PVM's daemon gone)
        raise OSError("the daemon is gone")

    monkeypatch.setattr(Multiprocessing_transport, "kill", kill_then_fail)

    def body(processor: Any) -> None:
        processor.add_to_queue(w.Returns_halting_result())
        processor.add_to_queue(w.Sleep(600))  # on the other slave, still running as it ends
        processor.run_queue()

    with pytest.raises(w.Halt) as caught:
        run_master("multiprocessing", body)
    assert "stopping the slaves then failed too: OSError: the daemon is gone" in (
        caught.value.__notes__
    )


def test_an_application_gc_freeze_is_left_as_it_was(fabric: str) -> None:
    def frozen(marker: list[Any]) -> bool:  # frozen objects are in no generation's list
        return not any(candidate is marker for candidate in gc.get_objects())

    def body(processor: Any) -> tuple[bool, bool, bool]:
        marker: list[Any] = []
        gc.freeze()
        try:
            before = frozen(marker)
            for i in range(500):
                processor.add_to_queue(w.Square(i), w.Record())
            processor.run_queue()
            return before, frozen(marker), gc.isenabled()
        finally:
            gc.unfreeze()

    assert run_master(fabric, body) == (True, True, True)


def test_a_run_of_tiny_commands_sets_off_no_young_collection_on_the_master(fabric: str) -> None:
    # Commands live in the queue until they run, results arrive a batch at a time and live
    # until delivered: a collection per 700 new objects would find nothing to free.
    collections: list[int] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    def body(processor: Any) -> tuple[list[int], list[int], tuple[int, ...], tuple[int, ...]]:
        processor.add_to_queue(w.Tiny())
        processor.run_queue()  # the slaves start, to live on
        before = gc.get_threshold()
        memos = [w.Tally() for _ in range(5000)]  # each command its own, as applications do
        gc.collect()  # (what that left for the young generation)
        gc.callbacks.append(counted)
        try:
            for memo in memos:
                processor.add_to_queue(w.Tiny(), memo)
            processor.run_queue()
        finally:
            gc.callbacks.remove(counted)
        return [memo.count for memo in memos], collections, before, gc.get_threshold()

    counts, collected, before, after = run_master(fabric, body)
    assert counts == [1] * 5000
    assert len(collected) <= 1  # the one, at most, that the threshold set back may set off
    assert after == before  # the application's own threshold again once the run is over


def test_the_threshold_is_given_back_when_results_queue_a_long_next_run(fabric: str) -> None:
    # The queue holds the young generation from its 65th command; results that queue as many
    # for the next run, while the queue's hold is on, took it over as nothing (the threshold
    # was already held), and the application's threshold stayed at the batches' for good.
    def body(processor: Any) -> tuple[list[tuple[int, ...]], int]:
        after: list[tuple[int, ...]] = []
        for _ in range(2 * collector.SMALL_RUN):
            processor.add_to_queue(w.Queues_a_follow_up())
        processor.run_queue()
        after.append(gc.get_threshold())
        queued = len(processor.command_queue)
        processor.run_queue()
        after.append(gc.get_threshold())
        return after, queued

    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        after, queued = run_master(fabric, body)
    finally:
        gc.set_threshold(*before)
    assert queued == 2 * collector.SMALL_RUN
    assert after == [(700, 10, 10)] * 2


@pytest.mark.parametrize("threshold", [(5000, 7, 7), (0, 10, 10)])
def test_a_collector_threshold_the_application_sets_during_a_run_is_kept(
    fabric: str, threshold: tuple[int, int, int]
) -> None:
    def body(processor: Any) -> tuple[int, ...]:
        processor.add_to_queue(w.Set_gc_threshold(threshold))
        for _ in range(collector.SMALL_RUN):  # a run that holds the threshold for its batches
            processor.add_to_queue(w.Tiny())
        before = gc.get_threshold()
        try:
            processor.run_queue()
            return gc.get_threshold()
        finally:
            gc.set_threshold(*before)

    assert run_master(fabric, body) == threshold


# Slaves that end ------------------------------------------------------------------------------


def test_a_slave_ended_by_an_interrupt_is_replaced_and_nothing_runs_twice(
    ending: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"

    def body(processor: Any) -> tuple[list[Any], int]:
        memo = w.Record()
        for i in range(300):
            command = w.Interrupt_once(str(tmp_path / "marker"), i) if i == 150 else None
            processor.add_to_queue(command or w.Logged(str(log), i), memo)
        processor.run_queue()
        return values(memo), processor.last_run.retries

    delivered, retries = run_master(ending, body)
    assert delivered == [("survived", 150) if i == 150 else i for i in range(300)]
    assert retries == 1
    ran = [int(line) for line in log.read_text().split()]
    assert sorted(ran) == [i for i in range(300) if i != 150]  # each exactly once


def test_a_sigint_a_command_took_leaves_a_later_keyboard_interrupt_the_commands_own(
    ending: str,
) -> None:
    """What ends a slave is a KeyboardInterrupt that came of a SIGINT, not any one after a
    SIGINT came: the slave took it for its end ever after."""

    def body(processor: Any) -> tuple[list[Any], int]:
        memo = w.Record()
        processor.add_to_queue(w.Catches_its_sigint(), memo)
        processor.add_to_queue(w.Raises(KeyboardInterrupt), memo)
        processor.add_to_queue(w.Square(3), memo)
        with pytest.raises(KeyboardInterrupt):
            processor.run_queue()
        return values(memo), sum(slave.lost for slave in processor.last_run.slaves.values())

    delivered, lost = run_master(ending, body, size=1)  # (one slave: it runs all three)
    assert (delivered, lost) == (["caught", 9], 0)


def test_a_command_that_always_interrupts_its_slave_fails_after_its_retries(
    ending: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> tuple[BaseException, list[Any]]:
        memo = w.Record()
        processor.add_to_queue(w.Square(2), memo)
        processor.add_to_queue(w.Interrupt_once(str(tmp_path / "m"), 1, always=True), memo)
        processor.add_to_queue(w.Square(3), memo)
        with pytest.raises(SlaveDiedError) as caught:
            processor.run_queue()
        return caught.value, values(memo)

    error, delivered = run_master(ending, body, retries=1)
    assert "was ended by KeyboardInterrupt while running Interrupt_once" in str(error)
    assert str(error).count("while running") == 1  # the command is named once
    assert error.attempts == 2
    assert delivered == [4, 9]
    # What it wrote before each interrupt is replayed, an attempt's block each
    assert capfd.readouterr().out.count("interrupted 1\n") == 2


def test_a_slave_that_stops_answering_is_replaced_after_the_liveness_bound(
    replacing_fabric: str, tmp_path: Path
) -> None:

    def body(processor: Any) -> tuple[list[Any], Any]:
        memo = w.Record()
        for i in range(6):
            command = w.Stop_once(str(tmp_path / "stopped"), i) if i == 2 else w.Square(i)
            processor.add_to_queue(command, memo)
        processor.run_queue()
        return values(memo), processor.last_run

    delivered, last_run = run_master(replacing_fabric, body, liveness=1.5)
    assert delivered == [0, 1, ("survived", 2), 9, 16, 25]
    assert last_run.retries == 1 and sum(s.lost for s in last_run.slaves.values()) == 1


def test_a_slave_idle_for_longer_than_the_liveness_bound_is_not_taken_for_hung(
    replacing_fabric: str,
) -> None:

    def body(processor: Any) -> int:
        for _ in range(2):
            processor.add_to_queue(w.Square(2))
            processor.run_queue()
            time.sleep(2.0)  # idle: no heartbeat is due
        for i in range(2):
            processor.add_to_queue(w.Sleep(0.3, i))
        processor.run_queue()
        return sum(slave.lost for slave in processor.totals.slaves.values())

    assert run_master(replacing_fabric, body, liveness=1.5) == 0


def test_a_failed_run_after_large_batches_leaves_no_thread(fabric: str) -> None:
    numpy = pytest.importorskip("numpy")

    def body(processor: Any) -> None:
        for seed in range(3):
            processor.add_to_queue(w.Carries(numpy.random.default_rng(seed).random(2**19)))
        processor.run_queue()
        raise RuntimeError("the application fails")  # the slaves are killed, not stopped

    with pytest.raises(RuntimeError, match="the application fails"):
        run_master(fabric, body)
    # (the leak check of conftest fails the test if a thread of the fabric lives on)


# Bad input ------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("retries", -3, "a whole number >= 0"),
    ("retries", 2.5, "a whole number >= 0"),
    ("retries", "many", "a whole number >= 0"),
    ("progress", "sometimes", "one of auto, yes, no"),
    ("on_failure", "ignore", "one of continue, stop, run-all"),
    ("liveness", 0, r"a number of seconds > 0, or none"),
    ("liveness", "soon", r"a number of seconds > 0, or none"),
]


@pytest.mark.parametrize(("option", "value", "expected"), BAD_OPTIONS)
def test_every_option_is_checked_by_one_rule_whatever_its_source(
    option: str, value: Any, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=f"option '{option}': expected {expected}"):
        load_multiprocessor("uni", None, -1, **{option: value})  # type: ignore[arg-type]
    variable = f"MULTI_UNI_{option.upper()}"
    monkeypatch.setenv(variable, str(value))
    with pytest.raises(ValueError, match=f"{variable}: expected {expected}"):
        load_multiprocessor("uni", None, -1)  # type: ignore[arg-type]


def test_options_given_as_other_types_are_read_from_their_text() -> None:
    processor = load_multiprocessor(
        "uni", None, -1, progress=True, pickle_check=1, retries=0, liveness=None
    )  # type: ignore[arg-type]
    assert processor.settings["progress"] == "yes"
    assert processor.settings["pickle_check"] is True
    assert processor.settings["retries"] == 0
    assert processor.settings["liveness"] is None


def test_the_multiprocessing_fabric_refuses_clearly_where_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(FabricUnavailableError, match="needs a POSIX system"):
        load_multiprocessor("multiprocessing", None, 2)  # type: ignore[arg-type]
    assert isinstance(Multiprocessing_processor.options, tuple)
