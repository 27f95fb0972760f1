"""How many slaves this machine can start: a request beyond is refused before any starts.

A fabric whose slaves are threads or processes of this machine says so (``Processor.
slave_kind``); the processor asks ``most_slaves`` before it starts them, and ``make_room``
raises the soft limit of open files as far as the hard one for slave processes. Without the
check, a slip such as ``-n 100000`` started slaves for minutes, about twenty a second, until
the system refused one (a traceback) or something killed the master.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

#: File descriptors the master holds per slave process: its socket, its sentinel, the two
#: files its output goes to, and one more to spare.
DESCRIPTORS_PER_PROCESS = 5
#: And what it holds besides while it starts them: a forkserver's socket, the pipes of the
#: slave that starts (16 slaves took 8 more than their 80 under forkserver and spawn).
DESCRIPTORS_TO_START = 16


def most_slaves(kind: str) -> tuple[int, str] | None:
    """The most slave ``"thread"``s or ``"process"``es this process can start now, and the
    limit that says so; None where no limit can be read (not on Linux)."""
    limits: list[tuple[int, str]] = []
    tasks = _tasks_running()
    for name in ("kernel/pid_max", "kernel/threads-max"):
        value = _kernel(name)
        if value is not None and tasks is not None:
            why = f"the system runs {tasks} tasks of {value} (sysctl {name})"
            limits.append((value - tasks, why))
    if kind == "thread":
        maps = _kernel("vm/max_map_count")
        if maps is not None:  # (a thread's stack and its guard page: two mappings)
            limits.append((maps // 2, f"a thread takes two of this process's {maps} memory maps"))
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return min(limits, default=None)
    if os.geteuid() != 0:  # (root is not held to it)
        processes = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        if processes != resource.RLIM_INFINITY:  # (the user's, whose tasks are not counted)
            limits.append((processes, f"ulimit -u is {processes}"))
    if kind == "process":
        ceiling = _most_descriptors(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        if ceiling is not None:
            left = ceiling[0] - _descriptors_open() - DESCRIPTORS_TO_START
            limits.append((left // DESCRIPTORS_PER_PROCESS, f"{ceiling[1]}, and the master "
                           f"holds {DESCRIPTORS_PER_PROCESS} files per slave"))  # fmt: skip
    return min(limits, default=None)


def make_room(kind: str, slaves: int) -> None:
    """Raise this process's soft limit of open files (ulimit -n) where ``slaves`` slave
    processes would take more, as far as its hard limit allows: a program may raise its soft
    limit, which is often 1024 where the hard one is far higher, and slaves beyond it failed
    to start.

    It is raised as far as it may go, not to what the slaves take: the program keeps opening
    files of its own after the slaves have started, which a limit cut to the slaves' needs
    made fail (EMFILE) where the same request had been refused clearly before.
    """
    if kind != "process":
        return
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = _descriptors_open() + DESCRIPTORS_TO_START + slaves * DESCRIPTORS_PER_PROCESS
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    ceiling = _most_descriptors(hard)
    # (no ceiling that can be read: what they take, and as much again for the program's own)
    wanted = ceiling[0] if ceiling is not None else 2 * needed
    with suppress(ValueError, OSError):  # (a start that then fails says what to do)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _most_descriptors(hard: int) -> tuple[int, str] | None:
    """The most files this process may hold once it has raised its soft limit as far as it
    may, and the limit that says so (None: no limit that can be read)."""
    import resource

    if hard != resource.RLIM_INFINITY:
        why = "the hard limit of open files (ulimit -Hn), up to which the master raises ulimit -n"
        return hard, f"{why}, is {hard}"
    most = _kernel("fs/nr_open")  # (Linux's ceiling where the hard limit is unlimited)
    return None if most is None else (most, f"sysctl fs/nr_open is {most}")


def _kernel(name: str) -> int | None:
    try:
        return int(Path("/proc/sys", name).read_text())
    except (OSError, ValueError):
        return None


def _tasks_running() -> int | None:
    """The threads of every process on the system (what pid_max and threads-max bound)."""
    try:
        fields = Path("/proc/loadavg").read_text().split()
        return int(fields[3].split("/")[1])  # "running/total" tasks
    except (OSError, ValueError, IndexError):
        return None


def _descriptors_open() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0
