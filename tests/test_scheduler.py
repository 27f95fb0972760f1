"""The scheduler alone, on a scripted fake transport in virtual time: every rule of dispatch,
batching, failure, loss, replacement and timeout, deterministic and fast.

The fake transport also checks, whenever the scheduler waits, that a slave holding nothing
means nothing waits to be sent, and that long commands never wait behind each other on one
slave while another holds nothing (``Fake_transport.check_breadth_first``).
"""

from __future__ import annotations

import math
from collections import deque

import pytest

from multi.batching import MAX_BATCH_BYTES, UNSIZED, Batch_sizer
from multi.errors import BrokenProcessorError, CommandTimeoutError, SlaveDiedError
from multi.run import Run
from multi.scheduler import EARLY_STOP_FAILURES, START_FAILURES
from tests.fake_transport import Script
from tests.scheduler_harness import Outcome, simulate

ROUND_TRIP = 1e-3


def efficiency(seconds: float, count: int, slaves: int, length: float) -> float:
    """The ideal wall time ceil(N/P) x L over the one measured."""
    return math.ceil(count / slaves) * length / seconds


# Dispatch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("slaves", [2, 16, 64])
def test_as_many_long_commands_as_slaves_land_one_per_slave(slaves: int) -> None:
    outcome = simulate(Script([0.5] * slaves), slaves)
    batches = outcome.transport.sent
    assert sorted(rank for _, rank, _ in batches) == list(range(1, slaves + 1))
    assert all(len(ids) == 1 for _, _, ids in batches)
    assert efficiency(outcome.seconds, slaves, slaves, 0.5) >= 0.99


@pytest.mark.parametrize(("count", "slaves"), [(3, 2), (17, 16), (65, 64), (200, 7)])
def test_equal_long_commands_reach_the_ideal_wall_time(count: int, slaves: int) -> None:
    outcome = simulate(Script([0.2] * count), slaves)
    assert outcome.delivered == list(range(count))
    assert efficiency(outcome.seconds, count, slaves, 0.2) >= 0.98


def test_a_slave_gets_a_second_batch_only_once_every_slave_has_one() -> None:
    outcome = simulate(Script([1e-5] * 5000), 4)
    first_four = [rank for _, rank, _ in outcome.transport.sent[:4]]
    assert sorted(first_four) == [1, 2, 3, 4]


@pytest.mark.parametrize("slaves", [2, 4])
def test_every_slave_gets_a_sized_batch_before_any_gets_a_second(slaves: int) -> None:
    outcome = simulate(Script([1e-5] * 5000), slaves, answered=True)
    ranks = [rank for _, rank, _ in outcome.transport.sent]
    everyone = list(range(1, slaves + 1))
    assert sorted(ranks[:slaves]) == sorted(ranks[slaves : 2 * slaves]) == everyone


def test_tiny_commands_travel_in_growing_batches_with_a_second_one_in_flight() -> None:
    outcome = simulate(Script([1e-5] * 20000), 2)
    sizes = [len(ids) for _, _, ids in outcome.transport.sent]
    assert sizes[:2] == [1, 1]  # nothing is known of the commands yet
    assert max(sizes) >= 500
    assert len(sizes) < 200
    # Some batch left while its slave still held one: the round trip was hidden.
    held = outcome.run.statistics.slaves
    assert sum(slave.batches for slave in held.values()) == len(sizes)
    assert outcome.seconds < 20000 * 1e-5 / 2 * 1.5


def test_the_last_batches_of_tiny_commands_hold_no_fewer_than_run_in_a_round_trip() -> None:
    script = Script([1e-5] * 20000)
    outcome = simulate(script, 2)
    floor = round(script.round_trip / 1e-5)
    sizes = [len(ids) for _, _, ids in outcome.transport.sent]
    assert sizes[:2] == [1, 1]  # nothing is known of the commands yet
    # (the last batch takes what is left, which may be fewer)
    assert all(size >= floor for size in sizes[2:-1]), sizes
    assert outcome.delivered == list(range(20000))


def test_the_last_commands_spread_over_every_slave() -> None:
    outcome = simulate(Script([1e-3] * 400), 8)
    tail = outcome.transport.sent[-8:]
    assert all(len(ids) <= 400 // (2 * 8) for _, _, ids in tail)
    assert efficiency(outcome.seconds, 400, 8, 1e-3) >= 0.8


def test_long_commands_never_get_a_second_batch() -> None:
    outcome = simulate(Script([0.3] * 40), 4)
    sent = outcome.transport.sent
    assert all(len(ids) == 1 for _, _, ids in sent)
    # (the fake transport fails the run if a slave ever held two of them while one was idle)
    assert efficiency(outcome.seconds, 40, 4, 0.3) >= 0.99


def test_unequal_lengths_stay_within_ten_percent_of_the_longest_first_bound() -> None:
    lengths = [0.05 * ((i * 37) % 11 + 1) for i in range(60)]
    outcome = simulate(Script(lengths), 4)
    loads = [0.0] * 4
    for length in sorted(lengths, reverse=True):  # longest processing time first
        loads[loads.index(min(loads))] += length
    assert outcome.seconds <= 1.1 * max(loads)


def test_batch_size_is_learnt_from_this_run_alone() -> None:
    tiny = simulate(Script([1e-5] * 5000), 2)
    assert max(len(ids) for _, _, ids in tiny.transport.sent) > 100
    # Whatever ran before, the first long ones go one per slave: each run starts from
    # nothing known, and its estimates go with it.
    long = simulate(Script([0.5] * 4), 4)
    assert [len(ids) for _, _, ids in long.transport.sent] == [1, 1, 1, 1]
    assert not any(name.startswith("_sizer") for name in vars(long.scheduler))


def test_runs_of_one_command_share_a_sizer_that_learns_nothing() -> None:
    for lengths, deaths in (([1e-5], {}), ([0.5], {0: 1}), ([1e-5], {})):  # (one runs again)
        outcome = simulate(Script(lengths, deaths=deaths), 2, payloads=[b"x" * 1000])
        assert outcome.delivered == [0]
    assert (UNSIZED.seconds, UNSIZED.bytes, UNSIZED.round_trip) == (None, None, None)


def test_batches_stay_under_the_byte_bound_unless_one_command_is_larger() -> None:
    def distinct(count: int, size: int) -> list[bytes]:  # (pickle sends a repeated object once)
        return [bytes([i % 256]) * size for i in range(count)]

    payloads = distinct(30, 300 << 10) + distinct(3, 3 << 20) + distinct(30, 100)
    outcome = simulate(Script([1e-5] * len(payloads)), 2, payloads=payloads)
    for _, _, ids in outcome.transport.sent:
        size = sum(len(payloads[i]) for i in ids)
        assert size <= MAX_BATCH_BYTES or len(ids) == 1, (ids, size)
    assert outcome.delivered == list(range(len(payloads)))


def test_a_command_larger_than_a_message_fails_alone_and_the_others_go() -> None:
    # (PVM's bound of 2 GiB: the run ended there, its other commands not run)
    payloads = [bytes([i]) * 300 for i in range(12)]
    payloads[5] = b"x" * 5000
    outcome = simulate(Script([1e-5] * 12), 2, payloads=payloads, largest_message=2000)
    assert outcome.delivered == list(range(12))
    assert [index for index, _ in outcome.run.failures] == [5]
    assert "(command 5 of the run) pickles to" in str(outcome.raised)
    assert "more than one message of this fabric takes (2,000 bytes)" in str(outcome.raised)
    assert all(5 not in ids for _, _, ids in outcome.transport.sent)


def test_commands_pinned_to_slaves_run_once_on_each() -> None:
    outcome = simulate(Script([0.01] * 3), 3, pinned=True)
    assert sorted((rank, ids) for _, rank, ids in outcome.transport.sent) == [
        (1, [0]),
        (2, [1]),
        (3, [2]),
    ]


def test_a_slave_whose_pinned_commands_were_all_taken_holds_no_queue_of_them() -> None:
    # (dispatch then sees that nothing is left to send, as in a run of fresh commands)
    run = Run([None] * 3, [None] * 3, (1, 2), Batch_sizer(2, True, False), pinned=[1, 2, 1])
    assert list(run.take(1, 1)) == [0]
    assert list(run.take(2, 1)) == [1]
    assert run.pinned == {1: deque([2])}
    assert list(run.take(1, 1)) == [2]
    assert run.pinned == {}
    run.again([1])  # (its slave died: it goes back to that slave)
    assert run.pinned == {2: deque([1])}


def test_a_pinned_command_whose_slave_died_runs_again_on_that_slave() -> None:
    outcome = simulate(Script([0.01] * 3, deaths={1: 1}), 3, pinned=True)
    assert outcome.raised is None
    assert [rank for _, rank, ids in outcome.transport.sent if ids == [1]] == [2, 2]
    assert sorted(outcome.results) == [0, 1, 2]


def test_a_pinned_command_fails_with_its_slave_if_that_slave_is_given_up() -> None:
    outcome = simulate(Script([0.01] * 3, deaths={1: 1}), 3, pinned=True, replaceable=False)
    assert isinstance(outcome.raised, SlaveDiedError)
    assert [index for index, _ in outcome.run.failures] == [1]
    assert [rank for _, rank, ids in outcome.transport.sent if ids == [1]] == [2]


# Failures -------------------------------------------------------------------------------------


def test_one_failure_loses_nothing_and_is_raised_at_the_end() -> None:
    outcome = simulate(Script([0.02] * 30, fails={7}), 2)
    assert outcome.delivered == list(range(30))
    assert [i for i, results in outcome.results.items() if results] == [
        i for i in range(30) if i != 7
    ]
    assert isinstance(outcome.raised, ValueError) and "command 7" in str(outcome.raised)
    assert outcome.run.unrun == []


def test_the_first_failure_in_queue_order_is_raised_and_the_others_counted() -> None:
    outcome = simulate(Script([0.01] * 50, fails={30, 4, 12}), 3)
    assert outcome.delivered == list(range(50))
    assert "command 4" in str(outcome.raised)
    assert (
        "2 more failure(s) in this run: ValueError from command 12, ValueError from command 30"
        in outcome.notes()
    )
    assert [index for index, _ in outcome.run.failures] == [4, 12, 30]


def test_on_failure_stop_runs_no_command_after_the_first_failure() -> None:
    outcome = simulate(Script([0.1] * 20, fails={0}), 2, on_failure="stop")
    assert isinstance(outcome.raised, ValueError)
    started = {i for _, _, ids in outcome.transport.sent for i in ids}
    assert started == {0, 1}  # what was running when it failed finishes
    assert outcome.run.unrun == list(range(2, 20))
    assert "18 command(s) were not run" in outcome.notes()
    assert "on_failure='stop'" in outcome.notes()


def test_a_run_whose_first_commands_all_fail_stops_early() -> None:
    count = 1000
    outcome = simulate(Script([0.01] * count, fails=set(range(count))), 2)
    ran = len(outcome.delivered)
    assert len(outcome.run.unrun) == count - ran
    assert EARLY_STOP_FAILURES <= ran < EARLY_STOP_FAILURES + 4
    assert "first" in outcome.notes() and "a bug rather than bad data" in outcome.notes()


def test_a_run_stops_early_when_its_first_failures_share_a_batch_with_successes() -> None:
    # Tiny commands travel in large batches: the first twelve fail, eleven of them in the
    # second batch, whose other commands succeed. A batch's commands finish in its order.
    # (One slave: with two, the other's batch of successes may finish first.)
    count = 3000
    outcome = simulate(Script([1e-5] * count, fails=set(range(12))), 1)
    sizes = [len(ids) for _, _, ids in outcome.transport.sent]
    assert sizes[1] > 11  # (the failures went with successes)
    assert len(outcome.run.unrun) > count // 2
    assert "the first 12 commands to finish all failed" in outcome.notes()


def test_a_run_with_some_success_does_not_stop_early() -> None:
    count = 200
    fails = set(range(count)) - {0}
    outcome = simulate(Script([0.01] * count, fails=fails), 2)
    assert outcome.run.unrun == []


def test_run_all_never_stops_early() -> None:
    outcome = simulate(Script([0.01] * 100, fails=set(range(100))), 2, on_failure="run-all")
    assert outcome.run.unrun == [] and len(outcome.run.failures) == 100


# Lost slaves ----------------------------------------------------------------------------------


def test_a_slave_that_dies_once_is_replaced_and_its_command_retried() -> None:
    outcome = simulate(Script([0.05] * 12, deaths={6: 1}), 2, setup=["data"])
    assert outcome.raised is None
    assert outcome.delivered == list(range(12))
    assert outcome.transport.attempts[6] == 2
    assert len(outcome.transport.replaced) == 1
    assert outcome.run.statistics.retries == 1
    rank = outcome.transport.replaced[0]
    after = [ids for _, r, ids in outcome.transport.sent if r == rank]
    assert [-2] in after  # the new slave got the data store before any command
    assert outcome.told == [
        f"slave {rank} (fake) was killed by signal 9 (SIGKILL) while running Fake_command(6) "
        "(command 6 of the run), which runs again (attempt 2 of 3); a new slave takes its place"
    ]


def test_a_command_that_always_kills_its_slave_fails_after_its_retries() -> None:
    outcome = simulate(Script([0.05] * 10, deaths={3: 99}), 2, retries=1)
    assert isinstance(outcome.raised, SlaveDiedError)
    assert outcome.raised.attempts == 2 and "tried 2 times" in str(outcome.raised)
    assert outcome.delivered == list(range(10))
    assert sorted(outcome.results) == [i for i in range(10) if i != 3]  # 3 never reported
    assert [news.split(", which ")[1] for news in outcome.told] == [
        "runs again (attempt 2 of 2); a new slave takes its place",
        "fails: it was tried 2 times; a new slave takes its place",
    ]


def test_commands_beside_a_death_in_the_same_batch_run_again_without_an_attempt() -> None:
    lengths = [1e-4] * 3000
    outcome = simulate(Script(lengths, deaths={2500: 1}), 2, retries=1)
    assert outcome.raised is None
    assert outcome.delivered == list(range(3000))
    again = [i for i, n in outcome.transport.attempts.items() if n > 1 and i != 2500]
    assert again  # the batch of the culprit ran again ...
    assert outcome.run.attempts == {2500: 1}  # ... and only the culprit counted an attempt


def test_a_lost_slave_that_cannot_be_replaced_leaves_its_work_to_the_others() -> None:
    outcome = simulate(Script([0.05] * 20, deaths={5: 1}), 3, replaceable=False)
    assert outcome.raised is None
    assert outcome.delivered == list(range(20))
    assert len(outcome.transport.ranks) == 2
    (news,) = outcome.told
    assert news.endswith("; the run goes on with the other slaves")


def test_when_every_slave_is_lost_the_waiting_commands_fail_clearly() -> None:
    deaths = dict.fromkeys(range(20), 1)
    outcome = simulate(Script([0.05] * 20, deaths=deaths), 2, replaceable=False, retries=5)
    assert isinstance(outcome.raised, (SlaveDiedError, BrokenProcessorError))
    assert outcome.delivered == list(range(20))
    broken = [e for _, e in outcome.run.failures if isinstance(e, BrokenProcessorError)]
    assert broken and "no slave is left" in str(broken[0])
    assert outcome.scheduler.broken is not None


def test_a_slave_that_keeps_dying_before_any_command_is_given_up() -> None:
    script = Script([0.05] * 20, deaths={0: 1}, dies_on_start=10)
    outcome = simulate(script, 2, setup=["data"])
    assert outcome.raised is None
    assert outcome.delivered == list(range(20))
    assert len(outcome.transport.replaced) == START_FAILURES  # the first replaces the victim
    assert len(outcome.transport.ranks) == 1
    last = outcome.told[-1]
    assert "while it restored its data store; its place stays empty" in last
    assert f"{START_FAILURES} slaves in a row died there before running a command" in last


# Unreadable batches ---------------------------------------------------------------------------


def test_a_command_the_slave_cannot_rebuild_fails_alone() -> None:
    outcome = simulate(Script([1e-4] * 2000, unreadable={1500}), 2)
    assert outcome.delivered == list(range(2000))
    assert [index for index, _ in outcome.run.failures] == [1500]


def test_a_command_whose_unpickling_kills_its_slave_fails_alone_after_its_retries() -> None:
    """The batch it came in goes again one command at a time, with no attempt counted: then
    its own deaths name it, and it fails once it was tried as often as a command that
    crashes its slave; every other command runs once."""
    outcome = simulate(Script([1e-4] * 2000, kills_unpickling={1500}), 2, retries=2)
    assert outcome.transport is not None and outcome.run is not None
    unpickled = outcome.transport.unpickled
    assert len(unpickled[0]) > 1  # it first travelled with others
    assert unpickled[1:] == [[1500]] * 3  # then alone, on its attempts
    assert isinstance(outcome.raised, SlaveDiedError) and outcome.raised.attempts == 3
    assert outcome.delivered == list(range(2000))
    assert [index for index, _ in outcome.run.failures] == [1500]
    ran = outcome.transport.attempts
    assert all(ran[index] == 1 for index in range(2000) if index != 1500)
    assert outcome.run.statistics.retries == 2
    assert outcome.told[0].endswith(
        f"while unpickling a batch of {len(unpickled[0])} commands, which run again one by one; "
        "a new slave takes its place"
    )
    assert (
        "while unpickling Fake_command(1500) (command 1500 of the run), which runs again"
        in (outcome.told[1])
    )


def test_a_slave_that_dies_unpickling_a_batch_of_one_fails_it_with_no_retry() -> None:
    outcome = simulate(Script([1e-4] * 4, kills_unpickling={2}), 2, retries=0)
    assert outcome.transport is not None and outcome.run is not None
    assert outcome.transport.unpickled == [[2]]
    assert [index for index, _ in outcome.run.failures] == [2]
    assert outcome.delivered == [0, 1, 2, 3]


def test_a_slave_that_dies_once_its_report_has_left_blames_no_command() -> None:
    # (its task memory said it returned results still: the next batch, sent ahead, which it
    # had not begun, was blamed, and with no retry allowed it failed)
    outcome = simulate(Script([0.01] * 40, dies_after_report={4}), 2, retries=0)
    assert outcome.raised is None and outcome.delivered == list(range(40))
    assert outcome.run is not None and outcome.run.statistics.retries == 0
    assert "was killed while idle" in outcome.told[0], outcome.told


# Timeouts -------------------------------------------------------------------------------------


def test_a_command_past_the_timeout_fails_and_its_slave_is_replaced() -> None:
    outcome = simulate(Script([0.1] * 10, hangs={4}), 2, timeout=1.0)
    assert isinstance(outcome.raised, CommandTimeoutError)
    assert "Fake_command(4)" in str(outcome.raised) and "timeout of 1 s" in str(outcome.raised)
    assert outcome.delivered == list(range(10))
    assert sorted(outcome.results) == [i for i in range(10) if i != 4]  # 4 never reported
    assert outcome.transport.ended == outcome.transport.replaced == [outcome.raised.rank]
    assert outcome.transport.attempts[4] == 1  # a timeout is not retried
    assert 1.0 <= outcome.seconds < 1.5


def test_a_slave_that_shows_no_sign_of_life_is_stopped_and_its_command_retried() -> None:
    outcome = simulate(Script([0.1] * 10, frozen={4}), 2, liveness=10.0, retries=1)
    assert isinstance(outcome.raised, SlaveDiedError)
    assert "showed no sign of life for 10 s" in str(outcome.raised)
    assert "option liveness: 10 s" in str(outcome.raised)
    assert outcome.raised.attempts == 2 and outcome.transport.attempts[4] == 2
    assert outcome.delivered == list(range(10))
    assert len(outcome.transport.ended) == len(outcome.transport.replaced) == 2
    assert 20.0 <= outcome.seconds < 22.0


def test_a_long_command_of_a_slave_that_beats_is_never_taken_for_hung() -> None:
    outcome = simulate(Script([100.0, 0.1, 0.1]), 2, liveness=10.0)
    assert outcome.raised is None and outcome.transport.ended == []


def test_without_a_timeout_commands_run_as_long_as_they_take() -> None:
    outcome = simulate(Script([30.0, 0.1]), 2)
    assert outcome.raised is None and outcome.seconds >= 30.0


def test_what_a_slave_wrote_between_batches_before_it_died_goes_with_its_next_command() -> None:
    """A slave whose next batch is at hand leaves its descriptors in the capture files between
    the two: what a thread writes there, if the slave dies before its next command, is the
    output of none, kept with the first command of the batch it held, which runs again."""
    outcome = simulate(Script([0.01] * 40, dies_before={4}), 2)
    assert sorted(outcome.delivered) == list(range(40))
    assert outcome.run is not None
    assert outcome.run.left_output == {
        4: [(_rank_that_held(outcome, 4), [(1, "written before command 4\n")])]
    }


def _rank_that_held(outcome: Outcome, index: int) -> int:
    assert outcome.transport is not None
    return next(rank for _, rank, ids in outcome.transport.sent if ids and ids[0] == index)
