"""The mpi4py fabric launched by ``mpiexec -n 3``, and how a program started alone gets its
slaves or is told how to launch. (The conformance suite runs it started alone: see
``FABRICS`` in conftest.py.) Every run is bounded in time and leaves no process behind.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from multi.mpi4py_processor import named_mpi_memory
from tests.conftest import MPI_MISSING, family, interrupt, survivors
from tests.test_lifecycle import INTERRUPTED, UNHANDLED

pytestmark = pytest.mark.skipif(bool(MPI_MISSING), reason=f"MPI is not available: {MPI_MISSING}")

ROOT = Path(__file__).parent.parent
APP = ROOT / "tests" / "apps" / "seed_app.py"
CHECKS = ROOT / "tests" / "apps" / "mpi_checks.py"
SECONDS = 60
#: The mpiexec option (MPICH) under which a job survives a slave's death.
SURVIVE = "-disable-auto-cleanup"
DEATH = str(ROOT / "tests" / "apps" / "mpi_death.py")
#: What tests/apps/mpi_death.py prints once the command that killed its slave ran again, and
#: then where the dead slave was replaced, or was not.
SURVIVED = "[0, 1, 4, 9, 16, 25, ('survived', 6), 49, 64, 81, 100, 121] 1\n"
REPLACED = SURVIVED + "ranks serving: 2 replaced: True\n"
NOT_REPLACED = SURVIVED + "ranks serving: 1 replaced: False\n"
DEATHS = [signal.SIGKILL, signal.SIGSEGV]


def mpiexec() -> str:
    from multi.mpi4py_processor import _find_mpiexec

    found = _find_mpiexec()
    if found is None:
        pytest.skip("no mpiexec here")
    return found


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in a session of its own; check that none of its processes outlive it."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    processes: set[int] = set()
    try:
        deadline = time.monotonic() + SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            processes |= family(process.pid)
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert survivors(processes) == []
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def under_mpiexec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(mpiexec(), "-n", "3", sys.executable, *args, env=env)


@pytest.fixture(scope="module")
def uni_output() -> str:
    result = run(sys.executable, str(APP), "uni", "-1", "0")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_seed_application_under_mpiexec_gives_the_uni_output(uni_output: str) -> None:
    result = under_mpiexec(str(APP), "mpi4py", "-1", "0")
    assert (result.returncode, result.stdout, result.stderr) == (0, uni_output, "")


def test_the_contract_holds_under_mpiexec() -> None:
    result = under_mpiexec(str(CHECKS))
    assert result.returncode == 0, result.stderr
    assert "all checks passed" in result.stdout
    assert result.stdout.count("after run() on rank") == 1  # slaves do not go on past run()
    assert "running via mpi4py with 2 slave processors & 1 master. Using " in result.stdout


def test_under_mpiexec_parallel_calls_share_the_ranks_and_a_second_executor_is_refused() -> None:
    pytest.importorskip("joblib")
    result = under_mpiexec(str(ROOT / "tests" / "apps" / "mpi_joblib.py"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "failed: no square of a negative number here", "first 285", "second 285", "-1 285",
        "4 285",
    ]  # fmt: skip
    assert lines[5].startswith("refused: the slaves of this MPI job (ranks 1 to 2) serve the first")
    assert "start the program alone" in lines[5]


EXECUTORS_IN_THREADS = """
import threading
from multi import Executor

def double(x):
    return 2 * x

sums = {}

def in_thread(k):
    with Executor("mpi4py", max_workers=2, verbosity=0) as pool:
        sums[k] = sum(pool.map(double, range(100)))

threads = [threading.Thread(target=in_thread, args=(k,)) for k in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(sorted(sums.items()))
"""


AFTER_A_REFUSED_EXECUTOR = """
from mpi4py import MPI
from multi import Executor

try:
    Executor("mpi4py", verbosity=0, retries=-1)  # (refused on every rank)
except ValueError as error:
    refused = str(error)
with Executor("mpi4py", verbosity=0) as pool:  # (ranks 1 and 2 serve it, then end)
    print(refused, sum(pool.map(abs, range(-10, 0))), MPI.COMM_WORLD.Get_rank())
"""


def test_under_mpiexec_a_processor_refused_as_it_was_made_leaves_the_ranks_to_the_next() -> None:
    result = under_mpiexec("-c", AFTER_A_REFUSED_EXECUTOR)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "option 'retries': expected a whole number >= 0, not '-1' 55 0\n"


def test_under_mpiexec_a_program_ended_by_a_refused_processor_leaves_no_shared_memory() -> None:
    """(MPICH's file in /dev/shm, whose name a processor took off once made: the fixture
    ``nothing_left_behind`` finds it.)"""
    code = "from multi import load_multiprocessor\nload_multiprocessor('mpi4py', None, timeout=3)\n"
    result = under_mpiexec("-m", "mpi4py", "-c", code)  # (which aborts the job on an error)
    assert result.returncode != 0
    assert result.stderr.count("cannot stop a command that runs too long here") == 1


QUEUED_BY_EVERY_RANK = """
import os, sys
from multi import Application_callback, load_multiprocessor
from tests import workloads as w

class Main:
    def run(self):
        pass

processor = load_multiprocessor("mpi4py", Application_callback(Main()), verbosity=0)
try:
    processor.add_to_queue(w.Noop())
except Exception as error:  # (a file each: lines of two ranks at once may cross on stdout)
    with open(os.path.join(sys.argv[1], str(processor.rank())), "w") as told:
        told.write(f"{type(error).__name__}: {error}")
processor.run()
"""


def test_under_mpiexec_the_slave_ranks_are_told_that_queueing_is_the_masters(
    tmp_path: Path,
) -> None:
    """(Every rank runs the program up to run(): the slave ranks were told of a thread.)"""
    result = under_mpiexec("-c", QUEUED_BY_EVERY_RANK, str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = [told.read_text() for told in sorted(tmp_path.iterdir())]
    assert [line[:54] for line in lines] == [
        "MultiError: add_to_queue() was called on rank 1, a sla",
        "MultiError: add_to_queue() was called on rank 2, a sla",
    ]
    assert all("where processor.rank() == 0" in line for line in lines)


REFUSED_ON_THE_SLAVE_RANKS = """
import os, sys
from mpi4py import MPI
from multi import Executor, MultiError

rank = MPI.COMM_WORLD.Get_rank()
folder = sys.argv[1] if rank == 0 else os.path.join(sys.argv[1], "not on this node")
try:
    Executor("mpi4py", verbosity=0, timeline=os.path.join(folder, "trace.json"))
except (ValueError, MultiError) as error:
    refused = f"{type(error).__name__}: {error}"
with Executor("mpi4py", verbosity=0) as pool:  # (ranks 1 and 2 serve it, then end)
    print(refused, sum(pool.map(abs, range(-10, 0))), rank)
"""


def test_under_mpiexec_a_processor_refused_on_some_ranks_only_is_refused_on_every_one(
    tmp_path: Path,
) -> None:
    # The master went on alone, into collectives that the ranks which refused never joined:
    # the job hung until the test's timeout.
    result = under_mpiexec("-c", REFUSED_ON_THE_SLAVE_RANKS, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "MultiError: the mpi4py processor was refused on rank 1 of this MPI job, which every "
        "rank must make alike: ValueError: option 'timeline': "
    )
    assert result.stdout.endswith(" 55 0\n")


MADE_IN_A_THREAD = """
import threading
from mpi4py import MPI
from multi import Executor

def in_thread():
    with Executor("mpi4py", verbosity=0) as pool:
        print(sum(pool.map(abs, range(-10, 0))))

thread = threading.Thread(target=in_thread)
thread.start()
thread.join()
with Executor("mpi4py", verbosity=0) as pool:  # (the ranks were left to the next)
    print(sum(pool.map(abs, range(-10, 0))), MPI.COMM_WORLD.Get_rank())
"""


def test_under_mpiexec_a_first_executor_made_in_a_thread_is_refused_on_every_rank() -> None:
    # The slaves' guards failed in the thread, half-way: the job hung.
    result = under_mpiexec("-c", MADE_IN_A_THREAD)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "55 0\n"
    assert result.stderr.count("Traceback") == 1, result.stderr  # (the master's thread's)
    assert result.stderr.count("makes the program's first mpi4py processor or executor in its "
                                "main thread") == 1  # fmt: skip


UNCAUGHT_REFUSAL = """
from multi import Application_callback, load_multiprocessor
load_multiprocessor("mpi4py", Application_callback(None), retries=-1).run()
"""


def test_under_mpiexec_a_refusal_that_nothing_catches_is_told_once_by_the_master() -> None:
    # Every rank printed its traceback, and every slave's guard took its end for a death
    # that might end the job.
    result = under_mpiexec("-c", UNCAUGHT_REFUSAL)
    assert result.returncode == 1
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert result.stderr.count("expected a whole number >= 0, not '-1'") == 1
    assert "multi: slave" not in result.stderr


def test_started_alone_executors_made_in_threads_at_once_spawn_their_slaves(
    tmp_path: Path,
) -> None:
    # Each spawn set PATH for MPICH and rewrote the mpiexec it runs under the others' spawns.
    script = tmp_path / "threads.py"
    script.write_text(EXECUTORS_IN_THREADS)
    result = run(sys.executable, str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[(0, 9900), (1, 9900), (2, 9900)]\n"


def test_under_mpiexec_what_commands_left_running_ends_with_the_job() -> None:
    env = {"PYTHONPATH": str(ROOT)}
    result = under_mpiexec(str(ROOT / "tests" / "apps" / "mpi_children.py"), env=env)
    assert result.returncode == 0, result.stderr
    children = [int(pid) for pid in result.stdout.split()]
    assert len(children) == 4
    assert survivors(children) == []


@pytest.mark.parametrize("status", [0, 3])
def test_sys_exit_on_the_master_is_the_status_of_mpiexec(status: int) -> None:
    result = under_mpiexec(str(APP), "mpi4py", "-1", "1", str(status))
    assert result.returncode == status, result.stderr
    assert result.stdout.count("Overall runtime") == 1


@pytest.mark.parametrize("how", ["processor.exit", "sys.exit"])
@pytest.mark.parametrize("where", ["python", "deaf"])
@pytest.mark.parametrize("status", [0, 3])
def test_exit_from_a_result_keeps_its_status_while_a_slave_is_busy(
    status: int, where: str, how: str
) -> None:
    result = under_mpiexec(str(ROOT / "tests" / "apps" / "mpi_exit.py"), str(status), where, how)
    assert result.returncode == status, result.stderr
    assert "not reached" not in result.stdout
    if where == "deaf":  # nothing interrupts it: the job ends, with the program's status
        assert f"did not stop within 2 s: ending the MPI job with status {status}" in result.stderr


@pytest.mark.parametrize("where", ["python", "deaf"])
def test_ctrl_c_while_results_run_ends_the_program_with_a_failure(where: str) -> None:
    result = under_mpiexec(str(ROOT / "tests" / "apps" / "mpi_exit.py"), "0", where, "interrupt")
    assert result.returncode != 0
    assert "not reached" not in result.stdout
    if where == "deaf":  # the job ends before the master could print its traceback
        assert "did not stop within 2 s: ending the MPI job with status 1" in result.stderr
    else:
        assert "KeyboardInterrupt" in result.stderr


def test_a_slave_that_stops_answering_is_given_up_and_its_command_runs_elsewhere(
    tmp_path: Path,
) -> None:
    app = str(ROOT / "tests" / "apps" / "mpi_hung.py")
    result = under_mpiexec(app, str(tmp_path / "stopped"), env={"MULTI_MPI4PY_LIVENESS": "2"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[0, 1, ('survived', 2), 9, 16, 25] 1\n")
    assert "were given up: ending the MPI job with status 0" in result.stderr


def test_an_unhandled_exception_aborts_the_job_with_a_failure() -> None:
    result = under_mpiexec("-c", UNHANDLED, "mpi4py")
    assert result.returncode == 1
    assert "LookupError: nothing here" in result.stderr
    assert "not reached" not in result.stdout


def test_a_size_that_mpiexec_did_not_give_is_a_warning_from_the_master_alone() -> None:
    result = under_mpiexec(str(APP), "mpi4py", "5", "0")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("MultiWarning") == 1
    assert "runs 2 slaves, as mpiexec started 3 processes, not the 5 asked for" in result.stderr


def interrupted_under_mpiexec(
    tmp_path: Path, program: str, group: bool = True, ranks: int = 3
) -> tuple[int, str, set[int]]:
    """Run ``program`` under ``mpiexec -n 3`` (or ``ranks``: with 1, the master spawns its
    slaves) and interrupt it once two of its commands run (see ``interrupt``: Ctrl-C to its
    group, or with ``group`` false SIGINT to mpiexec)."""
    script = tmp_path / "interrupted.py"
    script.write_text(program)
    command = [mpiexec(), "-n", str(ranks), sys.executable, str(script), "mpi4py"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return interrupt(command, running=2, env=env, group=group)


def test_ctrl_c_on_mpiexec_ends_every_rank(tmp_path: Path) -> None:
    status, stderr, processes = interrupted_under_mpiexec(tmp_path, INTERRUPTED)
    assert len(processes) >= 4  # mpiexec, its proxy and the three ranks
    assert status != 0
    assert "KeyboardInterrupt" in stderr
    assert survivors(processes) == []


@pytest.mark.parametrize(
    ("ranks", "group"), [(3, False), (1, False), (1, True)],
    ids=["-n 3", "-n 1", "-n 1, ctrl-c"],
)  # fmt: skip
def test_sigint_to_mpiexec_ends_the_job_with_the_status_of_ctrl_c(
    tmp_path: Path, ranks: int, group: bool
) -> None:
    # (as a batch system or `kill -INT` sends it: mpiexec passes it on to every rank; the
    # master dying by it had mpiexec kill the slaves as they left, and report 2 | 9 as a
    # segmentation fault; alone with slaves it spawned, as a bad termination, status 2)
    status, stderr, processes = interrupted_under_mpiexec(tmp_path, INTERRUPTED, group, ranks)
    assert status == 128 + signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr
    assert survivors(processes) == []


@pytest.mark.parametrize("at_exit", [False, True], ids=["in a with block", "at exit"])
@pytest.mark.parametrize("group", [True, False], ids=["ctrl-c", "sigint-to-mpiexec"])
def test_ctrl_c_on_mpiexec_ends_an_executor_without_news_of_deaths(
    tmp_path: Path, group: bool, at_exit: bool
) -> None:
    # Each slave, interrupted too, reported itself lost before the master said stop: "slave 1
    # was ended by KeyboardInterrupt ... which runs again (attempt 2 of 3)", as all ended. At
    # exit, the master died by SIGINT, and mpiexec reported a segmentation fault (status 11).
    from tests import test_executor  # (which imports this module)

    program = test_executor.INTERRUPTED_AT_EXIT if at_exit else test_executor.INTERRUPTED
    status, stderr, processes = interrupted_under_mpiexec(tmp_path, program, group)
    assert status == 128 + signal.SIGINT, stderr
    assert ("Ctrl-C as the program ended" if at_exit else "KeyboardInterrupt") in stderr
    assert "multi: slave" not in stderr
    assert survivors(processes) == []


ALONE = textwrap.dedent(
    """
    import sys
    from multi import Application_callback, Processor_box, load_multiprocessor
    from tests import workloads as w

    class Main:
        def run(self):
            processor = Processor_box().processor
            memo = w.Record()
            for x in range(20):
                processor.add_to_queue(w.Square(x), memo)
            processor.run_queue()
            print(processor.processor_size(), sorted({rank for rank, _ in memo.values}))
            bell = processor._transport._bell  # (which slaves ring it, once their rings came)
            for _ in range(10):
                if bell is not None and len(bell.rang) < processor.processor_size():
                    bell.sleep(1.0)
            print("rang", sorted(bell.rang) if bell is not None else None)

    if __name__ == "__main__":
        load_multiprocessor("mpi4py", Application_callback(Main()), int(sys.argv[1])).run()
    """
)


@pytest.fixture
def alone(tmp_path: Path) -> Path:
    script = tmp_path / "alone.py"
    script.write_text(ALONE)
    return script


def test_started_alone_the_program_can_run_itself_again_under_mpiexec(alone: Path) -> None:
    env = {"MULTI_MPI4PY_LAUNCH": "mpiexec", "PYTHONPATH": str(ROOT)}
    result = run(sys.executable, str(alone), "2", env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("2 [1, 2]\n")
    assert "Overall runtime" in result.stdout


def test_started_alone_without_launching_it_says_how_to_launch(alone: Path) -> None:
    env = {"MULTI_MPI4PY_LAUNCH": "none", "PYTHONPATH": str(ROOT)}
    for command in ([sys.executable], [mpiexec(), "-n", "1", sys.executable]):
        result = run(*command, str(alone), "2", env=env)
        assert result.returncode == 1
        assert "ProcessorSizeError" in result.stderr
        assert "mpiexec -n 3 python app.py" in result.stderr


#: Ctrl-C as a spawned slave starts, once, as Python imports ``site``: to the mpiexec started
#: for it (which passes it on to the slave) and to the master's group, as a terminal's Ctrl-C
#: that comes before that mpiexec has left the master's group.
CTRL_C_AS_A_SLAVE_STARTS = """
import os, signal, sys
if "spawned_slave_main" in " ".join(sys.orig_argv):
    try:
        os.close(os.open(os.environ["MULTI_TEST_PRESSED"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        pass
    else:
        def parent(pid):
            with open(f"/proc/{pid}/stat") as stat:
                return int(stat.read().rsplit(")", 1)[1].split()[1])
        mpiexec = parent(parent(os.getpid()))  # (its proxy's parent)
        os.kill(mpiexec, signal.SIGINT)
        os.killpg(os.getpgid(parent(mpiexec)), signal.SIGINT)
"""


def test_started_alone_ctrl_c_as_a_slave_starts_ends_the_program(
    alone: Path, tmp_path: Path
) -> None:
    # Before: the slave died as it started, its mpiexec too, and the master waited for it in
    # MPICH's spawn (accept) for ever.
    (tmp_path / "sitecustomize.py").write_text(CTRL_C_AS_A_SLAVE_STARTS)
    pressed = tmp_path / "pressed"
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "MULTI_TEST_PRESSED": str(pressed)}
    result = run(sys.executable, str(alone), "2", env=env)
    assert pressed.exists()
    assert result.returncode in (130, -signal.SIGINT)  # (the same status to a shell)
    assert "KeyboardInterrupt" in result.stderr


DIES_AS_IT_STARTS_MPI = """
import os, signal, sys
from multi import Application_callback, load_multiprocessor

class Dies_as_it_starts_mpi:  # (after its guard forked)
    def find_spec(self, name, path, target=None):
        if name == "mpi4py.MPI":
            os.kill(os.getpid(), int(sys.argv[1]))

if os.environ["PMI_RANK"] == "1":
    sys.meta_path.insert(0, Dies_as_it_starts_mpi())

class Main:
    def run(self):
        print("the master ran", flush=True)

load_multiprocessor("mpi4py", Application_callback(Main()), -1, verbosity=0).run()
"""


@pytest.mark.parametrize("number", [signal.SIGKILL, signal.SIGINT])
def test_a_slave_that_dies_before_it_joins_its_master_ends_the_job(number: int) -> None:
    # Its guard exited with 128 + the signal, and the others waited in MPI_Init for ever (a
    # Ctrl-C as mpiexec started the ranks hung so, as one slave died of it before the others).
    before = named_mpi_memory()
    result = run(mpiexec(), "-n", "3", sys.executable, "-c", DIES_AS_IT_STARTS_MPI, str(number))
    for path in named_mpi_memory() - before:  # (MPICH's, of a job ended in MPI_Init: the
        os.unlink(path)  # documentation says so, docs/cluster.md)
    assert result.returncode > 0 and "the master ran" not in result.stdout, result.stderr
    if number == signal.SIGKILL:
        assert "(SIGKILL) as it started: the MPI job ends" in result.stderr


KILLED_AFTER_A_RUN = """
import os, signal, sys
from multi import Executor

pool = Executor("mpi4py", max_workers=1, verbosity=0)
print(sum(pool.map(abs, range(-10, 0))), flush=True)
if sys.argv[1] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
pool.shutdown()
"""


def test_the_directories_of_a_master_killed_by_a_signal_go_with_the_next_master(
    tmp_path: Path,
) -> None:
    # A master that mpiexec, a batch system or a timeout ended by a signal left them for ever.
    folder = {"TMPDIR": str(tmp_path)}
    killed = run(sys.executable, "-c", KILLED_AFTER_A_RUN, "killed", env=folder)
    assert (killed.returncode, killed.stdout) == (-signal.SIGKILL, "55\n"), killed.stderr
    # The shim of mpiexec stays for the next master. The notes of deaths stay too, unless
    # a guard of its slaves, which sees it die, takes them away before mpiexec ends the guard.
    left = {path.name.split("-")[1] for path in tmp_path.iterdir()}
    assert "mpiexec" in left and left <= {"mpi", "mpiexec"}, left
    after = run(sys.executable, "-c", KILLED_AFTER_A_RUN, "exits", env=folder)
    assert (after.returncode, after.stdout) == (0, "55\n"), after.stderr
    assert list(tmp_path.iterdir()) == []


SLOW_TO_LEAVE = textwrap.dedent(
    """
    import atexit, os, sys, time
    from multi import Application_callback, Processor_box, Slave_command, load_multiprocessor

    def leave_slowly(done):
        time.sleep(0.5)
        with open(os.path.join(done, str(os.getpid())), "w"):
            pass

    class Leave_slowly(Slave_command):
        def run(self, processor, completed):
            atexit.register(leave_slowly, sys.argv[1])
            time.sleep(0.2)  # (so that each slave takes one)

    class Main:
        def run(self):
            processor = Processor_box().processor
            for _ in range(2):
                processor.add_to_queue(Leave_slowly())
            processor.run_queue()

    if __name__ == "__main__":
        load_multiprocessor("mpi4py", Application_callback(Main()), 2, verbosity=0).run()
    """
)


@pytest.mark.parametrize("launcher", ["alone", "mpiexec"])
def test_spawned_slaves_finish_leaving_before_the_master_ends(
    tmp_path: Path, launcher: str
) -> None:
    # Before: a spawned slave's guard that saw the master end first killed its slave, and under
    # mpiexec the launcher killed the guards still running, with a "BAD TERMINATION" banner.
    script, done = tmp_path / "slow_to_leave.py", tmp_path / "done"
    script.write_text(SLOW_TO_LEAVE)
    done.mkdir()
    command = [] if launcher == "alone" else [mpiexec(), "-n", "1"]
    result = run(*command, sys.executable, str(script), str(done))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(list(done.iterdir())) == 2  # each slave's exit handler ran to its end


# A slave that dies mid-command (tests/apps/mpi_death.py), in each launch mode -----------------


#: What follows the name of a slave that died under the seventh command, and was replaced.
RETRIED = (
    r"while running Die_once \(command 6 of the run\), which runs again \(attempt 2 of \d+\); "
    "a new slave takes its place"
)


def named(signal_number: int) -> str:
    """How a slave's death by ``signal_number`` is named."""
    name = signal.Signals(signal_number).name
    return rf"slave [12] \(pid \d+ on \S+\) was killed by signal {signal_number} \({name}\)"


def die(
    tmp_path: Path, signal_number: int, slaves: str, *launcher: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the program whose seventh command kills its slave once by ``signal_number``, under
    ``launcher`` (none: started alone)."""
    died = str(tmp_path / "died")
    return run(*launcher, sys.executable, DEATH, died, str(signal_number), slaves, env=env)


@pytest.mark.parametrize("signal_number", DEATHS, ids=lambda number: signal.Signals(number).name)
def test_under_mpiexec_that_survives_deaths_a_dead_slave_is_named_and_the_run_goes_on(
    tmp_path: Path, signal_number: int
) -> None:
    result = die(tmp_path, signal_number, "-1", mpiexec(), SURVIVE, "-n", "3")
    assert result.stdout == NOT_REPLACED  # its command ran again on the other slave
    assert re.search(f"multi: {named(signal_number)}", result.stderr), result.stderr
    assert result.returncode == 128 + signal_number  # mpiexec reports the death


@pytest.mark.parametrize("signal_number", DEATHS, ids=lambda number: signal.Signals(number).name)
def test_under_plain_mpiexec_a_dead_slave_ends_the_job_saying_how_to_survive(
    tmp_path: Path, signal_number: int
) -> None:
    result = under_mpiexec(DEATH, str(tmp_path / "died"), str(signal_number), "-1")
    # (Whether the master retried the command before mpiexec ended the job is a race: the
    # job ends some 0.4 s after the death, which the master may or may not outrun.)
    assert re.search(f"multi: {named(signal_number)}", result.stderr), result.stderr
    assert f"mpiexec {SURVIVE} -n P+1 python app.py" in result.stderr
    assert result.returncode != 0  # (MPICH's mpiexec says 9 most times, at times 137 or 255)


@pytest.mark.parametrize("signal_number", DEATHS, ids=lambda number: signal.Signals(number).name)
def test_started_alone_a_dead_slave_is_named_replaced_and_its_command_retried(
    tmp_path: Path, signal_number: int
) -> None:
    result = die(tmp_path, signal_number, "2")
    assert result.stdout == REPLACED
    assert re.fullmatch(f"multi: {named(signal_number)} {RETRIED}\n", result.stderr), result.stderr
    assert result.returncode == 0


def test_a_slave_that_dies_in_the_batch_after_a_large_report_leaves_the_master_its_report(
    tmp_path: Path,
) -> None:
    """The master reads a large report from its slave's memory: a slave that had started its
    next batch before the master had taken it, and died there, took the master down with it
    (UCX: process_vm_readv ... No such process, then an abort)."""
    app = str(ROOT / "tests" / "apps" / "mpi_death_after_report.py")
    result = run(sys.executable, app, str(tmp_path / "died"))
    assert (result.returncode, result.stdout) == (0, "12 1\n"), result.stderr
    retried = RETRIED.replace("command 6", "command 8")
    assert re.fullmatch(f"multi: {named(signal.SIGKILL)} {retried}\n", result.stderr), result.stderr


def test_a_result_is_what_its_command_returned_though_the_next_command_reuses_its_buffer() -> None:
    """An array travels from the memory it lies in: a slave that ran its next batch before its
    report had left sent the array as the next command had filled it (the results of commands
    2 to 10 held the index of the next command)."""
    result = run(sys.executable, str(ROOT / "tests" / "apps" / "mpi_reused_buffer.py"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")


@pytest.mark.parametrize("signal_number", DEATHS, ids=lambda number: signal.Signals(number).name)
def test_spawned_under_mpiexec_a_dead_slave_is_named_replaced_and_its_command_retried(
    tmp_path: Path, signal_number: int
) -> None:
    result = die(tmp_path, signal_number, "2", mpiexec(), "-n", "1")
    assert result.stdout == REPLACED
    assert re.fullmatch(f"multi: {named(signal_number)} {RETRIED}\n", result.stderr), result.stderr
    assert result.returncode == 0


def test_started_alone_with_launch_mpiexec_a_dead_slave_is_named_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    result = die(tmp_path, signal.SIGKILL, "2", MULTI_MPI4PY_LAUNCH="mpiexec")
    assert result.stdout == NOT_REPLACED
    # (named once, by the master: its guard, which told it, says nothing)
    assert len(re.findall(f"multi: {named(signal.SIGKILL)}", result.stderr)) == 1, result.stderr
    assert "Unless mpiexec runs with" not in result.stderr  # it does: no advice to launch so
    assert result.returncode == 128 + signal.SIGKILL


def test_started_alone_with_launch_mpiexec_a_timeout_is_refused_before_it_runs_again() -> None:
    code = "import multi; multi.load_multiprocessor('mpi4py', None, 2, timeout=5, launch='mpiexec')"
    result = run(sys.executable, "-c", code, env={"PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 1
    assert result.stderr.count("Traceback") == 1  # refused once, not by every rank of mpiexec
    assert "cannot stop a command that runs too long" in result.stderr
    assert "launch=spawn" in result.stderr


def test_under_mpiexec_that_survives_deaths_the_master_names_a_dead_slave(tmp_path: Path) -> None:
    launcher = (mpiexec(), SURVIVE, "-n", "3")
    result = die(tmp_path, signal.SIGSEGV, "-1", *launcher, MULTI_MPI4PY_RETRIES="0")
    assert re.search(
        f"SlaveDiedError: {named(signal.SIGSEGV)} while running Die_once", result.stderr
    )
    assert result.returncode == 1


def test_a_wait_tests_twice_before_its_first_sleep_and_after_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MPICH's Iprobe shows a message that came during a sleep only at its second call after
    it: a wait that tested once per sleep found every message a whole sleep late, and one that
    tested once before it slept found a report that came with the last a whole sleep late."""
    from multi import mpi4py_processor

    sleeps: list[float] = []
    monkeypatch.setattr(mpi4py_processor.time, "sleep", sleeps.append)
    answers = iter([False, "found"])
    assert mpi4py_processor._wait(lambda: next(answers)) == "found"
    assert sleeps == []
    answers = iter([False, False, False, "found"])  # twice before the sleep, twice after
    assert mpi4py_processor._wait(lambda: next(answers)) == "found"
    assert len(sleeps) == 1


def test_the_master_sleeps_at_once_after_a_slow_wait_and_spins_after_a_quick_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A master whose slaves ran long commands spun at each of their reports for nothing."""
    from multi import mpi4py_processor

    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(mpi4py_processor.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(mpi4py_processor.time, "sleep", sleep)

    def answered_after(seconds: float) -> Callable[[], bool]:
        due = clock[0] + seconds

        def test() -> bool:
            clock[0] += 1e-6  # (a test takes a microsecond)
            return clock[0] >= due

        return test

    waiter = mpi4py_processor._Waiter()
    quick = mpi4py_processor.SPIN_SECONDS / 2
    waiter.wait(answered_after(quick))
    assert sleeps == []
    waiter.wait(answered_after(2 * mpi4py_processor.SLOW_WAIT))
    sleeps.clear()
    waiter.wait(answered_after(quick))
    assert sleeps  # (it slept before its second test)
    sleeps.clear()
    waiter.wait(answered_after(quick))
    assert sleeps == []


def test_a_wait_never_sleeps_past_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from multi import mpi4py_processor

    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    def test() -> bool:
        clock[0] += 1e-6  # (a test takes a microsecond)
        return False

    monkeypatch.setattr(mpi4py_processor.time, "monotonic", lambda: clock[0])
    found = mpi4py_processor._wait(test, 0.005, longest=1.0, sleep=sleep, first=1.0)
    assert found is False
    assert sleeps == [pytest.approx(0.005, abs=1e-5)]


class Fake_bell:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock[0] += seconds


def test_a_master_that_waits_for_slaves_that_ring_alone_sleeps_until_a_ring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It sleeps long at once, for a ring ends its sleep; where a slave that cannot ring (of
    another host) holds work, it naps as ever, on the bell, which ends a nap early too."""
    from multi import mpi4py_processor

    clock = [0.0]
    monkeypatch.setattr(mpi4py_processor.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(mpi4py_processor.time, "sleep", lambda seconds: pytest.fail("slept"))
    bell = Fake_bell(clock)
    waiter = mpi4py_processor._Waiter(bell)  # type: ignore[arg-type]
    waiter.quick = False

    def answered_after(seconds: float) -> Callable[[], bool]:
        due = clock[0] + seconds
        return lambda: clock[0] >= due

    waiter.wait(answered_after(0.05), ringing=True)
    assert bell.sleeps == [mpi4py_processor.BELL_WAIT] * 3
    bell.sleeps.clear()
    waiter.wait(answered_after(0.05), ringing=False)
    assert bell.sleeps[0] == mpi4py_processor.FIRST_WAIT
    assert max(bell.sleeps) <= mpi4py_processor.LONGEST_WAIT


def test_a_ring_whose_report_mpi_does_not_show_yet_is_waited_for_without_sleeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slave rings once its send has started; MPI showed a large report a little later, and
    the master, asleep again at once, took it a whole ``BELL_WAIT`` late."""
    from multi import mpi4py_processor

    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> bool:
        sleeps.append(seconds)
        clock[0] += 1e-3  # (rung a millisecond in)
        return True

    def test() -> bool:
        clock[0] += 1e-6  # (a test takes a microsecond)
        return clock[0] >= 1.1e-3  # (the report shows 100 µs after its ring)

    monkeypatch.setattr(mpi4py_processor.time, "monotonic", lambda: clock[0])
    wait = mpi4py_processor._wait
    assert wait(test, None, 0.0, 0.02, sleep, 0.02) is True
    assert sleeps == [0.02]


def test_news_of_a_failure_wakes_a_master_asleep_on_its_doorbell(tmp_path: Path) -> None:
    from multi import mpi4py_processor

    bell = mpi4py_processor._doorbell(str(tmp_path))
    assert bell is not None
    try:
        count = mpi4py_processor._failures.count
        mpi4py_processor._on_failure_signal(mpi4py_processor.FAILED, None)
        assert select.select([bell._read], [], [], 0)[0]
        assert mpi4py_processor._failures.count == count + 1
    finally:
        mpi4py_processor._failures.bells.discard(bell)
        bell.close()


@pytest.mark.parametrize(
    ("host", "rings"), [("this", True), ("another", False)], ids=["same host", "another host"]
)
def test_a_slave_rings_its_master_s_doorbell_where_they_share_a_host(
    tmp_path: Path, host: str, rings: bool
) -> None:
    from types import SimpleNamespace

    from multi import mpi4py_processor
    from multi.doorbell import Doorbell

    bell = Doorbell(str(tmp_path))
    name = socket.gethostname() if host == "this" else "not-" + socket.gethostname()
    slave = SimpleNamespace(_where=(str(tmp_path), f"{name}:{os.getpid()}"), process_rank=2)
    ring = mpi4py_processor.Mpi4py_processor._ringer(slave)  # type: ignore[arg-type]
    assert (ring is not None) == rings
    if ring is not None:
        ring()
        bell.sleep(10.0)
        ring.close()
    assert bell.rang == ({2} if rings else set())
    bell.close()


OUTLIVES = textwrap.dedent(
    """
    import os, signal, sys
    from multi import Application_callback, Executor, Processor_box, load_multiprocessor
    from tests import workloads as w

    def die_once(marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    class Main:
        def run(self):
            processor = Processor_box().processor
            with Executor("mpi4py", 1, verbosity=0) as executor:
                print(executor.submit(pow, 2, 2).result(timeout=20), flush=True)
                processor.add_to_queue(w.Square(3), w.Record())
                processor.run_queue()
                processor.stop_slaves()  # (its slaves leave: SIGUSR1 is not for it any more)
                print(executor.submit(die_once, sys.argv[1]).result(timeout=20), flush=True)

    if __name__ == "__main__":
        load_multiprocessor("mpi4py", Application_callback(Main()), 1, verbosity=0).run()
    """
)


def test_a_processor_that_stops_leaves_the_news_of_deaths_to_one_that_lives_on(
    tmp_path: Path,
) -> None:
    """The first to stop stopped hearing SIGUSR1 for the whole program: the other, an
    Executor whose engine runs in a thread of its own, never heard of its slave's death."""
    script = tmp_path / "outlives.py"
    script.write_text(OUTLIVES)
    result = run(sys.executable, str(script), str(tmp_path / "died"), env={"PYTHONPATH": str(ROOT)})
    assert (result.returncode, result.stdout) == (0, "4\nsurvived\n"), result.stderr
    assert "was killed by signal 9 (SIGKILL)" in result.stderr


@pytest.mark.parametrize("launch", ["spawn", "mpiexec"])
def test_slaves_on_the_master_s_host_ring_its_doorbell(alone: Path, launch: str) -> None:
    """Spawned slaves, and slaves of mpiexec (launch=mpiexec runs the program again under
    it), tell the master that they ring: it then sleeps until they report."""
    env = {"MULTI_MPI4PY_LAUNCH": launch, "PYTHONPATH": str(ROOT)}
    result = run(sys.executable, str(alone), "2", env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert "rang [1, 2]\n" in result.stdout


@pytest.mark.parametrize(
    ("local", "spawned", "expected"),
    [("3", False, 3e-3), ("17", False, 17e-3), ("64", False, 20e-3), ("1", False, 2e-3),
     ("1", True, 5e-3), (None, False, 5e-3)],
)  # fmt: skip
def test_idle_slaves_of_a_host_look_for_work_as_often_as_its_cores_allow(
    monkeypatch: pytest.MonkeyPatch, local: str | None, spawned: bool, expected: float
) -> None:
    """On 2 cores: 2 ms for each MPI process of the host per core, between 2 and 20 ms; the
    launcher counts each spawned slave alone, so they are counted beside their master."""
    from multi import mpi4py_processor

    monkeypatch.setattr(mpi4py_processor, "usable_cores", lambda: 2)
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    if local is not None:
        monkeypatch.setenv("MPI_LOCALNRANKS", local)
    assert mpi4py_processor._idle_sleep(4, spawned) == pytest.approx(expected)


@pytest.mark.parametrize("method", ["set", "clear"])
def test_a_running_flag_interrupted_anywhere_in_a_raise_or_lower_lowers_at_once(
    method: str,
) -> None:
    """A KeyboardInterrupt (Ctrl-C under mpiexec, the watcher's SIGINT for KILL) may come
    between any two lines of ``_Flag.set`` or ``clear``; ``execute`` then lowers the flag on
    its way out (``running(-1)``), and so does ``_serve_master``: that must not wait for
    ever. (Raised where ``set`` had noted the flag up, but not yet let go of its lock, the
    lowering waited for that lock.)"""
    import threading

    from multi.mpi4py_processor import _Flag

    code = getattr(_Flag, method).__code__
    lines = sorted({line for _, _, line in code.co_lines() if line is not None})
    assert len(lines) >= 3
    for line in lines[1:]:  # (the first is the def's own)
        flag = _Flag()
        if method == "clear":
            flag.set()

        def interrupt_at(frame: Any, event: str, arg: Any, line: int = line) -> Any:
            if frame.f_code is code:
                if event == "line" and frame.f_lineno == line:
                    raise KeyboardInterrupt
                return interrupt_at
            return None

        sys.settrace(interrupt_at)
        try:
            getattr(flag, method)()
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        lowered = threading.Thread(target=flag.clear, daemon=True)
        lowered.start()
        lowered.join(2)
        hangs = lowered.is_alive()
        if hangs:  # (let the thread go)
            flag._down.release()
            lowered.join(2)
        assert not hangs, f"lowering hangs after an interrupt at line {line}"
        assert not flag.is_set()
