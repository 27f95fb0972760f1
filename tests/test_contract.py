"""The contract of DESIGN §2, one test body per rule, run on every fabric."""

from __future__ import annotations

import array
import errno
import logging
import re
import threading
from typing import Any

import pytest

from multi import (
    Capturing_exception,
    CommandTimeoutError,
    Exit_command,
    FabricNotFoundError,
    MultiError,
    ProcessorSizeError,
    RemoteTraceback,
    UnpicklableError,
    fetch_data,
    fetch_data_store,
    load_multiprocessor,
    registry,
)
from tests import workloads as w
from tests.conftest import MISSING, run_master, slaves_for


def values(memo: w.Record) -> list[Any]:
    return [value for _, value in memo.values]


@pytest.fixture
def pickling(fabric: str) -> dict[str, Any]:
    """The options under which a fabric pickles what travels (skip the fabric if it cannot)."""
    if fabric == "thread":
        pytest.skip("threads share objects: nothing is pickled")
    return {"pickle_check": True} if fabric == "uni" else {}


# Rule 1: dynamic scheduling, adaptive batching --------------------------------------------


def test_results_come_back_for_every_command(fabric: str) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for x in range(50):
            processor.add_to_queue(w.Square(x), memo)
        processor.run_queue()
        return values(memo)

    assert run_master(fabric, body) == [x * x for x in range(50)]


def test_a_long_command_does_not_hold_back_the_others(fabric: str) -> None:
    if fabric == "uni":
        pytest.skip("one slave: nothing to balance")

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Sleep(1.0, index=-1), memo)
        for i in range(40):
            processor.add_to_queue(w.Sleep(0.01, index=i), memo)
        processor.run_queue()
        return memo.values

    ran = run_master(fabric, body)
    slow_rank = next(rank for rank, index in ran if index == -1)
    beside_slow = [index for rank, index in ran if rank == slow_rank and index != -1]
    # A static split would give the slow slave half the short commands; dynamic scheduling
    # gives it only what it held when it started the long one.
    assert len(beside_slow) <= 2


def test_as_many_commands_as_slaves_land_one_per_slave(fabric: str) -> None:
    def body(processor: Any) -> list[int]:
        memo = w.Record()
        for i in range(processor.processor_size()):
            processor.add_to_queue(w.Sleep(0.05, index=i), memo)
        processor.run_queue()
        return sorted(rank for rank, _ in memo.values)

    slaves = slaves_for(fabric, 3)
    assert run_master(fabric, body, size=slaves) == list(range(1, max(slaves, 1) + 1))


def test_commands_of_mixed_lengths_all_come_back_in_queue_order(fabric: str) -> None:
    lengths = [0.004 * ((i * 7) % 5) for i in range(150)]  # 0 to 16 ms, interleaved

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for index, seconds in enumerate(lengths):
            processor.add_to_queue(w.Sleep(seconds, index), memo)
        processor.run_queue()
        return values(memo)

    assert run_master(fabric, body) == list(range(len(lengths)))


def test_tiny_commands_travel_in_batches(fabric: str) -> None:
    def body(processor: Any) -> tuple[int, int]:
        for _ in range(3000):
            processor.add_to_queue(w.Noop())
        processor.run_queue()
        stats = processor.last_run
        return sum(s.commands for s in stats.slaves.values()), sum(
            s.batches for s in stats.slaves.values()
        )

    commands, batches = run_master(fabric, body)
    assert commands == 3000
    if fabric != "uni":  # uni runs inline: there is no message to save
        assert batches < 300


def test_every_slave_has_its_statistics_idle_ones_at_zero(fabric: str) -> None:
    def body(processor: Any) -> tuple[Any, ...]:
        processor.add_to_queue(w.Square(3))
        processor.run_queue()
        run = processor.last_run
        one = {rank: slave.commands for rank, slave in run.slaves.items()}
        processor.add_to_queue(w.Square(4))
        processor.run_queue()
        program = {rank: slave.commands for rank, slave in processor.totals.slaves.items()}
        return processor.processor_size(), one, program, run.table()

    size, one, program, table = run_master(fabric, body)
    assert sorted(one) == sorted(program) == list(range(1, size + 1))
    assert sorted(one.values()) == [0] * (size - 1) + [1]
    assert sum(program.values()) == 2
    assert f"on {size} slave{'' if size == 1 else 's'})" in table


def test_the_totals_count_every_run_however_many_and_small_they_are(fabric: str) -> None:
    def body(processor: Any) -> tuple[int, int, int, float]:
        for i in range(150):  # small runs, counted in a lump
            processor.add_to_queue(w.Square(i))
            processor.run_queue()
        seen_midway = processor.totals.commands
        for i in range(100):
            processor.add_to_queue(w.Square(i))
        processor.run_queue()
        processor.add_to_queue(w.Fail(ValueError("bad")))
        with pytest.raises(ValueError):
            processor.run_queue()
        totals = processor.totals
        return seen_midway, totals.commands, totals.failed, totals.seconds

    seen_midway, commands, failed, seconds = run_master(fabric, body)
    assert (seen_midway, commands, failed) == (150, 251, 1)
    assert seconds > 0


# Rule 2: result commands and memos ---------------------------------------------------------


def test_results_run_on_the_master_main_thread_with_their_memo(fabric: str) -> None:
    seen: list[Any] = []

    class Check(w.Record):
        def __init__(self) -> None:
            super().__init__()

    def body(processor: Any) -> None:
        memo = Check()
        processor.add_to_queue(w.Square(3), memo)
        original = w.Value.run

        def spy(self: Any, processor: Any, memo: Any) -> None:
            seen.append((threading.current_thread() is threading.main_thread(), memo))
            original(self, processor, memo)

        w.Value.run = spy  # type: ignore[method-assign]
        try:
            processor.run_queue()
        finally:
            w.Value.run = original  # type: ignore[method-assign]
        assert seen == [(True, memo)]

    run_master(fabric, body)


def test_a_memo_lives_until_its_command_has_finished(fabric: str) -> None:
    def body(processor: Any) -> None:
        memo, shared = w.Record("own"), w.Record("shared")
        processor.add_to_queue(w.Several("a", 4), memo)
        processor.add_to_queue(w.Several("b", 2), shared)
        processor.add_to_queue(w.Several("c", 3), shared)
        processor.run_queue()
        assert values(memo) == [("a", i) for i in range(4)]
        assert values(shared) == [("b", 0), ("b", 1), ("c", 0), ("c", 1), ("c", 2)]
        assert processor.memo_map == {}

    run_master(fabric, body)


def test_a_result_may_name_another_memo(fabric: str) -> None:
    def body(processor: Any) -> None:
        own, other = w.Record("own"), w.Record("other")
        processor.add_to_queue(w.To_memo(other.memo_id()), own)
        processor.add_to_queue(w.Square(1), other)  # keeps the other memo alive
        processor.run_queue()
        assert values(other) == ["redirected", 1]
        assert own.values == []

    run_master(fabric, body)


def test_results_inside_a_batched_result_run_with_their_command_s_memo_or_the_one_they_name(
    fabric: str,
) -> None:
    def body(processor: Any) -> tuple[list[Any], list[Any]]:
        own, other = w.Record("own"), w.Record("other")
        processor.add_to_queue(w.Batched_to_memos(other.memo_id()), own)
        processor.add_to_queue(w.Square(1), other)  # keeps the other memo alive
        processor.run_queue()
        return values(own), values(other)

    assert run_master(fabric, body) == (["mine"], ["theirs", 1])


def test_a_result_reads_on_the_master_the_completed_memo_id_and_rank_it_was_made_with(
    fabric: str,
) -> None:
    def body(processor: Any) -> tuple[int, list[Any], list[Any]]:
        memo = w.Record()
        w.Noted.seen.clear()
        processor.add_to_queue(w.Flags(memo.memo_id()), memo)
        processor.add_to_queue(w.Batched_usual())
        processor.run_queue()
        return memo.memo_id(), memo.values, w.Noted.seen

    memo_id, seen, inside = run_master(fabric, body)
    rank, batched = seen[0][2], inside[0][2]  # (the two commands may run on two slaves)
    assert {rank, batched} <= set(range(1, 17))
    assert seen == [(True, None, rank), (False, None, rank), (True, memo_id, rank)]
    assert inside == [(True, None, batched)]


def test_a_command_reads_on_its_slave_the_id_of_the_memo_it_was_queued_with(fabric: str) -> None:
    def body(processor: Any) -> tuple[list[int], list[list[Any]]]:
        memos = [w.Record(str(i)) for i in range(3)]
        for memo in [*memos, memos[1]]:  # (the second memo for two commands)
            processor.add_to_queue(w.Own_memo_id(), memo)
        stray = w.Own_memo_id()
        stray.memo_id = memos[0].memo_id()  # (queued without a memo: it has none)
        processor.add_to_queue(stray)
        processor.add_to_queue(w.Own_memo_id(more=True), memos[2])
        processor.run_queue()
        unclaimed = [value for _, value in processor.data_store.__dict__.get("unclaimed", [])]
        return [memo.memo_id() for memo in memos], [values(memo) for memo in memos] + [unclaimed]

    ids, seen = run_master(fabric, body)
    assert seen == [[ids[0]], [ids[1], ids[1]], [ids[2], ids[2]], [None]]


def test_what_travels_inside_a_command_or_a_result_keeps_its_memo_id_and_rank(fabric: str) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Nesting(), memo)
        processor.run_queue()
        return memo.values

    (outer, inner), (rank, inner_memo_id) = run_master(fabric, body)
    assert outer == inner == rank and rank in range(1, 17)
    assert inner_memo_id is None  # (never queued)


@pytest.mark.parametrize("each", [0, 1, 2])
def test_commands_that_return_as_many_results_each_deliver_them_to_their_own_memos(
    fabric: str, each: int
) -> None:
    def body(processor: Any) -> list[list[Any]]:
        memos = [w.Record(str(i)) for i in range(6)]
        for i, memo in enumerate(memos):
            processor.add_to_queue(w.Several(str(i), each), memo)
        processor.run_queue()
        assert processor.memo_map == {}
        return [values(memo) for memo in memos]

    assert run_master(fabric, body) == [[(str(i), n) for n in range(each)] for i in range(6)]


@pytest.mark.parametrize("each", [1, 2])
def test_a_result_that_names_a_memo_not_on_the_master_fails_its_command_alone(
    fabric: str, each: int
) -> None:
    def body(processor: Any) -> tuple[str, list[list[Any]]]:
        memos = [w.Record(str(i)) for i in range(5)]
        gone = w.Record("gone").memo_id()  # (never queued: not on the master)
        for i, memo in enumerate(memos):
            command = w.To_memo(gone, each) if i == 2 else w.Several(str(i), each)
            processor.add_to_queue(command, memo)
        with pytest.raises(MultiError) as caught:
            processor.run_queue()
        assert [record.index for record in processor.last_run.failures] == [2] * each
        assert processor.memo_map == {}
        return str(caught.value), [values(memo) for memo in memos]

    message, delivered = run_master(fabric, body)
    assert re.search(r"names memo \d+, which is not on the master", message)
    assert delivered == [[(str(i), n) for n in range(each)] if i != 2 else [] for i in range(5)]


def test_add_to_queue_sets_the_memo_id_of_a_command_without_init() -> None:
    class Bare(w.Square):
        def __init__(self) -> None:  # never calls Slave_command.__init__
            self.x = 5

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        command = Bare()
        processor.add_to_queue(command, memo)
        assert command.memo_id == memo.memo_id()
        processor.run_queue()
        return values(memo)

    assert run_master("uni", body) == [25]


# Rule 3: output capture and replay ---------------------------------------------------------


def talk_output(fabric: str, verbosity: int, size: int | None = None) -> int:
    def body(processor: Any) -> int:
        for i in range(6):
            processor.add_to_queue(w.Talk(i, pause=0.002), w.Record())
        processor.run_queue()
        return processor.processor_size()

    return run_master(fabric, body, size=size, verbosity=verbosity)


def expected_talk(index: int, out: str, err: str) -> tuple[list[str], list[str]]:
    lines = [f"command {index} line {line}" for line in range(3)]
    lines += [f"command {index} in pieces", f"command {index} unfinished"]
    return [out + line for line in lines], [f"{err}command {index} to stderr"]


def test_output_is_replayed_per_command_in_order_with_prefixes(
    fabric: str, capfd: pytest.CaptureFixture[str]
) -> None:
    if fabric == "uni":
        pytest.skip("one slave: lines go bare, as test_unprefixed_output... checks")
    slaves = talk_output(fabric, verbosity=1)
    out, err = capfd.readouterr()
    out_lines = out.splitlines()[: 6 * 5]
    err_lines = err.splitlines()
    expected_out: list[str] = []
    expected_err: list[str] = []
    for block in range(6):
        rank = re.match(r"\s*(\d*)", out_lines[block * 5]).group(1)  # type: ignore[union-attr]
        width = len(str(slaves))
        prefix_out, prefix_err = f"{rank:>{width}}  | ", f"{rank:>{width}} E| "
        block_out, block_err = expected_talk(block, prefix_out, prefix_err)
        expected_out += block_out
        expected_err += block_err
    assert out_lines == expected_out
    assert err_lines == expected_err


def test_unprefixed_output_is_replayed_as_written(
    fabric: str, capfd: pytest.CaptureFixture[str]
) -> None:
    talk_output(fabric, verbosity=0)
    out, err = capfd.readouterr()
    expected = "".join(
        "".join(f"command {i} line {n}\n" for n in range(3))
        + f"command {i} in pieces\ncommand {i} unfinished"
        for i in range(6)
    )
    assert out == expected
    assert err == "".join(f"command {i} to stderr\n" for i in range(6))


def test_the_prefix_is_as_wide_as_the_largest_rank(capfd: pytest.CaptureFixture[str]) -> None:
    talk_output("thread", verbosity=1, size=10)
    out, _ = capfd.readouterr()
    prefixes = {line[:6] for line in out.splitlines() if "command " in line}
    assert prefixes <= {f"{rank:>2}  | " for rank in range(1, 11)}


def test_output_of_a_result_follows_its_command_output(
    fabric: str, capfd: pytest.CaptureFixture[str]
) -> None:
    class Loud(w.Value):
        def run(self, processor: Any, memo: Any) -> None:
            print(f"result of {self.value}")

    class Speaks(w.Slave_command):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

        def run(self, processor: Any, completed: bool) -> None:
            print(f"slave says {self.index}")
            processor.return_object(Loud(processor, self.index))

    def body(processor: Any) -> None:
        for i in range(4):
            processor.add_to_queue(Speaks(i))
        processor.run_queue()

    run_master(fabric, body)  # (classes local to a function travel by value)
    out, _ = capfd.readouterr()
    assert out.splitlines() == [x for i in range(4) for x in (f"slave says {i}", f"result of {i}")]


# Rule 4: exceptions -------------------------------------------------------------------------


def test_an_exception_keeps_its_type_and_the_slave_traceback(fabric: str) -> None:
    def body(processor: Any) -> BaseException:
        processor.add_to_queue(w.Square(1))
        processor.add_to_queue(w.Fail(ValueError("bad value"), index=7))
        with pytest.raises(ValueError, match="bad value") as caught:
            processor.run_queue()
        return caught.value

    error = run_master(fabric, body)
    cause = error.__cause__
    assert isinstance(cause, RemoteTraceback)
    where = r"Traceback of slave \d+ of \d+ \(host .+, pid \d+\)"
    header = where + r", running Fail.* \(command 1 of the run\):"
    assert re.fullmatch(header, str(cause).splitlines()[0])
    assert "raise self.error" in str(cause)
    assert "ValueError: bad value" in str(cause)


def test_nothing_is_lost_before_an_exception_propagates(
    fabric: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> tuple[list[Any], list[Any]]:
        memo = w.Record()
        for i in range(10):
            processor.add_to_queue(w.Square(i), memo)
        processor.add_to_queue(w.Fail(RuntimeError("stop"), index=10), memo)
        for i in range(11, 14):
            processor.add_to_queue(w.Square(i), memo)
        with pytest.raises(RuntimeError, match="stop"):
            processor.run_queue()
        assert not processor.is_queued()
        assert processor.memo_map == {}
        first = values(memo)
        after = w.Record()
        processor.add_to_queue(w.Square(20), after)
        processor.run_queue()
        return first, values(after)

    first, after = run_master(fabric, body)
    assert first == [i * i for i in range(10)] + [("before failing", 10)] + [121, 144, 169]
    assert after == [400]
    assert "failing command 10 speaks" in capfd.readouterr().out


def test_one_failing_command_among_many_loses_nothing(fabric: str) -> None:
    def body(processor: Any) -> tuple[list[Any], Any]:
        memo = w.Record()
        for i in range(300):
            command = w.Fail(ValueError("no data"), index=i) if i == 57 else w.Square(i)
            processor.add_to_queue(command, memo)
        with pytest.raises(ValueError, match="no data") as caught:
            processor.run_queue()
        assert not getattr(caught.value, "__notes__", None)  # the only failure: nothing to add
        return values(memo), processor.last_run

    delivered, last_run = run_master(fabric, body)
    assert delivered == [("before failing", 57) if i == 57 else i * i for i in range(300)]
    assert [(record.index, record.command) for record in last_run.failures] == [(57, "Fail")]
    assert last_run.not_run == []


def test_every_failure_is_counted_and_the_first_raised(fabric: str) -> None:
    def body(processor: Any) -> Any:
        memo = w.Record()
        for i in range(40):
            error = KeyError(i) if i in (30, 35) else ValueError(i) if i == 12 else None
            processor.add_to_queue(w.Fail(error, index=i) if error else w.Square(i), memo)
        with pytest.raises(ValueError) as caught:
            processor.run_queue()
        assert len(memo.values) == 40
        return caught.value, processor.last_run

    error, last_run = run_master(fabric, body)
    assert error.args == (12,)
    assert any(
        "2 more failure(s) in this run: KeyError from command 30, KeyError from command 35" in note
        for note in error.__notes__
    )
    assert [record.index for record in last_run.failures] == [12, 30, 35]


def test_on_failure_stop_says_how_many_commands_were_not_run(fabric: str) -> None:
    def body(processor: Any) -> tuple[list[Any], list[Any], list[Any]]:
        memo = w.Record()
        processor.add_to_queue(w.Fail(RuntimeError("bug"), index=0), memo)
        for i in range(1, 30):
            processor.add_to_queue(w.Sleep(0.1, index=i), memo)
        with pytest.raises(RuntimeError, match="bug") as caught:
            processor.run_queue()
        notes = " ".join(caught.value.__notes__)
        not_run = processor.last_run.not_run
        assert f"{len(not_run)} command(s) were not run" in notes
        assert "on_failure='stop'" in notes
        first = values(memo)
        for command, memo_of_it in not_run:  # they can be queued again as they were
            processor.add_to_queue(command, memo_of_it)
        processor.run_queue()
        return first, [command.index for command, _ in not_run], values(memo)

    first, not_run, after = run_master(fabric, body, on_failure="stop")
    assert first[0] == ("before failing", 0)
    assert first[1:] == list(range(1, len(first)))  # what was running finished ...
    assert not_run == list(range(len(first), 30)) and not_run  # ... and nothing after it
    assert after == first + not_run


#: The fabrics that can stop one command without stopping the master (option ``timeout``).
STOPS_COMMANDS = ("multiprocessing", "mpi4py", "pvm")


def test_a_command_past_the_timeout_fails_and_nothing_else_is_lost(fabric: str) -> None:
    if fabric not in STOPS_COMMANDS:
        pytest.skip("its slaves are not processes that can be stopped alone")

    def body(processor: Any) -> tuple[BaseException, list[Any], list[Any]]:
        memo = w.Record()
        for i in range(10):
            processor.add_to_queue(w.Sleep(600 if i == 3 else 0.05, index=i), memo)
        with pytest.raises(CommandTimeoutError) as caught:
            processor.run_queue()
        after = w.Record()
        processor.add_to_queue(w.Square(7), after)
        processor.run_queue()
        return caught.value, values(memo), values(after)

    error, delivered, after = run_master(fabric, body, timeout=1.5)
    assert re.search(
        r"Sleep ran on slave \d \(.*pid \d+\) for more than the timeout of 1.5 s", str(error)
    )
    assert delivered == [i for i in range(10) if i != 3]
    assert after == [49]


def test_a_timeout_is_refused_where_a_command_cannot_be_stopped(fabric: str) -> None:
    if fabric in STOPS_COMMANDS:
        pytest.skip("it can stop a command")
    with pytest.raises(ValueError, match="cannot stop a command that runs too long"):
        load_multiprocessor(fabric, None, processor_size=slaves_for(fabric), timeout=5)  # type: ignore[arg-type]


def test_a_command_or_a_result_that_does_not_unpickle_fails_its_command_alone(
    fabric: str, pickling: dict[str, Any]
) -> None:
    def body(processor: Any) -> tuple[list[Any], list[int], list[str]]:
        memo = w.Record()
        processor.add_to_queue(w.Square(2), memo)
        processor.add_to_queue(w.Carries(w.Unrebuildable()), memo)  # fails on the slave
        processor.add_to_queue(w.Square(3), memo)
        processor.add_to_queue(w.Returns_unrebuildable(), memo)  # fails on the master
        processor.add_to_queue(w.Square(4), memo)
        with pytest.raises(UnpicklableError):
            processor.run_queue()
        failures = processor.last_run.failures
        return values(memo), [f.index for f in failures], [str(f.error) for f in failures]

    delivered, failed, errors = run_master(fabric, body, **pickling)
    assert delivered == [4, 9, 16]
    assert failed == [1, 3]
    assert "could not rebuild the commands it received" in errors[0]
    assert "does not unpickle on the master" in errors[1]
    assert all("this object cannot be rebuilt" in error for error in errors)


def test_a_result_that_does_not_unpickle_on_the_master_keeps_its_command_output(
    fabric: str, pickling: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> tuple[list[Any], BaseException]:
        memo = w.Record()
        for i in range(40):
            processor.add_to_queue(w.Speaks(i, unrebuildable=i == 23), memo)
        with pytest.raises(UnpicklableError) as caught:
            processor.run_queue()
        return values(memo), caught.value

    delivered, error = run_master(fabric, body, **pickling)
    out = capfd.readouterr().out
    assert delivered == [i for i in range(40) if i != 23]
    spoken = sorted(int(i) for i in re.findall(r"command (\d+) speaks", out))
    assert spoken == list(range(40))  # (once each: a batch run again alone says it again)
    assert "does not unpickle on the master" in str(error)
    assert "the command: Speaks (command 23 of the run)" in getattr(error, "__notes__", [])


def test_a_command_may_start_processes_of_its_own(fabric: str) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Uses_a_pool(), memo)
        processor.run_queue()
        return values(memo)

    assert run_master(fabric, body) == [[1, 2, 3]]


def test_an_exception_whose_init_takes_other_arguments_arrives_as_itself(fabric: str) -> None:
    def body(processor: Any) -> BaseException:
        processor.add_to_queue(w.Raises(w.Fit_error, 7, "no minimum"))
        with pytest.raises(w.Fit_error) as caught:
            processor.run_queue()
        return caught.value

    error = run_master(fabric, body)
    assert (str(error), error.residue, error.reason) == ("residue 7: no minimum", 7, "no minimum")
    assert isinstance(error.__cause__, RemoteTraceback)


def test_an_exception_whose_init_takes_other_arguments_keeps_its_slots_and_oserror_fields(
    fabric: str, pickling: dict[str, Any]
) -> None:
    def body(processor: Any) -> tuple[BaseException, BaseException]:
        processor.add_to_queue(w.Raises(w.Slotted_fit_error, 7, "no minimum"))
        with pytest.raises(w.Slotted_fit_error) as slotted:
            processor.run_queue()
        processor.add_to_queue(w.Raises(w.Copy_error, "r1.txt", "/full/r1.txt"))
        with pytest.raises(w.Copy_error) as copy:
            processor.run_queue()
        return slotted.value, copy.value

    slotted, copy = run_master(fabric, body, **pickling)
    assert (slotted.residue, slotted.reason, slotted.tries()) == (7, "no minimum", 3)
    assert str(slotted) == "residue 7: no minimum"
    assert (copy.errno, copy.strerror) == (errno.ENOSPC, "no space left to copy")
    assert (copy.filename, copy.filename2) == ("r1.txt", "/full/r1.txt")
    assert str(copy) == (
        f"[Errno {errno.ENOSPC}] no space left to copy: 'r1.txt' -> '/full/r1.txt'"
    )


def test_an_exception_with_a_field_it_cannot_set_back_still_arrives_as_itself(
    fabric: str, pickling: dict[str, Any]
) -> None:
    # It arrived as a Capturing_exception: setting the field back failed the whole rebuild.
    def body(processor: Any) -> BaseException:
        processor.add_to_queue(w.Raises(w.Shown_slot_error, 7, "no minimum"))
        with pytest.raises(w.Shown_slot_error) as caught:
            processor.run_queue()
        return caught.value

    error = run_master(fabric, body, **pickling)
    assert (str(error), error.residue) == ("residue 7: no minimum", 7)


def test_an_exception_that_cannot_travel_arrives_as_text(
    fabric: str, pickling: dict[str, Any]
) -> None:
    def body(processor: Any) -> BaseException:
        processor.add_to_queue(w.Raises(w.Unpicklable_error, "it holds a lock"))
        with pytest.raises(Capturing_exception) as caught:
            processor.run_queue()
        return caught.value

    error = run_master(fabric, body, **pickling)
    assert error.exception_name == "Unpicklable_error"
    assert "it holds a lock" in str(error)
    assert "could not travel to the master" in str(error)
    assert f"(on slave {error.rank} of " in str(error)  # (once: it read "slave 1, slave 1 of")
    assert isinstance(error.__cause__, RemoteTraceback)


def test_a_record_a_command_logs_names_its_slave_and_command(
    fabric: str, caplog: pytest.LogCaptureFixture
) -> None:
    def body(processor: Any) -> None:
        for i in (0, 2):
            processor.add_to_queue(w.Logs(i))
        processor.run_queue()

    with caplog.at_level(logging.INFO):
        run_master(fabric, body)
    records = [r for r in caplog.records if r.name == "tests.science"]
    assert sorted(r.command for r in records) == ["Logs 0", "Logs 1"]  # (numbered in the run)
    assert all(r.slave >= 1 for r in records)


def test_a_slave_logs_the_levels_the_master_sets_meanwhile_and_no_more(fabric: str) -> None:
    levels = (logging.DEBUG, logging.INFO, logging.WARNING)
    science, other = "tests.science.fit", "tests.other"

    def wanted(processor: Any) -> list[list[bool]]:
        memo = w.Record()
        for name in (science, other):
            processor.add_to_queue(w.Logs_wanted(name, levels), memo)
        processor.run_queue()
        return [value for _, value in memo.values]

    def body(processor: Any) -> list[list[list[bool]]]:
        seen = [wanted(processor)]  # (the slaves run, the master as it started)
        logging.getLogger("tests.science").setLevel(logging.DEBUG)  # (a parent of science)
        try:
            seen.append(wanted(processor))
        finally:
            logging.getLogger("tests.science").setLevel(logging.NOTSET)
        seen.append(wanted(processor))
        return seen

    root = logging.getLogger()
    was = root.level
    root.setLevel(logging.WARNING)
    try:
        seen = run_master(fabric, body)
    finally:
        root.setLevel(was)
    only_warnings = [False, False, True]
    assert seen == [
        [only_warnings, only_warnings],
        [[True, True, True], only_warnings],
        [only_warnings, only_warnings],
    ]


@pytest.mark.parametrize("call", ["return_object", "exit"])
def test_a_result_or_exit_from_a_thread_a_command_started_is_refused(
    fabric: str, call: str
) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Returns_from_a_thread(call), memo)
        with pytest.raises(MultiError, match=rf"{call}\(\) was called from a thread"):
            processor.run_queue()
        processor.add_to_queue(w.Square(3), memo)
        processor.run_queue()
        return values(memo)

    assert run_master(fabric, body) == [9]  # nothing ran where it should not have


def test_a_thread_with_a_command_s_context_that_outlives_it_runs_as_no_command(
    fabric: str,
) -> None:
    # (its result went to the memo of the command that ran next on its slave)
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Leaves_a_thread_with_its_context(), memo)
        processor.run_queue()
        processor.add_to_queue(w.Ends_it(), memo)
        processor.run_queue()
        return values(memo)

    assert run_master(fabric, body, size=slaves_for(fabric, 1)) == ["MultiError"]


@pytest.mark.parametrize("how", ["sys.exit", "exit", "abort"])
def test_a_command_ending_the_program_on_a_slave_is_an_error(fabric: str, how: str) -> None:
    def body(processor: Any) -> list[Any]:
        ends = w.Fail(SystemExit(4)) if how == "sys.exit" else w.Ends_program(how)
        processor.add_to_queue(ends)
        status = "1" if how == "abort" else "4"
        with pytest.raises(MultiError, match=rf"sys.exit\({status}\)"):
            processor.run_queue()
        memo = w.Record()
        processor.add_to_queue(w.Square(3), memo)  # the slaves are still there
        processor.run_queue()
        return values(memo)

    assert run_master(fabric, body) == [9]


# Rule 7: shutdown (the exit status paths are in test_lifecycle.py) ---------------------------


def test_run_returns_with_every_slave_stopped(fabric: str) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Square(2))
        processor.run_queue()

    run_master(fabric, body)
    assert not [t for t in threading.enumerate() if t.name.startswith("multi-slave")]


# Rule 8: bad input --------------------------------------------------------------------------


def test_an_unknown_fabric_names_the_fabrics_there_are() -> None:
    with pytest.raises(FabricNotFoundError) as caught:
        load_multiprocessor("nonesuch", None, processor_size=2)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "'nonesuch'" in message
    assert "uni" in message and "thread" in message
    assert "multi.processors" in message and "package.module:Class" in message


@pytest.mark.parametrize("size", [0, -2, 2.5, "4", True])
def test_a_size_the_fabric_cannot_give_is_refused(fabric: str, size: Any) -> None:
    with pytest.raises(ProcessorSizeError, match="processor_size"):
        load_multiprocessor(fabric, None, processor_size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("local_fabric", ["thread", "multiprocessing", "mpi4py"])
def test_more_slaves_than_the_machine_can_start_are_refused_before_any_starts(
    local_fabric: str,
) -> None:
    # (which limit it names depends on the machine: 10**7 passes every one of Linux's; a
    # master of mpi4py started alone spawns its slaves on this machine)
    if local_fabric in MISSING:
        pytest.skip(f"{local_fabric} is not available: {MISSING[local_fabric]}")
    threads = threading.active_count()
    refused = r"cannot start 10000000 slave .*can start at most"
    with pytest.raises(ProcessorSizeError, match=refused):
        load_multiprocessor(local_fabric, None, processor_size=10_000_000)
    if local_fabric == "mpi4py":  # the program run again under mpiexec: checked before
        relaunched = registry.load(local_fabric)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(relaunched, "_relaunch", lambda self, slaves: pytest.fail("relaunched"))
            with pytest.raises(ProcessorSizeError, match=refused):
                load_multiprocessor(local_fabric, None, processor_size=10**7, launch="mpiexec")
    assert threading.active_count() == threads


def test_exit_command_is_refused_as_it_would_end_a_slave(fabric: str) -> None:
    def body(processor: Any) -> None:
        for run in (processor.add_to_queue, processor.run_command_globally):
            with pytest.raises(TypeError, match=r"processor.exit\(\)"):
                run(Exit_command())
        processor.add_to_queue(w.Square(3))
        processor.run_queue()

    run_master(fabric, body)


def test_run_called_from_the_application_it_runs_is_refused(fabric: str) -> None:
    """It ran the application again, inside itself: with no end, a RecursionError."""
    entered: list[int] = []

    def body(processor: Any) -> None:
        entered.append(1)
        with pytest.raises(MultiError, match=r"call processor.run\(\) once, from the program"):
            processor.run()
        processor.add_to_queue(w.Square(3))
        processor.run_queue()

    run_master(fabric, body)
    assert entered == [1]


def test_a_command_without_run_is_refused_and_the_queue_kept(fabric: str) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Square(2))
        with pytest.raises(TypeError, match=r"No_run.*run\(self, processor, completed\)"):
            processor.add_to_queue(w.No_run())
        assert len(processor.command_queue) == 1

    run_master(fabric, body)


def test_a_memo_that_is_not_a_memo_is_refused_and_the_queue_kept(fabric: str) -> None:
    def body(processor: Any) -> None:
        memo = w.Record()
        processor.add_to_queue(w.Square(2), memo)
        with pytest.raises(TypeError, match=r"a memo must be a multi.Memo, not a list"):
            processor.add_to_queue(w.Square(3), [])
        processor.run_queue()
        assert values(memo) == [4]

    run_master(fabric, body)


def test_a_result_command_that_raises_on_the_master_loses_nothing(fabric: str) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Square(1), memo)
        processor.add_to_queue(w.Returns_raising_result(), memo)
        processor.add_to_queue(w.Square(3), memo)
        with pytest.raises(KeyError, match="raised on the master") as caught:
            processor.run_queue()
        notes = getattr(caught.value, "__notes__", [])
        assert any("Raising_result" in note and "on the master" in note for note in notes)
        return values(memo)

    assert run_master(fabric, body) == [1, 9]


def test_a_result_that_does_not_pickle_is_named(fabric: str, pickling: dict[str, Any]) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Returns_lock())
        with pytest.raises(UnpicklableError, match=r"Value.*attribute value \(a lock\)"):
            processor.run_queue()

    run_master(fabric, body, **pickling)


def test_a_command_that_does_not_pickle_is_named_and_nothing_lost(
    fabric: str, pickling: dict[str, Any]
) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Square(2), memo)
        processor.add_to_queue(w.Carries({"lock": threading.Lock()}), memo)
        processor.add_to_queue(w.Square(3), memo)
        pattern = r"Carries \(command 1 of the run\).*attribute payload\['lock'\] \(a lock\)"
        with pytest.raises(UnpicklableError, match=pattern):
            processor.run_queue()
        return values(memo)

    assert run_master(fabric, body, **pickling) == [4, 9]


def test_memoryviews_arrive_as_memoryviews_of_their_format_and_shape(fabric: str) -> None:
    numpy = pytest.importorskip("numpy")
    grid = numpy.arange(12.0).reshape(3, 4)
    views = [memoryview(array.array("i", [1, 2, 3])), memoryview(grid), memoryview(grid[:, ::2])]

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Carries(views), memo)
        processor.run_queue()
        return values(memo)

    [copies] = run_master(fabric, body)
    assert [type(copy) for copy in copies] == [memoryview] * 3
    assert [(copy.format, copy.shape, copy.tolist()) for copy in copies] == [
        (view.format, view.shape, view.tolist()) for view in views
    ]


# Rule 9: uni's pickle round trip ------------------------------------------------------------


def test_uni_checks_pickling_when_the_environment_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTI_UNI_PICKLE_CHECK", "1")

    def body(processor: Any) -> None:
        payload = [1, 2]
        memo = w.Record()
        processor.add_to_queue(w.Carries(payload), memo)
        processor.run_queue()
        assert values(memo) == [payload] and values(memo)[0] is not payload
        processor.add_to_queue(w.Carries(threading.Lock()))
        with pytest.raises(UnpicklableError):
            processor.run_queue()

    run_master("uni", body)


def test_uni_without_the_check_shares_objects() -> None:
    def body(processor: Any) -> None:
        payload = [1, 2]
        memo = w.Record()
        processor.add_to_queue(w.Carries(payload), memo)
        processor.run_queue()
        assert values(memo)[0] is payload

    run_master("uni", body)


# The data store and global commands ----------------------------------------------------------


def assert_every_slave_reads(processor: Any, name: str, value: Any) -> None:
    """Commands, four per slave, that fetch ``name`` all read ``value``."""
    memo = w.Record()
    for _ in range(4 * processor.processor_size()):
        processor.add_to_queue(w.Fetch(name), memo)
    processor.run_queue()
    assert values(memo) == [value] * 4 * processor.processor_size()


def test_data_reaches_every_slave_once_whatever_is_queued(fabric: str) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Square(4))
        processor.send_data_to_slaves("vector", [1.0, 2.0])
        assert len(processor.command_queue) == 1
        processor.run_queue()
        assert_every_slave_reads(processor, "vector", [1.0, 2.0])

    run_master(fabric, body)


def test_data_under_a_name_of_the_store_itself_is_refused_before_it_is_sent(fabric: str) -> None:
    # '__dict__' wiped every slave's store, and '__class__' failed on every slave.
    def body(processor: Any) -> None:
        processor.send_data_to_slaves("vector", [1.0, 2.0])
        processor.add_to_queue(w.Square(3))
        for name in ("__dict__", "__class__", "__getattr__", "not a name", "", None):
            with pytest.raises(ValueError, match=r"a Python identifier that does not start wi"):
                processor.send_data_to_slaves(name, {})
        assert len(processor.command_queue) == 1
        assert [setup.names for setup in processor.setup_commands()] == [["vector"]]
        assert_every_slave_reads(processor, "vector", [1.0, 2.0])

    run_master(fabric, body)


def test_a_global_command_runs_exactly_once_on_every_slave(fabric: str) -> None:
    def body(processor: Any) -> list[Any]:
        processor.add_to_queue(w.Square(1))
        processor.run_command_globally(w.Whoami())
        return sorted(processor.data_store.unclaimed)

    ranks = run_master(fabric, body)
    slaves = slaves_for(fabric)
    expected = [1] if slaves == -1 else list(range(1, slaves + 1))
    assert ranks == [(rank, (rank, 1)) for rank in expected]


def test_missing_data_says_how_to_send_it(fabric: str) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Fetch("absent"))
        with pytest.raises(AttributeError, match=r"send_data_to_slaves\('absent', value\)"):
            processor.run_queue()

    run_master(fabric, body)


def test_data_missing_on_the_master_says_where_data_sent_to_the_slaves_is(fabric: str) -> None:
    # It said "send it first with send_data_to_slaves", which had been done.
    if fabric == "uni":
        pytest.skip("uni's only slave runs in the master, with the master's store")

    def body(processor: Any) -> None:
        processor.send_data_to_slaves("vector", [1.0, 2.0])
        for fetch in (processor.fetch_data, fetch_data):
            with pytest.raises(AttributeError) as caught:
                fetch("vector")
            assert str(caught.value) == (
                "no data named 'vector' is in the master's data store: send_data_to_slaves() "
                "stores data in the slaves' stores, for commands to read with fetch_data(); the "
                "master reads in its own store only what it put there itself "
                "(fetch_data_store().vector = value)"
            )
        fetch_data_store().vector = [3.0]  # as the message says
        memo = w.Record()
        processor.add_to_queue(w.Fetch("vector"), memo)
        processor.run_queue()
        assert (processor.fetch_data("vector"), values(memo)) == ([3.0], [[1.0, 2.0]])

    run_master(fabric, body)


# The queue -------------------------------------------------------------------------------------


def test_an_empty_queue_runs_at_once(fabric: str) -> None:
    def body(processor: Any) -> None:
        assert not processor.is_queued()
        processor.run_queue()
        processor.add_to_queue(w.Square(2))
        assert processor.is_queued()

    run_master(fabric, body)


def test_master_only_calls_are_refused_on_a_slave(fabric: str) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Queues_more())
        with pytest.raises(MultiError, match="only be called on the master"):
            processor.run_queue()

    run_master(fabric, body)


# Progress and statistics -------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "drawn"), [("yes", True), ("no", False), ("auto", False)])
def test_the_progress_bar_follows_its_option(
    fabric: str,
    setting: str,
    drawn: bool,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr("multi.progress.DELAY_SECONDS", 0.0)

    def body(processor: Any) -> None:
        for i in range(5):
            processor.add_to_queue(w.Talk(i, lines=1))
        processor.run_queue()

    run_master(fabric, body, progress=setting)
    out, err = capfd.readouterr()
    assert ("5/5" in err) is drawn  # "auto" draws only on a terminal, which this is not
    assert "command 4 to stderr" in err and out.count("command 4") == 3


def test_a_run_over_before_the_bar_is_due_makes_no_bar(
    fabric: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tqdm = pytest.importorskip("tqdm")
    made: list[int] = []

    class Counted(tqdm.tqdm):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs.get("initial", 0))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm, "tqdm", Counted)
    monkeypatch.setattr("multi.progress.DELAY_SECONDS", 3600.0)

    def body(processor: Any) -> None:
        for i in range(5):
            processor.add_to_queue(w.Square(i))
        processor.run_queue()
        processor.add_to_queue(w.Square(5))
        processor.run_queue()

    run_master(fabric, body, progress="yes")
    assert made == []


def test_verbosity_two_prints_each_run_statistics(
    fabric: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> None:
        for i in range(7):
            processor.add_to_queue(w.Square(i))
        processor.run_queue()

    run_master(fabric, body, verbosity=2)
    err = capfd.readouterr().err
    assert re.search(r"run_queue: 7 commands in \d+ batches on \d+ slaves", err)
