"""A master's own directories in the temporary folder, and the sweeping up of those that a
master killed by a signal left there.

A master removes its directories as it exits. One ended by a signal cannot: ``mpiexec`` ends
every process of a job with SIGTERM, then SIGKILL, when one of them dies; so do a batch
system at the end of a job's time and a test runner's timeout. Each name therefore says which
host and process made it, and a master that makes a directory of a kind first removes those
of the same kind whose process is gone from this host.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import stat
import tempfile


def directory(kind: str) -> str:
    """A new directory of this process, removed as it exits; ``kind`` begins its name
    (``multi-mpi-deaths-``, say). Those of the same kind that processes of this host left as
    they ended go first (``sweep``)."""
    sweep(kind)
    made = tempfile.mkdtemp(prefix=f"{kind}{socket.gethostname()}-{os.getpid()}-")
    atexit.register(shutil.rmtree, made, ignore_errors=True)
    return made


def sweep(kind: str, folder: str | None = None) -> list[str]:
    """Remove the directories of ``kind`` in ``folder`` (the temporary folder) that this
    user's processes of this host left as they ended; return their paths.

    A directory is left alone unless its name is exactly as ``directory`` makes it here (a
    host whose name begins as this one's does not match), it belongs to this user, and its
    process is gone.
    """
    folder = tempfile.gettempdir() if folder is None else folder
    mine = f"{kind}{socket.gethostname()}-"
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        if not name.startswith(mine):
            continue
        parts = name[len(mine) :].split("-")  # (mkdtemp's own part has no hyphen)
        if len(parts) != 2 or not parts[0].isdigit() or _alive(int(parts[0])):
            continue
        path = os.path.join(folder, name)
        try:
            found = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
