"""The kernel's word that a capture file was written to (``multi.write_watch``)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from multi.descriptors import unnamed_files
from multi.write_watch import SIGNAL, Write_watch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux")


@pytest.fixture
def watched() -> Iterator[tuple[Write_watch, tuple[int, int]]]:
    files = unnamed_files()
    watch = Write_watch.start(files)
    assert watch is not None
    try:
        yield watch, files
    finally:
        watch.close()
        for fd in files:
            os.close(fd)


def test_a_watch_is_quiet_until_a_file_is_written_by_any_route(
    watched: tuple[Write_watch, tuple[int, int]],
) -> None:
    watch, (out, err) = watched
    assert not watch.quiet()  # (what the files held before it began is looked at once)
    seen = []
    for write in (
        lambda: os.write(out, b"os.write\n"),
        lambda: ctypes.CDLL(None).dprintf(err, b"compiled code\n"),
        lambda: subprocess.run(["echo", "child"], stdout=out, check=True),
    ):
        watch.clear()
        before = watch.quiet()
        write()
        seen.append((before, watch.quiet()))
    assert seen == [(True, False)] * 3


def test_writes_made_between_looks_are_all_seen_by_the_next(
    watched: tuple[Write_watch, tuple[int, int]],
) -> None:
    """The events of several writes merge into one: the look after them finds them all."""
    watch, (out, _) = watched
    watch.clear()
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
    watch.clear()
    previous = signal.signal(SIGNAL, signal.SIG_IGN)
    try:
        assert not watch.quiet()
        watch.clear()
        assert not watch.quiet()
    finally:
        signal.signal(SIGNAL, previous)


def test_one_watch_per_process_from_its_main_thread_and_the_handler_put_back() -> None:
    before = signal.getsignal(SIGNAL)
    files = unnamed_files()
    try:
        watch = Write_watch.start(files)
        assert watch is not None
        assert Write_watch.start(files) is None
        other: list[Write_watch | None] = []
        thread = threading.Thread(target=lambda: other.append(Write_watch.start(files)))
        watch.close()
        thread.start()
        thread.join(10)
        assert other == [None]
        assert signal.getsignal(SIGNAL) == before
        again = Write_watch.start(files)  # (once closed, another may start)
        assert again is not None
        again.close()
    finally:
        for fd in files:
            os.close(fd)
