"""What happens when slave processes fail: killed, crashed, gone; and the master with them.

Bound to every fabric whose slaves are processes, each of which replaces a slave that it
lost (the mpi4py fabric, started alone here, spawns its slaves: test_mpi.py checks what a
death does in each launch mode).
"""

from __future__ import annotations

import errno
import gc
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from multi import Slave_storage_command, SlaveDiedError, UnpicklableError
from tests import workloads as w
from tests.conftest import MISSING, run_master, started_programs, survivors

PROCESS_FABRICS = ["multiprocessing", "mpi4py", "pvm"]
ROOT = Path(__file__).parent.parent
#: Linux's ceiling of open files, where the hard limit is unlimited.
NR_OPEN = "/proc/sys/fs/nr_open"
#: How each fabric names a slave that ended. A PVM slave's parent is its daemon, whose
#: notification says that a task ended, not how: the master names the task, host and process.
ENDED = {
    "multiprocessing": r"\(pid \d+\) {how}",
    "mpi4py": r"\(pid \d+ on \S+\) {how}",
    "pvm": r"\(PVM task t[0-9a-f]+ on .+, pid \d+\) ended",
}


@pytest.fixture(params=PROCESS_FABRICS)
def process_fabric(request: pytest.FixtureRequest) -> str:
    if request.param in MISSING:
        pytest.skip(f"{request.param} is not available: {MISSING[request.param]}")
    return request.param


def values(memo: w.Record) -> list[Any]:
    return [value for _, value in memo.values]


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_a_killed_slave_is_replaced_and_its_command_retried(
    process_fabric: str, tmp_path: Path, signal_number: int
) -> None:
    def body(processor: Any) -> tuple[list[Any], int]:
        memo = w.Record()
        for i in range(6):
            processor.add_to_queue(w.Square(i), memo)
        processor.add_to_queue(w.Die_once(str(tmp_path / "died"), signal_number, index=6), memo)
        for i in range(7, 12):
            processor.add_to_queue(w.Square(i), memo)
        processor.run_queue()
        return values(memo), processor.last_run.retries

    delivered, retries = run_master(process_fabric, body)
    assert delivered == [i * i for i in range(6)] + [("survived", 6)] + [
        i * i for i in range(7, 12)
    ]
    assert retries == 1


def test_a_death_the_run_survives_is_named_with_its_command_and_what_follows(
    process_fabric: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Square(1))
        processor.add_to_queue(w.Die_once(str(tmp_path / "died"), signal.SIGKILL, index=1))
        processor.run_queue()

    run_master(process_fabric, body, retries=2)  # (at verbosity 0: news is not silenced)
    news = [line for line in capfd.readouterr().err.splitlines() if line.startswith("multi:")]
    how = ENDED[process_fabric].format(how=r"was killed by signal 9 \(SIGKILL\)")
    (line,) = news  # once, and by the master alone
    assert re.fullmatch(
        rf"multi: slave \d+ {how} while running Die_once \(command 1 of the run\), which runs "
        r"again \(attempt 2 of 3\); a new slave takes its place",
        line,
    ), line


def test_a_death_in_the_middle_of_a_batch_is_blamed_on_its_own_command(
    process_fabric: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> tuple[list[Any], int]:
        memo = w.Record()
        for i in range(300):  # quick commands, which travel many to a batch
            if i == 250:
                processor.add_to_queue(w.Die_once(str(tmp_path / "died"), signal.SIGKILL, i), memo)
            else:
                processor.add_to_queue(w.Square(i), memo)
        processor.run_queue()
        return values(memo), processor.last_run.retries

    delivered, retries = run_master(process_fabric, body, retries=1)
    news = [line for line in capfd.readouterr().err.splitlines() if line.startswith("multi:")]
    assert delivered == [("survived", i) if i == 250 else i * i for i in range(300)]
    assert retries == 1  # the command that died, and no other
    (line,) = news
    assert "while running Die_once (command 250 of the run), which runs again" in line, line


@pytest.mark.parametrize(("how", "status"), [("return", 0), ("exit", 3), ("raise", 1)])
def test_the_child_of_a_command_that_forks_ends_where_it_leaves_the_command(
    process_fabric: str, how: str, status: int
) -> None:
    def body(processor: Any) -> tuple[list[Any], list[Any]]:
        memo = w.Record()
        for i in range(4):
            processor.add_to_queue(w.Forks(how) if i == 1 else w.Square(i), memo)
        processor.run_queue()
        after = w.Record()
        for i in range(4):
            processor.add_to_queue(w.Square(i), after)
        processor.run_queue()
        return values(memo), values(after)

    # (a child that went on would answer for its slave: results lost, or run twice)
    assert run_master(process_fabric, body) == ([0, ("child ended", status), 4, 9], [0, 1, 4, 9])


def test_a_command_that_always_crashes_is_named_after_its_retries(process_fabric: str) -> None:
    def body(processor: Any) -> tuple[SlaveDiedError, list[Any], list[Any]]:
        memo = w.Record()
        processor.add_to_queue(w.Square(1), memo)
        processor.add_to_queue(w.Segfault(), memo)
        with pytest.raises(SlaveDiedError) as caught:
            processor.run_queue()
        first = values(memo)
        after = w.Record()
        processor.add_to_queue(w.Square(5), after)
        processor.run_queue()
        return caught.value, first, values(after)

    error, first, after = run_master(process_fabric, body, retries=1)
    message = str(error)
    assert error.attempts == 2
    assert "Segfault" in message and "tried 2 times" in message
    how = ENDED[process_fabric].format(how=r"was killed by signal 11 \(SIGSEGV\)")
    assert re.search(f"slave {error.rank} {how} while running Segfault", message)
    assert first == [1]  # what finished is delivered
    assert after == [25]  # and the processor goes on


@pytest.mark.parametrize(
    ("killer", "stage"),
    [
        (w.Exits_when_unpickled, "unpickling"),
        (w.Exits_when_its_result_is_pickled, "returning the results of"),
    ],
)
def test_a_command_that_kills_its_slave_around_its_run_fails_alone_and_the_others_go(
    process_fabric: str, killer: type, stage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """It travels with others (quick commands, many to a batch), and its slave dies as it
    unpickles the batch, or as it returns the batch's results once every command ran: they go
    again one by one, with no attempt counted, and then its own deaths name it. (A death as
    the results were returned was taken for one while idle, which blamed no command, and the
    batch cost every slave.)"""

    def body(processor: Any) -> tuple[SlaveDiedError, list[Any], int]:
        memo = w.Record()
        for i in range(300):
            processor.add_to_queue(killer(3) if i == 250 else w.Square(i), memo)
        with pytest.raises(SlaveDiedError) as caught:
            processor.run_queue()
        return caught.value, values(memo), processor.last_run.retries

    error, delivered, retries = run_master(process_fabric, body, retries=1)
    assert delivered == [i * i for i in range(300) if i != 250]
    assert error.attempts == 2
    doing = f"while {stage} {killer.__name__}"
    assert f"{doing} (tried 2 times)" in str(error)
    debug = "on the 'uni' fabric with the option pickle_check to debug it"
    assert (debug in str(error)) == (stage == "unpickling")
    assert retries == 1  # the command itself, and no other
    news = [line for line in capfd.readouterr().err.splitlines() if line.startswith("multi:")]
    assert f"while {stage} a batch of" in news[0], news
    assert [line for line in news[1:] if doing in line] == news[1:]
    assert len(news) == 3


def test_a_slave_killed_while_it_waits_for_work_costs_no_command_an_attempt(
    process_fabric: str,
) -> None:
    """Killed between two runs, it holds nothing when the next run's first batch is sent to
    it: those commands go to its replacement, not counted as tried (no retry is allowed)."""

    def body(processor: Any) -> tuple[list[Any], int]:
        where = w.Record()
        for _ in range(2 * processor.processor_size()):
            processor.add_to_queue(w.Where(0.05), where)
        processor.run_queue()
        os.kill(dict(values(where))[1], signal.SIGKILL)
        memo = w.Record()
        for i in range(6):
            processor.add_to_queue(w.Square(i), memo)
        processor.run_queue()
        return values(memo), processor.last_run.retries

    assert run_master(process_fabric, body, retries=0) == ([i * i for i in range(6)], 0)


def test_a_sigint_to_a_waiting_slave_ends_it_by_the_signal_without_a_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # (Python's KeyboardInterrupt traceback was printed from multiprocessing's bootstrap, and
    # the slave was named as one that "exited with status 1")
    def body(processor: Any) -> list[Any]:
        where = w.Record()
        processor.add_to_queue(w.Where(0.0), where)
        processor.run_queue()
        slave = values(where)[0][1]
        os.kill(slave, signal.SIGINT)
        assert survivors({slave}, seconds=30) == []  # (before the next run finds it gone)
        memo = w.Record()
        processor.add_to_queue(w.Square(4), memo)
        processor.run_queue()
        return values(memo)

    assert run_master("multiprocessing", body, size=1) == [16]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "was killed by signal 2 (SIGINT) while idle; a new slave takes its place" in err


@pytest.mark.parametrize("status", [3, 0])
def test_a_slave_that_exits_is_reported_with_its_status(process_fabric: str, status: int) -> None:
    def body(processor: Any) -> None:
        processor.add_to_queue(w.Exit_hard(status))
        how = ENDED[process_fabric].format(how=f"exited with status {status}")
        with pytest.raises(SlaveDiedError, match=f"{how} while running Exit_hard"):
            processor.run_queue()

    run_master(process_fabric, body, retries=0)


def test_retries_come_from_the_environment(
    process_fabric: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"MULTI_{process_fabric.upper()}_RETRIES", "0")

    def body(processor: Any) -> int:
        processor.add_to_queue(w.Exit_hard(1))
        with pytest.raises(SlaveDiedError) as caught:
            processor.run_queue()
        return caught.value.attempts

    assert run_master(process_fabric, body) == 1


def _fetched_after_a_death(processor: Any, died: Path) -> tuple[list[Any], int]:
    """Have a slave die (it is replaced), then fetch "table" and "other" on the slaves: the
    values, and how many commands the master keeps for new slaves."""
    processor.add_to_queue(w.Die_once(str(died), signal.SIGKILL))
    processor.run_queue()
    memo = w.Record()
    for _ in range(8):
        processor.add_to_queue(w.Fetch("table"), memo)
        processor.add_to_queue(w.Fetch("other"), memo)
    processor.run_queue()
    return values(memo), len(processor.setup_commands())


def test_a_replaced_slave_gets_the_data_again(process_fabric: str, tmp_path: Path) -> None:
    def body(processor: Any) -> tuple[list[Any], int]:
        for version in range(3):  # the same name again: only the last value is kept
            processor.send_data_to_slaves("table", {"a": version})
        processor.send_data_to_slaves("other", "kept")
        return _fetched_after_a_death(processor, tmp_path / "died")

    assert run_master(process_fabric, body) == ([{"a": 2}, "kept"] * 8, 2)


def test_a_replaced_slave_gets_what_storage_commands_run_globally_stored(
    process_fabric: str, tmp_path: Path
) -> None:
    """The seed's way to send data, as send_data_to_slaves's: the new slave had none of it."""

    def body(processor: Any) -> tuple[list[Any], int]:
        stored = Slave_storage_command()
        stored.add("table", "old")
        stored.add("other", "kept")
        processor.run_command_globally(stored)
        stored.clear()  # (what was stored is kept, not the command as it is now)
        processor.send_data_to_slaves("table", "new")  # (a later value of a name wins)
        return _fetched_after_a_death(processor, tmp_path / "died")

    assert run_master(process_fabric, body) == (["new", "kept"] * 8, 2)


def test_the_bytes_of_a_replaced_slave_are_counted_with_those_of_its_rank(
    process_fabric: str, tmp_path: Path
) -> None:
    size = 100_000  # each its own bytes: a batch pickles an object it holds twice once

    def body(processor: Any) -> tuple[int, int, int]:
        for i in range(10):
            processor.add_to_queue(w.Carries(bytes([i]) * size))
        processor.run_queue()
        processor.add_to_queue(w.Die_once(str(tmp_path / "died"), signal.SIGKILL))
        for i in range(10):
            processor.add_to_queue(w.Carries(bytes([i]) * size))
        processor.run_queue()
        replaced = processor.last_run.slaves[1]
        return (
            replaced.bytes_received,
            replaced.bytes_sent,
            processor.totals.slaves[1].bytes_received,
        )

    received, sent, in_all = run_master(process_fabric, body, size=1)
    carried = 10 * size
    assert carried < received < 1.1 * carried  # what the new slave sent back
    assert carried < sent < 1.1 * carried
    assert 2 * carried < in_all < 2.2 * carried


def test_large_arrays_cross_intact_and_writable(process_fabric: str) -> None:
    numpy = pytest.importorskip("numpy")

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for seed in range(4):
            processor.add_to_queue(w.Carries(numpy.random.default_rng(seed).random(2**20)), memo)
        processor.run_queue()
        return values(memo)

    arrays = run_master(process_fabric, body)
    for seed, array in enumerate(arrays):
        assert numpy.array_equal(array, numpy.random.default_rng(seed).random(2**20))
        array[0] = -1.0  # writable


def test_empty_arrays_of_every_shape_cross_both_ways_and_as_data(process_fabric: str) -> None:
    # (PVM refused a buffer whose shape holds a zero: the run raised a TypeError and lost the
    # commands that went with it; such a result killed every slave in turn)
    numpy = pytest.importorskip("numpy")
    shapes = [(0,), (0, 5), (3, 0, 2)]
    arrays = [numpy.zeros(shape) for shape in shapes] + [numpy.zeros((0, 4), order="F")]

    def body(processor: Any) -> list[Any]:
        processor.send_data_to_slaves("empty", numpy.zeros((0, 3)))
        memo = w.Record()
        for array in arrays:
            processor.add_to_queue(w.Carries(array), memo)
            processor.add_to_queue(w.Square(2), memo)
        processor.add_to_queue(w.Fetch("empty"), memo)
        processor.run_queue()
        return values(memo)

    back = run_master(process_fabric, body)
    assert [(a.shape, a.dtype) for a in back[0:-1:2]] == [(a.shape, a.dtype) for a in arrays]
    assert back[1:-1:2] == [4] * len(arrays)
    assert back[-1].shape == (0, 3)


def test_what_commands_left_running_ends_with_their_slaves(replacing_fabric: str) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for _ in range(4):
            processor.add_to_queue(w.Leaves_a_program(), memo)
        processor.run_queue()
        return values(memo)

    children = run_master(replacing_fabric, body)  # (its slaves have stopped once it returns)
    assert len(children) == 4
    assert survivors(children) == []


def test_what_a_command_started_ends_with_its_slave_that_died(
    replacing_fabric: str, tmp_path: Path
) -> None:
    # (a PVM slave's group outlived it: the program its command started ran on)
    def body(processor: Any) -> int:
        processor.add_to_queue(w.Leaves_a_program_and_dies_once(str(tmp_path)), w.Record())
        processor.run_queue()
        return processor.last_run.retries  # type: ignore[no-any-return]

    assert run_master(replacing_fabric, body) == 1
    programs = {int(note.name) for note in tmp_path.iterdir()}
    assert len(programs) == 2  # the dead slave's, and the one its command left on the next
    assert survivors(programs) == []


def test_data_that_does_not_pickle_is_refused_naming_it_and_the_data_sent_before_stays(
    process_fabric: str,
) -> None:
    # (it named the command that carries data, and advised a Memo)
    def body(processor: Any) -> None:
        processor.send_data_to_slaves("vector", [1.0, 2.0])
        processor.add_to_queue(w.Square(3))
        refused = r"the data 'lock' does not pickle: it \(a lock\) fails: .* on each slave"
        with pytest.raises(UnpicklableError, match=refused):
            processor.send_data_to_slaves("lock", threading.Lock())
        assert len(processor.command_queue) == 1
        assert [setup.names for setup in processor.setup_commands()] == [["vector"]]

    run_master(process_fabric, body)


def test_messages_of_many_arrays_cross_intact_both_ways(process_fabric: str) -> None:
    # Each array is a buffer of its own on the wire: PVM crashed on a message of about 27.
    numpy = pytest.importorskip("numpy")
    rng = numpy.random.default_rng(3)
    small = [numpy.full(8, j, dtype=numpy.uint8) for j in range(100)]
    large = [rng.random(2**15) for _ in range(40)]  # 256 KiB each, among small ones
    mixed = [array for pair in zip(large, small, strict=False) for array in pair]

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for payload in (small, large, mixed):
            processor.add_to_queue(w.Carries(payload), memo)
        for j in range(200):  # tiny commands, whose results travel together in batches
            processor.add_to_queue(w.Carries(numpy.arange(j, j + 3)), memo)
        processor.run_queue()
        return values(memo)

    back = run_master(process_fabric, body, retries=0)
    for sent, came in zip((small, large, mixed), back[:3], strict=True):
        assert len(came) == len(sent)
        assert all(numpy.array_equal(a, b) for a, b in zip(sent, came, strict=True))
    assert [list(array) for array in back[3:]] == [[j, j + 1, j + 2] for j in range(200)]


def test_payloads_in_the_pickle_stream_cross_intact_at_every_size(process_fabric: str) -> None:
    # Without out-of-band buffers, small messages and those past a MiB travel differently.
    sizes = [0, 10, 100_000, 140_000, 400_000]  # floats: ~0.9 and ~1.3 MiB pickled, and more

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for size in sizes:
            processor.add_to_queue(w.Carries([i + 0.5 for i in range(size)]), memo)
        processor.run_queue()
        return values(memo)

    assert run_master(process_fabric, body) == [[i + 0.5 for i in range(n)] for n in sizes]


SCRIPT_HEAD = textwrap.dedent(
    """
    import os, sys, time
    from multi import Application_callback, Processor_box, load_multiprocessor
    from tests import workloads as w

    class Main:
        def run(self):
            processor = Processor_box().processor
            memo = w.Record()
            for _ in range(8):
                processor.add_to_queue(w.Pid(), memo)
            processor.run_queue()
            print(" ".join(str(pid) for _, pid in memo.values), flush=True)
    """
)

ENDINGS = {
    "normal end": "",
    "sys.exit": "sys.exit(3)",
    "exception": "raise RuntimeError('the end')",
    # (each slave starts a program, which must not outlive the master either)
    "killed": "for _ in range(2): processor.add_to_queue(w.Starts_a_program())\n"
    "processor.run_queue()",
}
ENDINGS["terminated"] = ENDINGS["killed"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_no_slave_outlives_its_master(process_fabric: str, tmp_path: Path, ending: str) -> None:
    killed = {"killed": signal.SIGKILL, "terminated": signal.SIGTERM}.get(ending)
    killed_mpi = process_fabric == "mpi4py" and killed is not None
    temporary = tmp_path / "tmp"  # the master's and its slaves' temporary directory
    temporary.mkdir()
    started = tmp_path / "started"  # where each command notes the program it started
    started.mkdir()
    script = tmp_path / "master.py"
    script.write_text(
        SCRIPT_HEAD
        + textwrap.indent(ENDINGS[ending], " " * 8)
        + "\n\nif __name__ == '__main__':\n"
        + f"    load_multiprocessor({process_fabric!r}, Application_callback(Main()), 2).run()\n"
    )
    master = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temporary),
             "STARTED": str(started)},
    )  # fmt: skip
    programs: set[int] = set()
    try:
        assert master.stdout is not None
        slaves = {int(pid) for pid in master.stdout.readline().split()}
        assert slaves, master.stderr.read()  # type: ignore[union-attr]
        if killed is not None:
            programs = started_programs(started, 2, master, seconds=20)
            master.send_signal(killed)
        status = master.wait(timeout=20)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
    expected = {"normal end": 0, "sys.exit": 3, "exception": 1}
    assert status == expected.get(ending, -(killed or 0))
    assert survivors(slaves | programs) == []
    # Nothing of the framework's stays (multiprocessing's fork server leaves its own, pymp-*),
    # but, from a master under MPI killed outright, its notes (whose slaves' guards its launcher
    # kills before they can remove them) and the directory of its mpiexec shim.
    left = [path.name for path in temporary.iterdir() if path.name.startswith("multi-")]
    notes = ("multi-mpi-deaths-", "multi-mpiexec-")
    assert [name for name in left if not (killed_mpi and name.startswith(notes))] == []


UNIMPORTABLE = textwrap.dedent(
    """
    import sys, types
    from multi import Application_callback, Processor_box, load_multiprocessor

    only_here = sys.modules["only_on_the_master"] = types.ModuleType("only_on_the_master")
    exec(
        "from multi import Slave_command\\n"
        "class Local(Slave_command):\\n"
        "    def run(self, processor, completed):\\n"
        "        pass\\n",
        vars(only_here),
    )

    class Main:
        def run(self):
            processor = Processor_box().processor
            processor.add_to_queue(only_here.Local())
            processor.run_queue()

    load_multiprocessor(sys.argv[1], Application_callback(Main()), processor_size=1).run()
    """
)


def test_commands_from_a_module_the_slaves_cannot_import_are_explained(
    process_fabric: str,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNIMPORTABLE, process_fabric],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1
    assert UnpicklableError.__name__ in result.stderr
    assert "could not rebuild the commands it received" in result.stderr
    assert "No module named 'only_on_the_master'" in result.stderr
    assert "must be importable there" in result.stderr


def _descriptors() -> list[int]:
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_a_start_out_of_descriptors_stops_the_slaves_it_started_and_says_what_to_do() -> None:
    """64 slaves where the master may open some 24 descriptors more (a slave takes a few): the
    start fails part-way, says what to do, and leaves no slave and no descriptor behind.

    With the start method spawn: under fork and forkserver, Python's own ``multiprocessing``
    leaves both ends of a pipe open where the second of its two pipes fails (3.11).
    """
    spawn = {"start_method": "spawn"}
    run_master("multiprocessing", lambda processor: None, size=1, **spawn)  # its helpers
    before = _descriptors()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def body(processor: Any) -> None:
        # (lowered once the processor is made, which refuses a size beyond the limit; its
        # slaves start again with the next run)
        processor.stop_slaves()
        resource.setrlimit(resource.RLIMIT_NOFILE, (before[-1] + 24, hard))
        processor.add_to_queue(w.Noop())
        processor.run_queue()

    try:
        run_master("multiprocessing", body, size=64, **spawn)
    except OSError as error:
        number, notes = error.errno, " ".join(getattr(error, "__notes__", []))
    else:
        pytest.fail("64 slaves started within 24 descriptors")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert number == errno.EMFILE
    assert "ran out of file descriptors while it started 64 slaves" in notes
    assert "ulimit -n" in notes
    # (The error's traceback held multiprocessing's handle on the slave that failed to start,
    # whose pipe it closes once the handle is collected.)
    gc.collect()
    assert _descriptors() == before


SLAVES_OF_MANY_FILES = textwrap.dedent(
    """
    import os, resource, sys
    from multi import Application_callback, Processor_box, load_multiprocessor
    from tests import workloads as w

    class Main:
        def run(self):
            processor = Processor_box().processor
            kept = [open(os.devnull) for _ in range(int(sys.argv[2]))]  # the program's own
            memo = w.Record()
            for i in range(24):
                processor.add_to_queue(w.Square(i), memo)
            processor.run_queue()
            squares = sorted(value for _, value in memo.values)
            print("squares", squares == [i * i for i in range(24)])

    size = sys.argv[1]
    if size == "most":  # as many as the master lets start here
        from multi import limits
        size = limits.most_slaves("process")[0]
    try:
        callback = Application_callback(Main())
        processor = load_multiprocessor("multiprocessing", callback, int(size))
    finally:
        print("ulimit -n", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    processor.run()
    """
)


def _run_with_files(
    slaves: int | str, soft: int, hard: int, kept: int = 0
) -> subprocess.CompletedProcess[str]:
    """The program above, with ``slaves`` slaves, started under these limits of open files,
    which keeps ``kept`` files open as its slaves start and run."""
    return subprocess.run(
        [sys.executable, "-c", SLAVES_OF_MANY_FILES, str(slaves), str(kept)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_slave_processes_beyond_the_soft_limit_of_open_files_raise_it_up_to_the_hard_one() -> None:
    # 16 slaves, at five files each, where ulimit -n is 32: they were refused, or failed to
    # start where the machine has 16 cores.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 200:
        pytest.skip(f"the hard limit of open files here is {hard}")
    # 40 files of the program's own, opened once the limit was raised to what the slaves take:
    # they failed to start (EMFILE).
    ceiling = hard if hard != resource.RLIM_INFINITY else int(Path(NR_OPEN).read_text())
    result = _run_with_files(16, 32, hard, kept=40)
    assert result.returncode == 0, result.stderr
    raised = int(re.findall(r"ulimit -n (\d+)", result.stdout)[0])
    # (as far as it may go: the program opens files of its own while its slaves run)
    assert raised == ceiling and "squares True" in result.stdout


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_as_many_slave_processes_as_the_master_lets_start_all_serve() -> None:
    # Each slave made its processor as the master did, which checked the machine again, from
    # the slave: near the hard limit of open files, it refused itself (ProcessorSizeError in
    # every slave, 15 slaves where ulimit -Hn is 100), and the run stopped early.
    result = _run_with_files("most", 32, 100)
    assert result.returncode == 0, result.stderr
    assert "squares True" in result.stdout


def test_slave_processes_beyond_the_hard_limit_of_open_files_are_refused_naming_it() -> None:
    result = _run_with_files(200, 32, 64)
    assert result.returncode == 1
    assert "cannot start 200 slave processes here: this machine can start at most" in result.stderr
    assert (
        "(the hard limit of open files (ulimit -Hn), up to which the master raises ulimit -n, "
        "is 64, and the master holds 5 files per slave). Ask for fewer slaves" in result.stderr
    )
    assert "ulimit -n 32" in result.stdout  # (left as it was)
