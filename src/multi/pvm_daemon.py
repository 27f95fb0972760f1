"""The PVM daemon a master works with: one that runs already for this user, or one of its own.

A daemon of its own lives in a fresh ``PVM_TMP`` (so no other daemon's files, stale or live,
are in its way) and is started by a small guardian process that halts it when the master ends,
however it ends: the guardian reads a pipe from the master and halts the daemon, which ends
every task of the virtual machine, when that pipe closes (a normal end, an exception, Ctrl-C,
or the master killed outright). The daemon runs in a session of its own, so Ctrl-C on the
terminal reaches the master alone, which stops the slaves in order.

A daemon that runs already is found through ``$PVM_TMP/pvmd.<uid>``, checked by connecting to
the socket it names: a file whose daemon is gone makes PVM's own calls wait ~16 s and fail, so
such a stale file is removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from functools import cache
from pathlib import Path

from multi.pvm_binding import INSTALL_HINT, allow_root
from multi.slave_process import program

#: Debian's name for the daemon (other builds install ``pvmd3`` under ``$PVM_ROOT/lib``).
DAEMONS = ("pvmd", "pvmd3")
START_SECONDS = 15.0


def find_daemon() -> str:
    """The path of the PVM daemon's program, or ``OSError`` saying how to install it."""
    root = os.environ.get("PVM_ROOT", "/usr/lib/pvm3")
    for name in DAEMONS:
        found = shutil.which(name) or shutil.which(name, path=os.path.join(root, "lib"))
        if found:
            return found
    raise OSError(f"the PVM daemon (pvmd) is not installed here: {INSTALL_HINT}")


def daemon_file(directory: str | None = None) -> Path:
    """Where a daemon of this user notes its socket (``PVM_VMID`` names one among several)."""
    directory = directory or os.environ.get("PVM_TMP") or "/tmp"
    vmid = os.environ.get("PVM_VMID")
    return Path(directory, f"pvmd.{os.getuid()}" + (f".{vmid}" if vmid else ""))


def remove_task_files(pid: int) -> None:
    """Remove what libpvm made in ``PVM_TMP`` for a task of this host that ended without
    leaving PVM (killed, crashed): libpvm removes it only as the task leaves, and the daemon
    never, so that a daemon the user runs gathered a file for each such slave."""
    directory = Path(os.environ.get("PVM_TMP") or "/tmp")
    for path in directory.glob(f"pvmtmp{pid:06d}.*"):
        with suppress(OSError):
            path.unlink()


def running_daemon() -> bool:
    """Whether a daemon of this user runs (for the ``PVM_TMP`` of this environment); a stale
    file of one that is gone is removed."""
    path = daemon_file()
    try:
        address = path.read_text().strip()
    except OSError:
        return False
    if _accepts(address):
        return True
    path.unlink(missing_ok=True)
    return False


def _accepts(address: str) -> bool:
    """Whether a daemon listens on ``address`` (a unix socket's path, or ``host:port`` in hex
    as older daemons write it)."""
    try:
        if address.startswith("/"):
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(1.0)
                probe.connect(address)
        else:
            host, _, port = address.partition(":")
            with socket.create_connection((socket.inet_ntoa(bytes.fromhex(host)[::-1]),
                                           int(port, 16)), 1.0):  # fmt: skip
                pass
    except (OSError, ValueError):
        return False
    return True


@cache
def own_directory() -> str:
    """The ``PVM_TMP`` of the daemons this process starts: one for the process's life, as
    libpvm reads ``PVM_TMP`` once. Short: the daemon's unix socket lies in it, and a socket's
    path must stay under 108 bytes."""
    return tempfile.mkdtemp(prefix="multi-pvm-", dir="/tmp")


class Own_daemon:
    """A daemon started for one master, halted when the master ends (see the module)."""

    def __init__(self, hostfile: str | None = None) -> None:
        daemon = find_daemon()
        self.directory = own_directory()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        environment = dict(os.environ, PVM_TMP=self.directory)
        environment.pop("PVM_VMID", None)
        allow_root(environment)
        arguments = [daemon] + ([os.path.abspath(hostfile)] if hostfile else [])
        self.guardian = subprocess.Popen(
            [sys.executable, *program("multi.pvm_daemon:guard"), self.directory, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
            start_new_session=True,
        )
        assert self.guardian.stdout is not None
        try:
            answer = self.guardian.stdout.readline().decode(errors="replace").strip()
        except BaseException:  # (Ctrl-C while the daemon starts: it is halted as it comes up)
            self.halt()
            raise
        if answer != "ready":
            self.halt()
            raise OSError(f"the PVM daemon did not start: {answer or 'no word from it'}")

    def halt(self, timeout: float = 10.0) -> None:
        """Halt the daemon (which ends every task it runs) and remove its files."""
        guardian = self.guardian
        if guardian.stdin is not None and not guardian.stdin.closed:
            guardian.stdin.close()
        try:
            guardian.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(guardian.pid, signal.SIGKILL)
            guardian.wait()
        if guardian.stdout is not None:
            guardian.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def guard() -> None:
    """The guardian's program: start the daemon, say ``ready`` once it accepts connections,
    and halt it once the master's pipe closes."""
    directory, program, *arguments = sys.argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(os.path.join(directory, "pvmd.log"), "wb") as log:
        daemon = subprocess.Popen(
            [program, *arguments], stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=directory
        )
    deadline = time.monotonic() + START_SECONDS
    path = daemon_file(directory)
    while True:
        if daemon.poll() is not None:
            print(f"pvmd exited with status {daemon.returncode}: {_tail(directory)}", flush=True)
            return
        if path.exists() and _accepts(path.read_text().strip()):
            break
        if time.monotonic() > deadline:
            daemon.kill()
            print(f"pvmd gave no socket within {START_SECONDS:g} s: {_tail(directory)}")
            return
        time.sleep(0.01)
    try:
        print("ready", flush=True)
    except BrokenPipeError:  # the master ended while the daemon started: halt it at once
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (nothing to flush)
    else:
        sys.stdin.buffer.read()  # until the master ends
    _halt(daemon)
    shutil.rmtree(directory, ignore_errors=True)


def _halt(daemon: subprocess.Popen[bytes]) -> None:
    """End the daemon and its tasks with what they started. Not by SIGTERM to the daemon
    where that can be helped: it would also end the master, if the daemon has not yet taken
    in that the master left; its tasks (its children, each leading a process group) are
    killed, then the daemon."""
    if not os.path.isdir("/proc"):
        daemon.terminate()
    else:
        for child in _children(daemon.pid):
            with suppress(OSError):
                os.killpg(child, signal.SIGKILL) if os.getpgid(child) == child else os.kill(
                    child, signal.SIGKILL
                )
        daemon.kill()
    try:
        daemon.wait(5.0)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry))
    return found


def _tail(directory: str) -> str:
    """The last lines the daemon wrote, for an error message."""
    text = ""
    for name in ("pvmd.log", f"pvml.{os.getuid()}"):
        with_path = Path(directory, name)
        if with_path.exists():
            text += with_path.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-4:]) or "(it wrote nothing)"
