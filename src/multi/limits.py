"""How many slaves this machine can start: a request beyond is refused before any starts.

A fabric whose slaves are threads or processes of this machine says so (``Processor.
slave_kind``); the processor asks ``most_slaves`` before it starts them. Without the check, a
slip such as ``-n 100000`` started slaves for minutes, about twenty a second, until the system
refused one (a traceback) or something killed the master.
"""

from __future__ import annotations

import os
from pathlib import Path

#: File descriptors the master holds per slave process: its socket, its sentinel, the two
#: files its output goes to, and one more to spare.
DESCRIPTORS_PER_PROCESS = 5


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
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if descriptors != resource.RLIM_INFINITY:
            left = descriptors - _descriptors_open()
            limits.append((left // DESCRIPTORS_PER_PROCESS, f"ulimit -n is {descriptors}, and "
                           f"the master holds {DESCRIPTORS_PER_PROCESS} per slave"))  # fmt: skip
    return min(limits, default=None)


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
