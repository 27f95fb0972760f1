"""A master's directories in the temporary folder: removed as it exits, and, where a signal
ended it first, by the next master of the host that makes one of the same kind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from multi import scratch

KIND = "multi-test-"
SECONDS = 60

MAKE_THEN_END = """
import os, signal, sys
from multi import scratch
print(scratch.directory(sys.argv[1]), flush=True)
if sys.argv[2] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def made_by_a_process(folder: Path, how: str, kind: str = KIND) -> tuple[Path, int]:
    """The directory that a process made in ``folder`` before it ended (``how``: "exits" or
    "killed"), and how it ended."""
    done = subprocess.run(
        [sys.executable, "-c", MAKE_THEN_END, kind, how],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(folder)},
        timeout=SECONDS,
    )
    return Path(done.stdout.strip()), done.returncode


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def gone_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_directory_names_its_host_and_process_and_goes_as_the_process_exits(
    folder: Path,
) -> None:
    made, status = made_by_a_process(folder, "exits")
    assert status == 0
    assert made.parent == folder
    assert made.name.startswith(f"{KIND}{socket.gethostname()}-")
    assert made.name.split("-")[-2].isdigit()
    assert not made.exists()


def test_one_left_by_a_killed_process_goes_when_the_next_of_its_kind_is_made(
    folder: Path,
) -> None:
    left, status = made_by_a_process(folder, "killed")
    other_kind, _ = made_by_a_process(folder, "killed", kind="multi-other-")
    assert status == -signal.SIGKILL
    assert left.is_dir()
    (left / "bell").write_text("")  # (what a master leaves there)
    made = scratch.directory(KIND)
    assert not left.exists()
    assert other_kind.is_dir()  # another kind is left to its own
    assert sorted(folder.iterdir()) == sorted([Path(made), other_kind])


def test_a_sweep_leaves_live_processes_other_hosts_and_other_names_alone(folder: Path) -> None:
    host = socket.gethostname()
    kept = [
        f"{KIND}{host}-{os.getpid()}-abc",  # this process
        f"{KIND}{host}-1-abc",  # a live process (init)
        f"{KIND}{host}x-{gone_pid()}-abc",  # a host whose name begins as this one's
        f"{KIND}{host}-{gone_pid()}-a-b",  # a name that directory() does not make
        f"{KIND}{host}-{gone_pid()}",
        f"{KIND}{host}-x{gone_pid()}-abc",
        f"multi-other-{host}-{gone_pid()}-abc",
    ]
    gone = f"{KIND}{host}-{gone_pid()}-abc"
    for name in [*kept, gone]:
        (folder / name).mkdir()
    (folder / f"{KIND}{host}-{gone_pid()}-file").write_text("")  # a file: not ours
    assert scratch.sweep(KIND) == [str(folder / gone)]
    assert not (folder / gone).exists()
    assert all((folder / name).is_dir() for name in kept)


def test_a_sweep_of_a_folder_that_cannot_be_read_removes_nothing(tmp_path: Path) -> None:
    assert scratch.sweep(KIND, str(tmp_path / "missing")) == []
