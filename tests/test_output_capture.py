"""Output of compiled code, os.write and child processes, and logging, on slave processes."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from multi import (
    Application_callback,
    CommandTimeoutError,
    Slave_command,
    SlaveDiedError,
    load_multiprocessor,
    wire,
)
from multi.descriptors import Descriptor_capture, unnamed_files
from multi.slave import Slave_context, batch_for_wire, execute, serve
from tests.conftest import MISSING, run_master
from tests.workloads import Logs, Noop, Record, Value

PROCESS_FABRICS = ["multiprocessing"] + [name for name in ("mpi4py", "pvm") if name not in MISSING]


class Mixed(Slave_command):
    """Writes by every route a scientific command uses."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        i = self.index
        print(f"{i}: print")
        ctypes.CDLL(None).printf(b"%d: printf\n", ctypes.c_int(i))
        os.write(1, f"{i}: os.write\n".encode())
        subprocess.run(["echo", f"{i}: child"], check=True)
        print(f"{i}: to stderr", file=sys.stderr)
        os.write(2, f"{i}: os.write to stderr\n".encode())
        processor.return_object(Value(processor, i))


class Writes_natively(Slave_command):
    """Writes only by routes Python does not see, or nothing, by its index: one in three by
    ``os.write``, one in three by a child process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        i = self.index
        if i % 3 == 0:
            os.write(1, _native_text(i).encode())
        elif i % 3 == 1:
            subprocess.run(["echo", f"{i}: child"], check=True)
        processor.return_object(Told(processor, i))


class Told(Value):
    """Says on the master which command it is the result of, after that command's output."""

    def run(self, processor: Any, memo: Record | None) -> None:
        print(f"result {self.value}")


def _native_lines(count: int) -> list[str]:
    """What the master shows of ``count`` such commands: each one's output, then its result."""
    lines = []
    for i in range(count):
        if i % 3 != 2:
            lines.append(f"{i}: os.write" if i % 3 == 0 else f"{i}: child")
        lines.append(f"result {i}")
    return lines


class Crashes_mid_line(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        print("a whole line")
        print("half a line", end="")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class Hangs_mid_line(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        print("a whole line")
        print("half a line", end="")
        print("on stderr", file=sys.stderr)
        sys.stdout.flush()
        time.sleep(600)


class Interrupted(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        raise KeyboardInterrupt


def _file_of(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def _served(batches: list[Any], at_hand: list[int]) -> tuple[list[tuple[int, int]], Any, Any]:
    """Serve ``batches`` in a process of their own, ``at_hand`` saying after each how many times
    the slave asks before the next is there (-1: it never is): where descriptor 1 pointed at
    each receive, then its own file and the capture's. (A process that serves takes a fork hook
    that would end pytest's forked slaves.)"""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(_serve_here, batches, at_hand).result(timeout=60)


def _serve_here(batches: list[Any], at_hand: list[int]) -> tuple[list[tuple[int, int]], Any, Any]:
    processor = load_multiprocessor("uni", Application_callback(None), processor_size=-1)
    files = unnamed_files()
    context = Slave_context(1, 1, processor.data_store)
    context.descriptors = Descriptor_capture(files, 1)
    own, captured = _file_of(1), _file_of(files[0])
    seen: list[tuple[int, int]] = []
    asks_left = [0]  # before the next batch is there, after this one

    def receive() -> Any:
        seen.append(_file_of(1))
        return wire.dumps(batch_for_wire(batches.pop(0))) if batches else None

    def reply(report: Any, batch: Any) -> None:
        asks_left[0] = at_hand.pop(0)

    def there() -> bool:
        if asks_left[0] < 0:
            return False
        asks_left[0] -= 1
        return asks_left[0] < 0

    try:
        serve(processor, context, receive, reply, None, there)
        seen.append(_file_of(1))
    finally:
        context.descriptors.close()
    return seen, own, captured


def test_a_slave_points_its_descriptors_back_once_it_waits_and_as_it_leaves() -> None:
    """Between batches that follow at once, descriptors 1 and 2 stay in the capture files (four
    calls to the kernel saved per batch); a slave that waits, or leaves, has them back."""
    batches = [(range(i, i + 1), [Noop()]) for i in range(3)]
    seen, own, captured = _served(batches, [0, 0, -1])
    assert seen == [own, captured, captured, own, own]


def test_a_slave_keeps_its_descriptors_in_the_files_for_a_batch_that_comes_a_moment_later() -> None:
    """The next batch of a round trip comes a moment after the reply: the slave asks again."""
    batches = [(range(i, i + 1), [Noop()]) for i in range(2)]
    seen, own, captured = _served(batches, [3, -1])
    assert seen == [own, captured, own, own]


def test_a_slave_that_a_command_interrupts_leaves_with_its_descriptors_back() -> None:
    seen, own, _ = _served([(range(0, 1), [Interrupted()]), (range(1, 2), [Noop()])], [0])
    assert seen == [own, own]


def test_what_the_files_hold_as_the_descriptors_point_back_goes_where_it_would_have_gone() -> None:
    """Written outside any command (by a thread) while a slave looked for its next batch."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        out, err, left = pool.submit(_written_between_batches).result(timeout=60)
    assert (out, err, left) == (b"between batches\n", b"\xff on stderr\n", (0, 0))


def _written_between_batches() -> tuple[bytes, bytes, tuple[int, ...]]:
    own = [unnamed_files()[0], unnamed_files()[0]]  # where descriptors 1 and 2 point first
    os.dup2(own[0], 1)
    os.dup2(own[1], 2)
    capture = Descriptor_capture(unnamed_files(), 1)
    capture.begin()
    os.write(1, b"between batches\n")
    os.write(2, b"\xff on stderr\n")  # (bytes as they are, UTF-8 or not)
    capture.end()
    left = tuple(os.fstat(fd).st_size for fd in capture.fds)
    out, err = (os.pread(fd, 100, 0) for fd in own)
    return out, err, left


def test_a_slave_serves_on_when_what_the_files_hold_cannot_be_passed_on() -> None:
    """Descriptor 1 is a pipe whose reader is gone: what a thread wrote between two batches is
    dropped, as the thread's own write would have failed, and the slave serves on. (The write
    raised BrokenPipeError out of ``serve``: a slave of multiprocessing left, as though its
    master were gone; one of MPI died.)"""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        served, error = pool.submit(_served_to_a_closed_pipe).result(timeout=60)
    assert (served, error) == (2, None)


def _served_to_a_closed_pipe() -> tuple[int, str | None]:
    processor = load_multiprocessor("uni", Application_callback(None), processor_size=-1)
    context = Slave_context(1, 1, processor.data_store)
    context.descriptors = Descriptor_capture(unnamed_files(), 1)
    batches = [(range(i, i + 1), [Noop()]) for i in range(2)]
    served = []

    def reply(report: Any, batch: Any) -> None:
        served.append(batch)
        os.write(1, b"from a thread, as the slave replies\n")  # (into the capture file)

    own = os.dup(1)
    read, write = os.pipe()
    os.close(read)
    os.dup2(write, 1)
    os.close(write)
    try:
        receive = lambda: wire.dumps(batch_for_wire(batches.pop(0))) if batches else None  # noqa: E731
        serve(processor, context, receive, reply, None, lambda: False)
    except OSError as error:
        return len(served), repr(error)
    finally:
        context.descriptors.close()
        os.dup2(own, 1)
        os.close(own)
    return len(served), None


class Silences_logging(Slave_command):
    """Sets the root logger's level so high that its own record is dropped."""

    def run(self, processor: Any, completed: bool) -> None:
        logging.getLogger().setLevel(logging.CRITICAL)
        logging.getLogger("tests.science").info("silenced")


class Logs_elsewhere(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        logging.getLogger("tests.other").info("not wanted either")


@pytest.mark.parametrize("kind", PROCESS_FABRICS)
def test_output_of_c_os_write_and_children_is_one_block_per_command(
    kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> list[Any]:
        memo = Record()
        for i in range(6):
            processor.add_to_queue(Mixed(i), memo)
        processor.run_queue()
        return [value for _, value in memo.values]

    assert run_master(kind, body, verbosity=1) == list(range(6))
    out, err = capfd.readouterr()
    out_lines = [line for line in out.splitlines() if re.search(r"\| \d: ", line)]
    err_lines = [line for line in err.splitlines() if re.search(r"E\| \d: ", line)]
    routes = ["print", "printf", "os.write", "child"]
    assert len(out_lines) == 6 * 4 and len(err_lines) == 6 * 2
    for block in range(6):
        lines = out_lines[4 * block : 4 * block + 4]
        rank, i = re.match(r"\s*(\d+)  \| (\d): ", lines[0]).groups()  # type: ignore[union-attr]
        assert lines == [f"{rank}  | {i}: {route}" for route in routes]
        assert f"{rank} E| {i}: to stderr" in err_lines
        assert err_lines.index(f"{rank} E| {i}: to stderr") + 1 == err_lines.index(
            f"{rank} E| {i}: os.write to stderr"
        )


def test_a_watched_slave_tells_apart_what_each_command_of_a_batch_wrote_natively() -> None:
    """Where the kernel says when the files were written to, they are looked at only after the
    commands that wrote (and the next: emptied, they changed), and once at the end of the
    batch: each command still gets its own output, none another's."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        watched, outputs, looks = pool.submit(_native_batches, 30, None).result(timeout=60)
    assert watched == [True, True]
    expected = {i: [(0, _native_text(i))] for i in range(30) if i % 3 != 2}
    assert outputs == [expected, expected]
    # (20 commands wrote; 10 of them are followed by one that did not, looked at too, since
    # emptying the files is a change; one look at the end of each batch)
    assert looks == 2 * (20 + 10 + 1)


@pytest.mark.parametrize("spoiler", ["Blocks_the_signal", "Borrows_the_signal"])
def test_a_slave_whose_watch_a_command_deafens_loses_no_output_and_looks_again_itself(
    spoiler: str,
) -> None:
    """A command that blocks the watch's signal, or takes it for a while: what the batch's
    later commands write goes with its last command, nothing is lost, and the next batch is
    looked at after every command, as without a watch."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        watched, (first, second), _ = pool.submit(_native_batches, 12, spoiler).result(timeout=60)
    text = globals()[spoiler].text
    assert watched == [True, False]
    assert sorted(first) == [0, 1, 11]
    assert first[0] == [(0, "0: os.write\n")] and first[1] == [(0, "1: child\n")]
    assert "".join(chunk for _, chunk in first[11]) == text + "".join(
        _native_text(i) for i in range(4, 12) if i % 3 != 2
    )
    assert second == {i: [(0, _native_text(i))] for i in range(12) if i % 3 != 2}


class Blocks_the_signal(Slave_command):
    text = ""

    def run(self, processor: Any, completed: bool) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGURG])


class Borrows_the_signal(Slave_command):
    """Puts in a handler of its own while it writes, then the one it found."""

    text = "3: borrowed\n"

    def run(self, processor: Any, completed: bool) -> None:
        taken = []
        found = signal.signal(signal.SIGURG, lambda number, frame: taken.append(number))
        os.write(1, self.text.encode())
        self.wait_for(taken)
        signal.signal(signal.SIGURG, found)

    def wait_for(self, taken: list[int]) -> None:
        """(A Python call: the signal's handler runs as it begins.)"""
        assert taken


def _native_text(i: int) -> str:
    return f"{i}: os.write\n" if i % 3 == 0 else f"{i}: child\n"


def _native_batches(
    count: int, spoiler: str | None
) -> tuple[list[bool], list[dict[int, Any]], int]:
    """Two batches of ``count`` commands that write natively, the first with ``spoiler`` in
    the place of its command 3 (after one that wrote nothing, whose look read every event):
    whether the capture was watched as each began, their output by position, and how many
    times the files' sizes were asked."""
    processor = load_multiprocessor("uni", Application_callback(None), processor_size=-1)
    context = Slave_context(1, 1, processor.data_store)
    context.descriptors = capture = Descriptor_capture(unnamed_files(), 1)
    looks = [0]
    lseek = os.lseek

    def counted(fd: int, position: int, how: int) -> int:
        looks[0] += 1
        return lseek(fd, position, how)

    watched, outputs = [], []
    os.lseek = counted  # type: ignore[assignment]
    try:
        for batch in range(2):
            commands: list[Slave_command] = [Writes_natively(i) for i in range(count)]
            if spoiler is not None and batch == 0:
                commands[3] = globals()[spoiler]()
            watched.append(capture._watch is not None)
            report = execute(processor, context, (range(count), commands))
            outputs.append(report.output or {})
    finally:
        os.lseek = lseek  # type: ignore[assignment]
        capture.close()
    return watched, outputs, looks[0] // 2


@pytest.mark.parametrize("kind", PROCESS_FABRICS)
def test_native_output_of_commands_batched_together_comes_before_each_ones_result(
    kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> None:
        for i in range(60):
            processor.add_to_queue(Writes_natively(i), Record())
        processor.run_queue()

    run_master(kind, body, verbosity=1)
    out, _ = capfd.readouterr()
    lines = [re.sub(r"^\s*\d+  \| ", "", line) for line in out.splitlines()]
    assert [line for line in lines if re.match(r"(result )?\d+", line)] == _native_lines(60)


@pytest.mark.parametrize("kind", PROCESS_FABRICS)
def test_what_a_command_wrote_before_its_slave_died_is_replayed(
    kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> BaseException:
        processor.add_to_queue(Crashes_mid_line())
        with pytest.raises(SlaveDiedError) as raised:
            processor.run_queue()
        return raised.value

    error = run_master(kind, body, verbosity=1, retries=1)
    out, _ = capfd.readouterr()
    lines = [line for line in out.splitlines() if "line" in line]
    assert [re.sub(r"^\s*\d+  \| ", "", line) for line in lines] == [
        "a whole line",
        "half a line",
        "a whole line",
        "half a line",
    ]  # one block per attempt, the last line ended
    if kind != "pvm":  # (PVM does not say how a task ended)
        assert "SIGKILL" in str(error)


@pytest.mark.parametrize("kind", PROCESS_FABRICS)
def test_what_a_command_wrote_before_its_timeout_is_replayed(
    kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(Hangs_mid_line())
        with pytest.raises(CommandTimeoutError):
            processor.run_queue()

    run_master(kind, body, verbosity=1, timeout=1.5)
    out, err = capfd.readouterr()
    assert re.search(r"^\s*\d+  \| a whole line$", out, re.MULTILINE)
    assert re.search(r"^\s*\d+  \| half a line$", out, re.MULTILINE)
    assert re.search(r"^\s*\d+ E\| on stderr$", err, re.MULTILINE)


@pytest.mark.parametrize("kind", PROCESS_FABRICS)
def test_records_logged_on_a_slave_reach_the_master_logging(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def body(processor: Any) -> None:
        for i in range(3):
            processor.add_to_queue(Logs(i))
        processor.run_queue()

    with caplog.at_level(logging.INFO):
        run_master(kind, body)
    records = [r for r in caplog.records if r.name == "tests.science"]
    assert sorted(r.getMessage() for r in records) == [
        "fitting 0", "fitting 1", "fitting 2", "residue 1 failed",
    ]  # fmt: skip
    assert all(r.slave >= 1 and re.fullmatch(r"Logs \d", r.command) for r in records)
    failed = next(r for r in records if r.levelno == logging.ERROR)
    assert failed.command == "Logs 1" and "ValueError: no data" in failed.exc_text


@pytest.mark.parametrize("kind", PROCESS_FABRICS)
def test_levels_the_master_sets_once_its_slaves_run_decide_what_they_log(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(Logs(0))  # (the slaves run; the master wants warnings only)
        processor.run_queue()
        # One logger of the master wants every level, where its root still wants warnings.
        with caplog.at_level(logging.DEBUG, logger="tests.science"):
            for i in (2, 4):
                processor.add_to_queue(Logs(i))
            processor.run_queue()
            processor.add_to_queue(Logs_elsewhere())  # (its logger wants warnings only)
            processor.run_queue()

    run_master(kind, body)
    messages = sorted(r.getMessage() for r in caplog.records if r.name.startswith("tests."))
    assert messages == ["fitting 2", "fitting 4", "not wanted 2", "not wanted 4"]


@pytest.mark.parametrize("kind", PROCESS_FABRICS)
def test_a_level_a_command_sets_on_a_slave_lasts_no_longer_than_its_batch(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def body(processor: Any) -> None:
        processor.run_command_globally(Silences_logging())
        for i in range(4):  # a run each: every slave, whichever takes them, logged again
            processor.add_to_queue(Logs(i * 2))
            processor.run_queue()

    with caplog.at_level(logging.INFO):
        run_master(kind, body)
    messages = [r.getMessage() for r in caplog.records if r.name == "tests.science"]
    assert messages == ["fitting 0", "fitting 2", "fitting 4", "fitting 6"]


def test_records_have_slave_and_command_attributes_on_the_master(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("tests.master").info("on the master")
    (record,) = [r for r in caplog.records if r.name == "tests.master"]
    assert (record.slave, record.command) == (0, "")
