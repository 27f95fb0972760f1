"""The pvm fabric's own ways: the daemon it joins or starts, stale files, bad options.

The conformance and fault suites run on it as on every fabric; these tests cover what only
PVM has. Each master runs in a process of its own: libpvm reads ``PVM_TMP`` once per process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import MISSING, survivors

pytestmark = pytest.mark.skipif(
    "pvm" in MISSING, reason=f"PVM is not available: {MISSING.get('pvm')}"
)

ROOT = Path(__file__).parent.parent

MASTER = textwrap.dedent(
    """
    import os, sys
    from multi import load_multiprocessor
    from tests import workloads as w

    processor = load_multiprocessor("pvm", None, 2, verbosity=0, **dict(
        option.split("=", 1) for option in sys.argv[1:]))
    memo = w.Record()
    for i in range(20):
        processor.add_to_queue(w.Square(i), memo)
    processor.run_queue()
    print(" ".join(str(value) for _, value in memo.values))
    processor.add_to_queue(w.Pid(), memo)
    processor.run_queue()
    print(memo.values[-1][1], flush=True)
    processor.stop_slaves()
    """
)


def run_master(tmp_path: Path, pvm_tmp: Path, *options: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "master.py"
    script.write_text(MASTER)
    return subprocess.run(
        [sys.executable, str(script), *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PVM_TMP": str(pvm_tmp)},
        check=False,
    )


def squares(result: subprocess.CompletedProcess[str]) -> list[int]:
    assert result.returncode == 0, result.stderr
    return [int(value) for value in result.stdout.splitlines()[0].split()]


@pytest.fixture
def pvm_tmp() -> Iterator[Path]:
    """A ``PVM_TMP`` of the test's own, short enough for the daemon's socket path."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="pvmtest-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def user_daemon(pvm_tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A PVM daemon started as a user starts one, in ``pvm_tmp``."""
    from multi.pvm_daemon import daemon_file, find_daemon

    environment = {**os.environ, "PVM_TMP": str(pvm_tmp), "PVM_ALLOW_ROOT": "1"}
    daemon = subprocess.Popen(
        [find_daemon()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        start_new_session=True,
    )
    socket_file = daemon_file(str(pvm_tmp))
    deadline = time.monotonic() + 15
    while not socket_file.exists() and daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert socket_file.exists(), "the PVM daemon did not start"
    yield daemon
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(10)


def test_a_running_daemon_is_joined_and_left_running(
    tmp_path: Path, pvm_tmp: Path, user_daemon: subprocess.Popen[bytes]
) -> None:
    result = run_master(tmp_path, pvm_tmp, "daemon=running")
    assert squares(result) == [i * i for i in range(20)]
    slave = int(result.stdout.splitlines()[1])
    assert survivors([slave]) == []  # the slaves left
    assert user_daemon.poll() is None  # and the user's daemon runs on


HALTED = textwrap.dedent(
    """
    from multi import load_multiprocessor
    from tests import workloads as w

    processor = load_multiprocessor("pvm", None, 2, verbosity=0, daemon="running")
    processor.run_command_globally(w.Pid())  # (both slaves have told the master who they are)
    processor.add_to_queue(w.Returns_halting_result())  # (which halts the master ...)
    processor.add_to_queue(w.Sleep(600))  # (... as the other slave sleeps)
    processor.run_queue()
    """
)


def test_slaves_killed_leave_no_files_with_the_users_daemon(
    tmp_path: Path, pvm_tmp: Path, user_daemon: subprocess.Popen[bytes]
) -> None:
    """libpvm removes a task's file in PVM_TMP as the task leaves PVM, and the daemon never:
    each slave that the master killed left one (pvmtmp<pid>.1) with the user's daemon."""
    script = tmp_path / "halted.py"
    script.write_text(HALTED)
    before = {path.name for path in pvm_tmp.iterdir()}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PVM_TMP": str(pvm_tmp)}, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "Halt" in result.stderr, result.stderr
    assert {path.name for path in pvm_tmp.iterdir()} == before


def test_auto_starts_a_daemon_of_its_own_where_none_runs_and_halts_it(
    tmp_path: Path, pvm_tmp: Path
) -> None:
    result = run_master(tmp_path, pvm_tmp)  # daemon=auto
    assert squares(result) == [i * i for i in range(20)]
    assert list(pvm_tmp.iterdir()) == []  # not in the user's PVM_TMP
    # (the leak check of conftest fails the test if its daemon or guardian lived on)


def test_a_stale_daemon_file_is_removed_and_the_run_goes_on(tmp_path: Path, pvm_tmp: Path) -> None:
    from multi.pvm_daemon import daemon_file

    stale = daemon_file(str(pvm_tmp))
    stale.write_text(str(pvm_tmp / "pvmtmp999999.0"))  # a daemon that is gone
    result = run_master(tmp_path, pvm_tmp)
    assert squares(result) == [i * i for i in range(20)]
    assert not stale.exists()


def test_daemon_running_where_none_runs_says_how_to_start_one(
    tmp_path: Path, pvm_tmp: Path
) -> None:
    result = run_master(tmp_path, pvm_tmp, "daemon=running")
    assert result.returncode == 1
    assert "no PVM daemon runs for this user" in result.stderr
    assert "daemon=own" in result.stderr


def test_bad_options_are_refused_with_the_reason(tmp_path: Path, pvm_tmp: Path) -> None:
    result = run_master(tmp_path, pvm_tmp, "hostfile=/no/such/hostfile")
    assert result.returncode == 1
    assert "option 'hostfile': there is no file '/no/such/hostfile'" in result.stderr
    result = run_master(tmp_path, pvm_tmp, "route=carrier-pigeon")
    assert result.returncode == 1 and "expected one of direct, daemon" in result.stderr


def test_messages_through_the_daemons_arrive_as_directly(tmp_path: Path, pvm_tmp: Path) -> None:
    assert squares(run_master(tmp_path, pvm_tmp, "route=daemon")) == [i * i for i in range(20)]


def test_a_host_file_is_given_to_the_daemon_of_its_own(tmp_path: Path, pvm_tmp: Path) -> None:
    import socket

    hosts = tmp_path / "hosts"
    hosts.write_text(f"# the only host there is here\n{socket.gethostname()}\nlocalhost\n")
    result = run_master(tmp_path, pvm_tmp, f"hostfile={hosts}")
    assert squares(result) == [i * i for i in range(20)]
    assert "MultiWarning" not in result.stderr  # (both names are this host, in the machine)
    result = run_master(tmp_path, pvm_tmp, f"hostfile={hosts}", "daemon=running")
    assert result.returncode == 1 and "a daemon that runs already has its hosts" in result.stderr


def test_a_host_of_the_host_file_that_pvm_cannot_add_is_told_and_the_others_run(
    tmp_path: Path, pvm_tmp: Path
) -> None:
    import socket

    hosts = tmp_path / "hosts"
    hosts.write_text(
        f"* lo=nobody\n{socket.gethostname()}\nno-such-host.invalid dx=/usr/bin/pvmd\n"
        "&only-described.invalid\n"
    )
    result = run_master(tmp_path, pvm_tmp, f"hostfile={hosts}")
    assert squares(result) == [i * i for i in range(20)]
    warning = result.stderr.replace("\n", " ")
    assert f"PVM could not add 1 host(s) of the host file {hosts}" in warning
    assert f"the slaves run on {socket.gethostname()} alone" in warning
    assert "no-such-host.invalid: " in warning
    assert "only-described" not in warning


def test_the_hosts_a_host_file_adds_at_start_are_read_as_pvm_reads_them() -> None:
    from multi.pvm_hosts import refusals, startup_hosts

    text = "# a comment\n\n* ep=/opt/bin\nalpha  dx=/x\n&beta\n  gamma.lab so=pw\n"
    assert startup_hosts(text) == ["alpha", "gamma.lab"]
    assert refusals(["a", "b", "c", "d"], [262144, -28, -30, -6]) == [
        "d: no such host (-6); check the name (it does not resolve here)"
    ]


def test_a_daemon_whose_master_ended_as_it_started_is_halted(tmp_path: Path) -> None:
    from multi.pvm_binding import allow_root
    from multi.pvm_daemon import find_daemon
    from multi.slave_process import program

    directory = tmp_path / "pvm"
    directory.mkdir(mode=0o700)
    environment = dict(os.environ, PVM_TMP=str(directory))
    environment.pop("PVM_VMID", None)
    allow_root(environment)
    guardian = subprocess.Popen(  # as Own_daemon starts it, for a master that ends at once
        [sys.executable, *program("multi.pvm_daemon:guard"), str(directory), find_daemon()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        start_new_session=True,
    )
    assert guardian.stdin is not None and guardian.stdout is not None
    guardian.stdout.close()  # (the master is gone before the daemon says it is ready)
    guardian.stdin.close()
    try:
        status = guardian.wait(30)
    finally:
        if guardian.poll() is None:
            os.killpg(guardian.pid, signal.SIGKILL)
    daemons = subprocess.run(["pgrep", "-s", str(guardian.pid)], capture_output=True, text=True)
    assert guardian.stderr is not None
    assert status == 0, guardian.stderr.read()
    assert daemons.stdout.split() == []  # (nothing is left of the guardian's session)
    assert not directory.exists()


@given(st.lists(st.binary(max_size=40), max_size=60))
def test_a_message_is_packed_in_few_pieces_that_hold_its_frames_in_order(
    frames: list[bytes],
) -> None:
    from multi.pvm_binding import MAX_PIECES, pieces

    packed = pieces([memoryview(frame) for frame in frames])
    assert len(packed) <= MAX_PIECES
    assert all(len(piece) for piece in packed)
    assert b"".join(packed) == b"".join(frames)
