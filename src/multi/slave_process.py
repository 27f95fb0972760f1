"""What a slave started as a program of its own needs, whatever starts it (MPI's spawn, a PVM
daemon, a guardian): the command line that runs a function of this package in a fresh
interpreter, the master's place (module path, directory, arguments) to stand in, and an end
with its parent."""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from contextlib import suppress
from typing import Any

#: The directory that holds this package, put first on a new interpreter's path.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def program(function: str) -> list[str]:
    """The arguments of ``sys.executable`` that run ``function`` ("multi.module:name") in a
    fresh interpreter, this copy of the package first on its path."""
    module, _, name = function.partition(":")
    code = (
        f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); from {module} import {name}; {name}()"
    )
    return ["-c", code]


def master_place() -> dict[str, Any]:
    """What a slave needs to import what the master imports by name: its module path, its
    directory and its arguments. Not its main module, which the slave never runs: what it
    defines travels by value (see ``multi.wire``)."""
    cwd = os.getcwd()
    return {
        "sys_path": [cwd if entry == "" else entry for entry in sys.path],
        "cwd": cwd,
        "argv": list(sys.argv),
    }


def take_place(place: dict[str, Any], who: str) -> None:
    """Stand where the master stands. A directory that is not there (another host) is said on
    stderr: modules on the path still import."""
    sys.path[:] = place["sys_path"]
    sys.argv[:] = place["argv"]
    try:
        os.chdir(place["cwd"])
    except OSError as exc:
        print(
            f"multi: {who} could not enter the master's directory: {exc}",
            file=sys.stderr,
            flush=True,
        )


#: The signal the kernel sends a slave when its parent ends (see ``end_with_parent``).
PARENT_GONE = signal.SIGHUP
#: How often a slave looks whether its parent is still there, where the kernel cannot wake it.
PARENT_POLL_SECONDS = 0.5


def end_with_parent(watch: bool = True) -> None:
    """End this process when its parent ends, with what its commands started (``end_group``).

    A thread waits for the parent's end (unless the caller has a watch of its own: not
    ``watch``), and the kernel signals it too (Linux): whichever runs first ends the group.
    Not by SIGKILL from the kernel, which ended the slave alone before it could end its group:
    what its commands had started outlived the master (3 runs in 6, the master ended by
    SIGTERM). Either way needs Python to run, so compiled code that holds the interpreter
    delays it until it returns.
    """
    parent = os.getppid()
    if sys.platform == "linux":
        import ctypes

        try:
            signal.signal(PARENT_GONE, lambda number, frame: end_group())
        except ValueError:
            pass  # (not on the main thread: the watching thread serves alone)
        else:
            with suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(1, PARENT_GONE)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before the kernel was asked
        end_group()
    if watch:
        threading.Thread(target=_watch_parent, args=(parent,), name="multi-watch-parent",
                         daemon=True).start()  # fmt: skip


def _watch_parent(parent: int) -> None:
    try:
        gone = os.pidfd_open(parent)  # readable once the parent has ended
    except (AttributeError, OSError):
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
    else:
        watch = select.poll()  # (select would refuse a descriptor past 1023)
        watch.register(gone, select.POLLIN)
        watch.poll()
    end_group()


def end_what_commands_left(session: bool = False) -> None:
    """As a slave leaves, end what its commands started and left running: SIGTERM to its
    process group, which the caller ignores itself, where it leads one of its own (with
    ``session``, only where it leads a session of its own too)."""
    leader = os.getsid(0) if session else os.getpgrp()
    if leader != os.getpid():
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with suppress(OSError):
        os.killpg(0, signal.SIGTERM)


def end_group() -> None:
    """End this process, and its process group if it leads one (what its commands started)."""
    with suppress(OSError):
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
