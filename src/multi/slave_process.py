"""What a slave started as a program of its own needs, whatever starts it (MPI's spawn, a PVM
daemon, a guardian): the command line that runs a function of this package in a fresh
interpreter, the master's place (module path, directory, arguments) to stand in, and an end
with its parent."""

from __future__ import annotations

import os
import signal
import sys
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


def end_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux; elsewhere nothing)."""
    if sys.platform != "linux":
        return
    import ctypes

    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
