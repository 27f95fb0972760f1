"""The multiprocessing fabric under each way of starting its slaves: forkserver (the default),
spawn, and fork, which copies the master as it is."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests import workloads as w
from tests.conftest import run_master, survivors

ROOT = Path(__file__).parent.parent

METHODS = [
    m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()
]


def values(memo: w.Record) -> list[Any]:
    return [value for _, value in memo.values]


@pytest.mark.parametrize("method", METHODS)
def test_every_start_method_runs_replaces_and_delivers_in_order(
    method: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> tuple[list[Any], int, str]:
        memo = w.Record()
        for i in range(200):
            command = w.Die_once(str(tmp_path / "died"), signal.SIGKILL, i) if i == 120 else None
            processor.add_to_queue(command or w.Square(i), memo)
        processor.add_to_queue(w.Talk(200, lines=1), memo)
        processor.add_to_queue(w.Fail(ValueError("last"), 201), memo)
        with pytest.raises(ValueError, match="last"):
            processor.run_queue()
        return values(memo), processor.last_run.retries, processor.settings["start_method"]

    delivered, retries, used = run_master("multiprocessing", body, start_method=method)
    squares = [("survived", 120) if i == 120 else i * i for i in range(200)]
    assert delivered == [*squares, 200, ("before failing", 201)]
    assert retries == 1 and used == method
    assert "command 200 line 0" in capfd.readouterr().out


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
@pytest.mark.parametrize("method", METHODS)
def test_a_slave_holds_nothing_of_the_engines_wake_pipe(method: str) -> None:
    """A forked slave closes its copy of the master's wake pipe, as of its sockets."""

    def body(processor: Any) -> tuple[str, list[list[str]]]:
        memo = w.Record()
        for _ in range(2):
            processor.add_to_queue(w.Open_files(), memo)
        processor.run_queue()
        pipe = os.fstat(processor._transport._woken.fileno()).st_ino
        return f"pipe:[{pipe}]", values(memo)

    pipe, opened = run_master("multiprocessing", body, start_method=method)
    assert len(opened) == 2 and all(opened)
    assert [links for links in opened if pipe in links] == []


#: Ctrl-C that comes as the master forks a slave, while Python runs the hooks around the fork.
INTERRUPTED_AT_FORK = """
import os, signal
from multi import Application_callback, load_multiprocessor

os.register_at_fork(after_in_parent=lambda: os.kill(os.getpid(), signal.SIGINT))

class Main:
    def run(self):
        print("the program ran")

processor = load_multiprocessor(
    "multiprocessing", Application_callback(Main()), 2, verbosity=0, start_method="fork"
)
processor.run()
"""


@pytest.mark.skipif("fork" not in METHODS, reason="no fork start method here")
def test_ctrl_c_while_a_slave_is_forked_interrupts_the_master(tmp_path: Path) -> None:
    mark = f"MULTI_TEST_FORKED={tmp_path}"  # in the environment of the master and its slaves
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_AT_FORK],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "MULTI_TEST_FORKED": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "KeyboardInterrupt" in result.stderr
    assert "Exception ignored" not in result.stderr  # (Python's words as it drops one)
    assert "the program ran" not in result.stdout
    assert survivors(_marked(mark)) == []


def _marked(mark: str) -> list[int]:
    """The processes with ``mark`` in their environment."""
    found = []
    for process in psutil.process_iter():
        with suppress(OSError, psutil.Error):  # (gone, or not ours to read)
            if mark in Path(f"/proc/{process.pid}/environ").read_bytes().decode(errors="replace"):
                found.append(process.pid)
    return found


#: A master killed before its forked slaves asked the kernel to end them with it (as if it died
#: in that window, which ``end_with_parent`` stands for): only the hang-up of their sockets is
#: left to end them.
KILLED_AFTER_FORK = """
import os, signal
import multi.multiprocessing_processor as fabric
from multi import Application_callback, Processor_box, load_multiprocessor
from tests import workloads as w

fabric.end_with_parent = lambda watch=True: None

class Main:
    def run(self):
        processor = Processor_box().processor
        processor.add_to_queue(w.Square(2))
        processor.run_queue()
        pids = [slave.process.pid for slave in processor._transport._slaves.values()]
        print(*pids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

load_multiprocessor(
    "multiprocessing", Application_callback(Main()), 3, verbosity=0, start_method="fork"
).run()
"""


@pytest.mark.skipif("fork" not in METHODS, reason="no fork start method here")
def test_forked_slaves_end_once_their_master_is_gone() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_AFTER_FORK],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
    )
    try:  # (the slaves hold its stdout too: only their pids are read from it)
        line = process.stdout.readline()  # type: ignore[union-attr]
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
    assert status == -signal.SIGKILL
    slaves = [int(pid) for pid in line.split()]
    assert len(slaves) == 3
    left = survivors(slaves)
    for pid in left:  # (what the test found is not left running)
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert left == []
