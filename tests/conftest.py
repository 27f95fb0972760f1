"""The conformance suite's fixtures: one test body, bound to every fabric.

A fabric joins the suite by adding its name to ``FABRICS``. The suite also installs the
plug-in package of ``tests/plugin`` with pip, and runs on its fabric too. Every test is bounded
in time (pytest-timeout, see pyproject.toml) and checked for slaves left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from multi import Application_callback, Processor, Processor_box, Verbosity, load_multiprocessor
from multi.mpi4py_processor import named_mpi_memory

#: The process that runs the suite: the first to import this module. A slave imports it too,
#: with a test module that defines its commands, and has no use for ``_missing``, which would
#: start MPI there.
SUITE = int(os.environ.setdefault("MULTI_TEST_SUITE_PID", str(os.getpid())))


def _missing(fabric: str) -> str | None:
    """Why a built-in fabric cannot run here (what it needs is not installed), or None (in a
    slave process, always: see ``SUITE``)."""
    from multi import registry

    if os.getpid() != SUITE:
        return None

    try:
        registry.load(fabric).check_available()
    except (ImportError, OSError) as exc:
        return str(exc)
    return None


#: Why a fabric of the suite cannot run here, for those that cannot.
MISSING = {name: why for name in ("mpi4py", "pvm") if (why := _missing(name))}
MPI_MISSING = MISSING.get("mpi4py")
#: The fabrics that every conformance test runs on: those that run here.
FABRICS = ["uni", "thread", "multiprocessing"] + [
    name for name in ("mpi4py", "pvm") if name not in MISSING
]
PLUGIN = Path(__file__).parent / "plugin"
PLUGIN_FABRIC = "pickled_threads"

#: Slaves to ask for: two wherever a fabric can give more than one.
SLAVES = 2


def pytest_configure(config: pytest.Config) -> None:
    """Install the plug-in package, as a user would, where this session finds it; keep
    orphaned processes in view."""
    _adopt_orphans()
    work = tempfile.mkdtemp(prefix="multi-plugin-")
    config.stash[_plugin_dir] = work
    source, target = os.path.join(work, "source"), os.path.join(work, "installed")
    shutil.copytree(PLUGIN, source)  # pip builds in place: keep the build out of the tree
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", target, source],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    sys.path.insert(0, target)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [target, os.environ.get("PYTHONPATH")]))
    FABRICS.append(PLUGIN_FABRIC)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(_plugin_dir, ""), ignore_errors=True)


_plugin_dir = pytest.StashKey[str]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Bind every test that takes ``fabric`` to each fabric (those missing here shown skipped,
    with the reason)."""
    if "fabric" in metafunc.fixturenames:
        missing = [
            pytest.param(name, marks=pytest.mark.skip(f"{name} is not available: {why}"))
            for name, why in MISSING.items()
        ]
        metafunc.parametrize("fabric", FABRICS + missing)


@pytest.fixture(params=["multiprocessing", "mpi4py", "pvm"])
def replacing_fabric(request: pytest.FixtureRequest) -> str:
    """Each fabric whose slaves are processes that the master replaces (skipped where it cannot
    run here)."""
    if request.param in MISSING:
        pytest.skip(f"{request.param} is not available: {MISSING[request.param]}")
    return request.param  # type: ignore[no-any-return]


def slaves_for(fabric: str, wanted: int = SLAVES) -> int:
    """The processor_size to ask of a fabric: -1 (its only slave) for uni."""
    return -1 if fabric == "uni" else wanted


def run_master(
    fabric: str,
    body: Callable[[Processor], Any],
    size: int | None = None,
    verbosity: int = 0,
    **options: Any,
) -> Any:
    """Run ``body(processor)`` as the master program of a processor; return what it returns.

    An exception escaping ``body`` propagates to the caller instead of ending the program.
    """
    outcome: dict[str, Any] = {}

    class Master:
        def run(self) -> None:
            outcome["value"] = body(Processor_box().processor)

    callback = Application_callback(Master())

    def reraise(processor: Processor, exception: BaseException) -> None:
        raise exception

    callback.handle_exception = reraise
    processor = load_multiprocessor(
        fabric,
        callback,
        processor_size=slaves_for(fabric) if size is None else size,
        verbosity=verbosity,
        **options,
    )
    processor.run()
    return outcome.get("value")


#: Helpers that the master keeps for its life, and that are no slaves: multiprocessing's, and
#: the process manager that MPICH starts for a process that spawns (its slaves are checked).
HELPERS = (
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
    "-pmi_args",  # (mpiexec)
    "hydra_pmi_proxy",
)


def _slave(process: psutil.Process) -> bool:
    """Whether a child process is a live slave (not a zombie, nor a multiprocessing helper)."""
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        command = " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False
    return not any(helper in command for helper in HELPERS)


def _descendants() -> dict[int, psutil.Process]:
    """The live processes below this one (orphans included, see ``_adopt_orphans``), but the
    helpers a master keeps for its life."""
    found = {}
    for child in psutil.Process(os.getpid()).children(recursive=True):
        if _slave(child):
            found[child.pid] = child
    return found


def _adopt_orphans() -> None:
    """Become the child subreaper of this session (Linux): a process whose parent ends is
    re-parented here instead of to init, so that a grandchild left behind stays in view."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


#: Threads of libraries that live as long as the process once started, not the framework's.
LIBRARY_THREADS = ("TMonitor",)


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Fail a test that leaves behind a thread or a process that started during it (slaves,
    their threads, and what their commands started, however deep), or a shared memory file
    of MPI."""
    verbosity = Verbosity().level()
    threads_before = set(threading.enumerate())
    processes_before = set(_descendants())
    memory_before = named_mpi_memory()
    yield
    Verbosity().set(verbosity)
    deadline = time.monotonic() + 5
    while True:
        threads = [
            thread
            for thread in threading.enumerate()
            if thread not in threads_before
            and thread.is_alive()
            and not thread.name.startswith(LIBRARY_THREADS)
            and type(thread).__name__ not in LIBRARY_THREADS
        ]
        alive = [p for pid, p in _descendants().items() if pid not in processes_before]
        memory = sorted(named_mpi_memory() - memory_before)
        if not alive and not threads and not memory:
            return
        if time.monotonic() > deadline:
            for process in alive:
                process.kill()
            for path in memory:
                with suppress(OSError):
                    os.unlink(path)
            pytest.fail(f"left behind: processes {alive}, threads {threads}, MPI's memory {memory}")
        time.sleep(0.05)


def interrupt(
    command: list[str], running: int, env: dict[str, str] | None = None, group: bool = True
) -> tuple[int, str, set[int]]:
    """Start a program whose commands note in $STARTED that they run (and the child process
    each started); once ``running`` of them do, press Ctrl-C as a terminal does, to the
    program's whole process group (or, without ``group``, send SIGINT to the program alone).

    Return its status, its stderr, and its processes with the children of its commands (for
    ``survivors``).
    """
    started = Path(tempfile.mkdtemp(prefix="multi-started-"))
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        env={**(env or os.environ), "STARTED": str(started)},
        start_new_session=True,  # a group of its own, as a terminal's foreground job
    )
    try:
        programs = started_programs(started, running, process)
        processes = family(process.pid) | programs  # (once they run: they are all there)
        if group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGINT)
        status = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(started, ignore_errors=True)
    return status, process.stderr.read(), processes  # type: ignore[union-attr]


def started_programs(
    started: Path, count: int, program: subprocess.Popen[str], seconds: float = 30
) -> set[int]:
    """Wait until ``count`` commands of ``program`` have noted in ``started`` the pid of the
    child each started; return those pids."""
    deadline = time.monotonic() + seconds
    # (a note is counted once written: a command makes its file, then writes in it)
    while len(notes := [note for note in started.iterdir() if note.stat().st_size]) < count:
        assert program.poll() is None, program.communicate()
        assert time.monotonic() < deadline, "the commands did not start"
        time.sleep(0.02)
    return {int(note.read_text()) for note in notes}


def family(pid: int) -> set[int]:
    """A process and all its descendants."""
    try:
        return {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def survivors(pids: set[int] | list[int], seconds: float = 5.0) -> list[int]:
    """The processes still alive once ``seconds`` have passed, or as soon as none is."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
