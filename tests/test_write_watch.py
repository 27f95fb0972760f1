"""The kernel's word that a capture file was written to (``multi.write_watch``)."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from multi import write_watch
from multi.descriptors import unnamed_files
from multi.write_watch import SIGNAL, Write_watch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux")


@pytest.fixture
def files() -> Iterator[tuple[int, int]]:
    fds = unnamed_files()
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def watched(files: tuple[int, int]) -> Iterator[tuple[Write_watch, tuple[int, int]]]:
    watch = Write_watch.start(files, 1)
    assert watch is not None
    try:
        yield watch, files
    finally:
        watch.close()


def test_a_watch_is_quiet_until_a_file_is_written_by_any_route(
    watched: tuple[Write_watch, tuple[int, int]],
) -> None:
    watch, (out, err) = watched
    seen = []
    for write in (
        lambda: os.write(out, b"os.write\n"),
        lambda: ctypes.CDLL(None).dprintf(err, b"compiled code\n"),
        lambda: subprocess.run(["echo", "child"], stdout=out, check=True),
        lambda: os.ftruncate(out, 0),  # (emptied by the look: a change too)
    ):
        before = watch.quiet()
        write()
        seen.append((before, watch.quiet()))
        watch.clear()
    assert seen == [(True, False)] * 4


def test_writes_made_between_looks_are_all_seen_by_the_next(
    watched: tuple[Write_watch, tuple[int, int]],
) -> None:
    """The events of several writes merge into one: the look after them finds them all."""
    watch, (out, _) = watched
    for _ in range(3):
        os.write(out, b"x")
    assert not watch.quiet()
    watch.clear()
    assert os.lseek(out, 0, os.SEEK_END) == 3
    assert watch.quiet()
    os.write(out, b"y")
    assert not watch.quiet()


def test_a_command_that_takes_the_signal_for_itself_makes_the_files_looked_at(
    watched: tuple[Write_watch, tuple[int, int]],
) -> None:
    watch, _ = watched
    previous = signal.signal(SIGNAL, signal.SIG_IGN)
    try:
        assert not watch.quiet()
        watch.clear()
        assert not watch.quiet()
    finally:
        signal.signal(SIGNAL, previous)


def test_one_watch_per_process_from_its_main_thread_and_the_handler_put_back(
    files: tuple[int, int],
) -> None:
    before = signal.getsignal(SIGNAL)
    watch = Write_watch.start(files, 1)
    assert watch is not None
    assert Write_watch.start(files, 1) is None
    other: list[Write_watch | None] = []
    thread = threading.Thread(target=lambda: other.append(Write_watch.start(files, 1)))
    watch.close()
    thread.start()
    thread.join(10)
    assert other == [None]
    assert signal.getsignal(SIGNAL) == before
    again = Write_watch.start(files, 1)  # (once closed, another may start)
    assert again is not None
    again.close()


def test_slaves_beyond_a_quarter_of_the_users_inotify_instances_take_none(
    files: tuple[int, int],
) -> None:
    """The rest is left to the user's other programs (an editor, ``tail -f``)."""
    share = write_watch._instance_limit() // 4
    assert Write_watch.start(files, share + 1) is None
    watch = Write_watch.start(files, share)
    assert watch is not None
    watch.close()


def test_a_watch_that_cannot_be_set_up_leaves_the_signal_as_it_was(
    files: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*arguments: object) -> int:
        raise OSError("refused")

    before = signal.getsignal(SIGNAL)
    monkeypatch.setattr(fcntl, "fcntl", refused)
    assert Write_watch.start(files, 1) is None
    assert signal.getsignal(SIGNAL) == before
    assert write_watch._active is None


def test_a_forked_child_forgets_its_parents_watch_which_goes_on(
    watched: tuple[Write_watch, tuple[int, int]],
) -> None:
    watch, (out, _) = watched
    pid = os.fork()
    if pid == 0:  # (the child: its status says what it found)
        forgot = write_watch._active is None and signal.getsignal(SIGNAL) != write_watch._note
        os.write(out, b"from the child\n")
        os._exit(0 if forgot else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not watch.quiet()  # (the child's write signalled the parent)
