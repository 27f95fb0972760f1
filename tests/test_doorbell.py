"""The doorbell that slaves on the master's host ring once a report has left: a ring wakes the
master and names the slave, and a ring that cannot be made costs nothing but the wake."""

from __future__ import annotations

import os
import resource
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from multi.doorbell import SELECTABLE, Doorbell, ringer

#: Long enough for any ring to arrive; a sleep that ends no sooner shows a ring that never came.
PATIENCE = 10.0


@pytest.fixture(autouse=True)
def no_descriptor_left() -> Iterator[None]:
    """Every end is closed: a descriptor left open past ``SELECTABLE`` made a later test's
    limit on descriptors mean nothing."""
    before = os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else None
    yield
    if before is not None:
        assert sorted(os.listdir("/proc/self/fd")) == sorted(before)


def rings_waiting(bell: Doorbell) -> bool:
    return bool(select.select([bell._read], [], [], 0)[0])


def test_a_ring_wakes_the_master_and_names_the_slave(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path))
    ring = ringer(str(tmp_path), 3)
    assert ring is not None
    ring()
    bell.sleep(PATIENCE)
    assert bell.rang == {3}
    assert not rings_waiting(bell)  # (taken as it woke)
    bell.close()
    ring.close()


def test_a_full_doorbell_drops_rings_without_a_word_and_rings_again_once_emptied(
    tmp_path: Path,
) -> None:
    bell = Doorbell(str(tmp_path))
    ring, other = ringer(str(tmp_path), 1), ringer(str(tmp_path), 2)
    assert ring is not None and other is not None
    for _ in range(40_000):  # (a FIFO holds 64 KiB: 16,384 rings)
        ring()
    other()  # (lost: the FIFO is full)
    bell.sleep(0)
    assert bell.rang == {1}
    assert not rings_waiting(bell)
    other()
    bell.sleep(PATIENCE)
    assert bell.rang == {1, 2}
    bell.close()
    ring.close()
    other.close()


def test_the_master_s_own_ring_wakes_it_and_names_no_slave(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path))
    bell.ring()
    assert rings_waiting(bell)
    bell.sleep(PATIENCE)
    assert bell.rang == set()
    assert not rings_waiting(bell)
    bell.close()
    bell.ring()  # (a closed bell: a late signal rings nothing, and raises nothing)


def test_a_slave_cannot_ring_where_the_master_made_no_doorbell(tmp_path: Path) -> None:
    assert ringer(str(tmp_path), 1) is None
    assert ringer(str(tmp_path / "gone"), 1) is None


def test_a_slave_rings_on_after_its_master_has_gone(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path))
    ring = ringer(str(tmp_path), 1)
    assert ring is not None
    bell.close()
    ring()  # (no reader: the write fails, and the slave goes on)
    ring.close()


def test_a_doorbell_past_the_descriptors_that_select_can_watch_rings_all_the_same(
    tmp_path: Path,
) -> None:
    """A program with many files open (or many slaves) gives the FIFO a high descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * SELECTABLE:
        pytest.skip(f"this process may open {hard} files only")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2 * SELECTABLE, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < SELECTABLE:
            held.append(os.open(os.devnull, os.O_RDONLY))
        bell = Doorbell(str(tmp_path))
        assert bell._read >= SELECTABLE
        ring = ringer(str(tmp_path), 5)
        assert ring is not None
        ring()
        bell.sleep(PATIENCE)
        assert bell.rang == {5}
        bell.close()
        ring.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_slave_whose_command_closed_its_end_rings_all_the_same(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path))
    ring = ringer(str(tmp_path), 4)
    assert ring is not None
    os.close(ring._fd)
    ring()
    bell.sleep(PATIENCE)
    assert bell.rang == {4}
    bell.close()
    ring.close()


def test_a_ring_never_goes_into_a_file_that_a_command_put_in_its_place(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path))
    ring = ringer(str(tmp_path), 4)
    assert ring is not None
    taken = ring._fd
    with open(tmp_path / "own.txt", "wb") as own:
        os.dup2(own.fileno(), taken)  # (the command's file, where the FIFO was)
        ring()
        bell.sleep(PATIENCE)
        os.close(taken)
    assert (tmp_path / "own.txt").read_bytes() == b""
    assert bell.rang == {4}
    bell.close()
    ring.close()


def test_the_master_s_own_ring_from_another_thread_ends_its_sleep(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path))
    ringing = threading.Thread(target=bell.ring)
    ringing.start()
    assert bell.sleep(PATIENCE)  # (rung: a sleep that ends without a ring says False)
    ringing.join()
    assert bell.rang == set()
    bell.close()


def test_a_ring_while_the_doorbell_closes_neither_waits_nor_writes(tmp_path: Path) -> None:
    # (a signal handler may ring in the main thread, in the middle of its close: a ring that
    # waited would wait for ever, and one that wrote might write to a descriptor closed
    # meanwhile and given to another file)
    bell = Doorbell(str(tmp_path))
    with bell._closing:  # (as the close holds it)
        bell.ring()
    assert not rings_waiting(bell)
    bell.close()
