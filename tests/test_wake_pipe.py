"""The pipe that wakes a thread asleep in ``select`` from another thread."""

from __future__ import annotations

import os
import select
import threading

from multi.wake_pipe import Wake_pipe

PATIENCE = 10.0


def readable(pipe: Wake_pipe) -> bool:
    return bool(select.select([pipe], [], [], 0)[0])


def test_a_wake_from_another_thread_ends_a_select_and_is_taken_once() -> None:
    pipe = Wake_pipe()
    waking = threading.Thread(target=pipe.wake)
    waking.start()
    assert select.select([pipe], [], [], PATIENCE)[0] == [pipe]
    waking.join()
    assert pipe.take()
    assert not readable(pipe) and not pipe.take()
    pipe.close()


def test_wakes_that_come_before_a_take_are_one_and_never_block() -> None:
    pipe = Wake_pipe()
    for _ in range(100_000):  # (past what a pipe holds: the writes that do not fit are dropped)
        pipe.wake()
    assert pipe.take()
    assert not readable(pipe)
    pipe.close()


def test_a_closed_pipe_leaves_its_descriptors_and_takes_wakes_as_nothing() -> None:
    before = sorted(os.listdir("/proc/self/fd"))
    pipe = Wake_pipe()
    pipe.close()
    pipe.wake()  # (an executor's call that comes as its transport stops)
    assert not pipe.take()
    assert sorted(os.listdir("/proc/self/fd")) == before
