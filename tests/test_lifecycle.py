"""The program around the processor: exit status, shutdown, Ctrl-C, the runtime line, and an
application written against the seed's API alone, run on every fabric."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import interrupt, slaves_for, survivors

APP = Path(__file__).parent / "apps" / "seed_app.py"
ROOT = Path(__file__).parent.parent
SECONDS = 30


def run_script(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=SECONDS, cwd=ROOT, check=False
    )


def seed_app(fabric: str, verbosity: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script(str(APP), fabric, str(slaves_for(fabric)), str(verbosity), *extra)


@pytest.fixture(scope="module")
def uni_output() -> subprocess.CompletedProcess[str]:
    result = seed_app("uni", 0)
    assert result.returncode == 0, result.stderr
    assert "Averaged vector length: 3.000000" in result.stdout
    assert "The slave said: a negative number of rotations: -1" in result.stdout
    return result


def test_the_seed_application_gives_the_same_output_on_every_fabric(
    fabric: str, uni_output: subprocess.CompletedProcess[str]
) -> None:
    result = seed_app(fabric, 0)
    assert (result.returncode, result.stdout, result.stderr) == (0, uni_output.stdout, "")


@pytest.mark.parametrize("status", [0, 3])
def test_sys_exit_on_the_master_is_the_program_status(fabric: str, status: int) -> None:
    result = seed_app(fabric, 1, str(status))
    assert result.returncode == status, result.stderr
    assert re.search(r"^Overall runtime: \d+:\d\d:\d\d$", result.stdout, re.MULTILINE)


def test_the_runtime_line_is_silent_at_verbosity_zero(fabric: str) -> None:
    result = seed_app(fabric, 0)
    assert "Overall runtime" not in result.stdout


SIGNALLED_EXIT = textwrap.dedent(
    """
    import os, signal, sys, time
    from multi import Application_callback, Processor_box, Slave_command, load_multiprocessor

    class Signals_the_master(Slave_command):
        def __init__(self, master):
            super().__init__()
            self.master = master

        def run(self, processor, completed):
            os.kill(self.master, signal.SIGUSR2)
            time.sleep(60)

    class Main:
        def run(self):
            processor = Processor_box().processor
            # (as a batch system's SIGTERM is often made an exit)
            signal.signal(signal.SIGUSR2, lambda number, frame: sys.exit(8))
            for _ in range(3):
                processor.add_to_queue(Signals_the_master(os.getpid()))
            processor.run_queue()
            print("not reached")

    if __name__ == "__main__":
        size = -1 if sys.argv[1] == "uni" else 2
        load_multiprocessor(sys.argv[1], Application_callback(Main()), processor_size=size).run()
    """
)


def test_sys_exit_in_a_signal_handler_of_the_master_is_the_program_status(fabric: str) -> None:
    """Even where the master runs the command itself as the signal comes (uni): the exit is
    the master's, not the command's."""
    result = run_script(fabric, code=SIGNALLED_EXIT)
    assert result.returncode == 8, result.stderr
    assert "not reached" not in result.stdout


UNHANDLED = textwrap.dedent(
    """
    import sys
    from multi import Application_callback, load_multiprocessor

    class Main:
        def run(self):
            raise LookupError("nothing here")

    load_multiprocessor(sys.argv[1], Application_callback(Main()), processor_size=-1).run()
    print("not reached")
    """
)


def test_an_unhandled_exception_ends_the_program_with_a_failure(fabric: str) -> None:
    result = run_script(fabric, code=UNHANDLED)
    assert result.returncode == 1
    assert "LookupError: nothing here" in result.stderr
    assert "not reached" not in result.stdout


INTERRUPTED = textwrap.dedent(
    """
    import os, subprocess, sys, threading, time
    from multi import Application_callback, Processor_box, Slave_command, load_multiprocessor

    class Forever(Slave_command):
        \"\"\"Starts a program of its own, says so in a file, and waits for ever.\"\"\"

        def run(self, processor, completed):
            child = subprocess.Popen(["sleep", "300"])
            name = f"{os.getpid()}-{threading.get_ident()}"
            with open(os.path.join(os.environ["STARTED"], name), "w") as note:
                note.write(str(child.pid))
            time.sleep(600)

    class Main:
        def run(self):
            processor = Processor_box().processor
            for _ in range(4):
                processor.add_to_queue(Forever())
            processor.run_queue()

    if __name__ == "__main__":
        size = -1 if sys.argv[1] == "uni" else 2
        load_multiprocessor(sys.argv[1], Application_callback(Main()), processor_size=size).run()
    """
)


def test_ctrl_c_stops_the_master_every_slave_and_what_their_commands_started(
    fabric: str, tmp_path: Path
) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    running = 1 if fabric == "uni" else 2
    status, stderr, processes = interrupt([sys.executable, str(script), fabric], running)
    assert status != 0
    assert "KeyboardInterrupt" in stderr
    assert survivors(processes) == []


PROGRESS = textwrap.dedent(
    """
    import sys
    from multi import Application_callback, Processor_box, load_multiprocessor
    from tests import workloads as w

    class Main:
        def run(self):
            processor = Processor_box().processor
            for i in range(40):
                processor.add_to_queue(w.Sleep(0.05, i))
            processor.run_queue()

    if __name__ == "__main__":
        load_multiprocessor("thread", Application_callback(Main()), 2, verbosity=0).run()
    """
)


def test_the_progress_bar_shows_by_itself_on_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    script = tmp_path / "progress.py"
    script.write_text(PROGRESS)
    for wanted, shown in (("auto", True), ("no", False)):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MULTI_THREAD_PROGRESS": wanted}
        status, output = on_a_terminal([sys.executable, str(script)], env)
        assert status == 0, output
        assert ("40/40" in output or "cmd/s" in output) is shown, output


def on_a_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a program with its stdout and stderr on a pseudo-terminal of 24 x 100 characters
    (a new one has no size, which a bar cannot be drawn in); its status and output."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        command, stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL, env=env, cwd=ROOT
    )
    os.close(secondary)
    chunks = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the program has ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(primary)
    status = process.wait(timeout=SECONDS)
    return status, b"".join(chunks).decode(errors="replace")
