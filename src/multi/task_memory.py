"""The memory where a slave process shows which command it runs, and since when.

A slave writes it as each command starts, with no system call; a process that shares its host
and maps the same memory (the guard of an MPI slave, a master on the same host) reads it when
the slave dies or overruns its timeout. A message saying the same would reach the master only
after a while: a death in the middle of a batch of quick commands would be blamed on the last
command that a message named, which had finished.

The memory holds the command's id, or what the slave does between commands (``IDLE``,
``UNPACKING``, ``RETURNING`` and below, ``LEFT``), and since when, by ``time.monotonic()``, a
clock that every process of a host shares.
"""

from __future__ import annotations

import mmap
import os
import struct
import time

from multi import descriptors

#: The command's id, and when it started.
TASK = struct.Struct("qd")
#: The id while the slave waits for work: a death then is no command's doing.
IDLE = -1
#: The id of a slave of an MPI job that left as told (``multi.mpi4py_processor``).
LEFT = -2
#: The id while the slave rebuilds a batch that has arrived, before its first command: a
#: death then is the doing of the batch (a command whose unpickling crashes, or takes more
#: memory than there is), though of no command that ran.
UNPACKING = -3
#: The id while the slave pickles and sends the report of a batch, after its last command: a
#: death then is the doing of the batch's results (one whose pickling crashes, or takes more
#: memory than there is), though of no command that runs. Below it, the id names the batch
#: too (``returning``): a slave that died once its report had gone holds the next batch.
RETURNING = -4


def returning(first: int) -> int:
    """The id while the slave returns the results of the batch whose first command is
    ``first`` (one of the master's commands, ``first >= 0``; else a batch it does not name)."""
    return RETURNING - 1 - first if first >= 0 else RETURNING


def stage(task: int) -> tuple[str | None, int | None]:
    """What a slave that showed ``task`` did with a batch, where a death then is the batch's
    doing ("unpickling" it, "returning the results of" it, else None), and the first command
    of the batch where the id names it."""
    if task == UNPACKING:
        return "unpickling", None
    if task <= RETURNING:
        return "returning the results of", (RETURNING - 1 - task if task < RETURNING else None)
    return None, None


def shared(fd: int | None = None) -> mmap.mmap:
    """The memory, in the file ``fd`` (made the right size), else in memory that only the
    children this process forks will share; no command runs yet."""
    if fd is None:
        memory = mmap.mmap(-1, TASK.size)
    else:
        os.ftruncate(fd, TASK.size)
        memory = mmap.mmap(fd, TASK.size)
    TASK.pack_into(memory, 0, IDLE, 0.0)
    return memory


def unnamed() -> tuple[int, mmap.mmap]:
    """The memory in a file without a name, and its descriptor: a process on this host maps
    it through ``of_process``; nothing stays behind however the processes end."""
    fd = descriptors.unnamed_file()
    return fd, shared(fd)


def of_process(pid: int, fd: int) -> mmap.mmap | None:
    """The memory of process ``pid``, in its file ``fd``, mapped here (Linux: /proc)."""
    return mapped(f"/proc/{pid}/fd/{fd}")


def mapped(path: str) -> mmap.mmap | None:
    """The memory in the file at ``path``, mapped here for reading; None where that cannot
    be done (the file is gone, or was never made the right size)."""
    try:
        with open(path, "rb") as file:
            return mmap.mmap(file.fileno(), TASK.size, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def write(memory: mmap.mmap, task_id: int) -> None:
    """Show that the command ``task_id`` starts now (``IDLE``: none runs)."""
    TASK.pack_into(memory, 0, task_id, time.monotonic())


def read(memory: mmap.mmap) -> tuple[int, float]:
    """The command that runs and since when, read until two reads agree (it may be written
    meanwhile)."""
    while (found := TASK.unpack_from(memory, 0)) != TASK.unpack_from(memory, 0):
        pass
    return found
