"""``multi.Executor`` on every fabric: the ``concurrent.futures`` contract, and everything the
framework's contract gives commands (output, remote tracebacks, deaths, timeouts, failures)."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, as_completed, wait
from pathlib import Path
from typing import Any

import pytest

from multi import (
    CommandTimeoutError,
    Executor,
    MultiError,
    RemoteTraceback,
    Slave_command,
    SlaveDiedError,
    UnpicklableError,
)
from tests.conftest import MISSING, PLUGIN_FABRIC, SLAVES, interrupt, slaves_for, survivors
from tests.test_mpi import MPI_MISSING, mpiexec, run

ROOT = Path(__file__).parent.parent
#: The fabrics that replace a dead slave and can stop a call: the signal that ended a slave is
#: known where the master is its parent.
REPLACING = {
    "multiprocessing": r"SIGKILL.*die_always",
    "mpi4py": r"\(pid \d+ on \S+\) was killed by signal 9 \(SIGKILL\).*die_always",
    "pvm": r"PVM task t[0-9a-f]+ on .*die_always",
}


def executor(fabric: str, **options: object) -> Executor:
    size = slaves_for(fabric)
    return Executor(fabric, None if size == -1 else size, verbosity=0, **options)  # type: ignore[arg-type]


def square(x: int) -> int:
    return x * x


def add(x: int, y: int, z: int = 0) -> int:
    return x + y + z


def fails_on(x: int, bad: int) -> int:
    if x == bad:
        raise KeyError(f"no data for {x}")
    return x


def wait_for(path: str) -> str:
    """Wait (boundedly) until the file exists: a call that ends only once the master says."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return "released"


def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Wait (boundedly) on the master until ``condition`` holds."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def fails_once_released(path: str) -> None:
    wait_for(path)
    raise KeyError("no data")


def talk(i: int) -> int:
    print(f"call {i} line 1")
    print(f"call {i} line 2")
    print(f"call {i} to stderr", file=sys.stderr)
    return i


def die_once(flag: str) -> int:
    """Kill its own slave the first time, return the second."""
    if not os.path.exists(flag):
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def die_always() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def nap_noted(folder: str) -> None:
    """Note its slave's pid in ``folder``, then sleep for longer than a test lasts."""
    Path(folder, str(os.getpid())).touch()
    time.sleep(120)


# concurrent.futures ---------------------------------------------------------------------------


def test_submit_and_map_give_every_value_in_order(fabric: str) -> None:
    with executor(fabric) as pool:
        futures = [pool.submit(add, i, 1, z=i) for i in range(50)]
        assert [f.result(timeout=60) for f in futures] == [2 * i + 1 for i in range(50)]
        assert list(pool.map(square, range(1000))) == [i * i for i in range(1000)]
        assert list(pool.map(add, range(30), range(40), chunksize=1)) == [2 * i for i in range(30)]
        assert list(pool.map(square, iter(range(25)))) == [i * i for i in range(25)]
        assert list(pool.map(square, [])) == []
        assert list(pool.map(square)) == []  # (no iterable: nothing, as map() gives)


def test_futures_complete_as_their_calls_finish(fabric: str, tmp_path: Path) -> None:
    if fabric == "uni":
        pytest.skip("one slave runs one call at a time")
    release = str(tmp_path / "release")
    with executor(fabric) as pool:
        held = pool.submit(wait_for, release)
        quick = pool.submit(square, 4)
        done, _ = wait([held, quick], timeout=60, return_when=FIRST_COMPLETED)
        assert done == {quick}
        open(release, "w").close()
        assert [f.result() for f in as_completed([held, quick], timeout=60)] in (
            [16, "released"],
            ["released", 16],
        )
        assert held.result() == "released"


def test_last_run_holds_the_run_of_calls_under_way(fabric: str, tmp_path: Path) -> None:
    # (it was None, or the run before, until the run ended: a call's value came first)
    if fabric == "uni":
        pytest.skip("one slave runs one call at a time")
    release = str(tmp_path / "release")
    with executor(fabric) as pool:
        held = pool.submit(wait_for, release)
        assert pool.submit(fails_on, 3, 3).exception(timeout=60) is not None
        under_way = pool.processor.last_run
        open(release, "w").close()
        assert held.result(timeout=60) == "released"
    assert under_way is not None
    assert under_way.queued == 2  # (filled in as the run ended: the same run's)


def test_the_processor_api_while_an_executors_calls_run_is_refused_naming_the_executor(
    fabric: str, tmp_path: Path
) -> None:
    # (it spoke of run_queue(), which the program never called)
    release = str(tmp_path / "release")
    with executor(fabric) as pool:
        held = pool.submit(wait_for, release)
        until(lambda: pool.processor._run is not None)
        try:
            with pytest.raises(MultiError, match=r"add_to_queue\(\) was called while an executor"):
                pool.processor.add_to_queue(Slave_command())
        finally:
            open(release, "w").close()
        assert held.result(timeout=60) == "released"


def test_while_calls_run_the_engine_waits_for_its_slaves_until_a_new_call_wakes_it(
    fabric: str, tmp_path: Path
) -> None:
    # It looked for new calls every 2 ms: its master took 8 % (multiprocessing) to 18 %
    # (mpi4py) of a core while calls slept.
    if fabric == "uni":
        pytest.skip("one slave runs one call at a time")
    release = str(tmp_path / "release")
    with executor(fabric) as pool:
        assert pool.submit(square, 2).result(timeout=60) == 4  # (its slaves run)
        transport = pool.processor._transport
        looks: list[float | None] = []
        receive = transport.receive

        def counted(timeout: float | None = None) -> Any:
            looks.append(timeout)
            return receive(timeout)

        transport.receive = counted  # type: ignore[method-assign]
        held = pool.submit(wait_for, release)
        time.sleep(0.5)  # (while the held call runs, on one slave)
        idle_looks = len(looks)
        quick = pool.submit(square, 3)
        assert quick.result(timeout=60) == 9  # on the other slave, the held call still held
        assert not held.done()
        open(release, "w").close()
        assert held.result(timeout=60) == "released"
    assert idle_looks <= 10, looks  # (about 250 when it looked every 2 ms)


def test_a_call_raises_its_own_exception_with_the_slave_traceback(fabric: str) -> None:
    with executor(fabric) as pool:
        future = pool.submit(fails_on, 3, 3)
        with pytest.raises(KeyError, match="no data for 3") as raised:
            future.result(timeout=60)
        assert isinstance(raised.value.__cause__, RemoteTraceback)
        header = str(raised.value.__cause__).splitlines()[0]
        assert re.fullmatch(r"Traceback of .+, running call of fails_on \(call 0\):", header)
        assert pool.submit(square, 5).result(timeout=60) == 25  # the executor goes on


def test_one_failing_call_among_many_costs_only_its_own_future(fabric: str) -> None:
    with executor(fabric) as pool:
        futures = [pool.submit(fails_on, i, 57) for i in range(300)]
        wait(futures, timeout=60)
    assert [f.exception() is None for f in futures].count(False) == 1
    assert isinstance(futures[57].exception(), KeyError)
    assert [f.result() for i, f in enumerate(futures) if i != 57] == [
        i for i in range(300) if i != 57
    ]


def interrupts_on(x: int, bad: int) -> int:
    if x == bad:
        raise KeyboardInterrupt
    return x


def noted(path: str) -> str:
    Path(path).touch()
    time.sleep(0.2)
    return path


def test_a_slave_has_its_next_call_while_the_outcome_of_its_last_is_delivered(
    fabric: str, tmp_path: Path
) -> None:
    """Delivery runs the futures' callbacks, which may take long: the slave that reported
    does not wait for them. It did, its next call sent only once they had returned."""
    second = tmp_path / "1"
    seen: list[bool] = []
    with Executor(fabric, 1, verbosity=0) as pool:
        futures = [pool.submit(noted, str(tmp_path / str(i))) for i in range(3)]
        futures[0].add_done_callback(lambda _: seen.append(until(second.exists) or second.exists()))
        assert [future.result(timeout=90) for future in futures] == [
            str(tmp_path / str(i)) for i in range(3)
        ]
    assert seen == [True]


def test_a_call_raising_keyboard_interrupt_itself_fails_its_future_alone(fabric: str) -> None:
    """No Ctrl-C came (on ``uni`` too, whose engine thread runs the calls): the executor goes
    on, and no slave is lost. It broke the executor on ``uni``; elsewhere, it cost slaves."""
    with executor(fabric) as pool:
        futures = [pool.submit(interrupts_on, i, 2) for i in range(5)]
        with pytest.raises(KeyboardInterrupt) as caught:
            futures[2].result(timeout=60)
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert [futures[i].result(timeout=60) for i in (0, 1, 3, 4)] == [0, 1, 3, 4]
        assert list(pool.map(square, range(3))) == [0, 1, 4]
        lost = sum(slave.lost for slave in pool.processor.totals.slaves.values())
    assert lost == 0


@pytest.mark.parametrize("chunksize", [1, 5, None])
def test_map_raises_a_call_exception_where_its_value_would_be(
    fabric: str, chunksize: int | None
) -> None:
    with executor(fabric) as pool:  # (a chunk of 5 and the one map makes hold 7 and more)
        values = pool.map(fails_on, range(20), [7] * 20, chunksize=chunksize)
        assert [next(values) for _ in range(7)] == list(range(7))
        with pytest.raises(KeyError):
            next(values)


def test_on_failure_stop_fails_the_calls_it_did_not_run(fabric: str, tmp_path: Path) -> None:
    release = str(tmp_path / "release")
    size = None if fabric == "uni" else 1  # one slave: the failing call is alone in flight
    with Executor(fabric, size, verbosity=0, on_failure="stop") as pool:
        futures = [pool.submit(fails_once_released, release)]
        futures += [pool.submit(square, i) for i in range(2000)]
        open(release, "w").close()  # every call is in before the first one fails
        wait(futures, timeout=60)
        assert pool.submit(square, 6).result(timeout=60) == 36  # later calls run again
    errors = [f.exception() for f in futures]
    assert isinstance(errors[0], KeyError)
    assert [i for i, e in enumerate(errors) if not isinstance(e, MultiError)] == [0]
    # (those it had taken "did not finish", those it had not "were not run")
    assert all(": the run stopped at its first failure" in str(e) for e in errors[1:])


def test_map_timeout_raises_timeout_error(fabric: str, tmp_path: Path) -> None:
    release = str(tmp_path / "release")
    with executor(fabric) as pool:
        values = pool.map(wait_for, [release], timeout=0.2)
        with pytest.raises(TimeoutError):
            next(values)
        open(release, "w").close()


def test_shutdown_cancels_what_waits_and_refuses_new_calls(fabric: str, tmp_path: Path) -> None:
    release = str(tmp_path / "release")
    pool = executor(fabric)
    held = [pool.submit(wait_for, release) for _ in range(12)]  # more than the slaves take
    until(held[0].running)
    late = [pool.submit(square, i) for i in range(5)]
    pool.shutdown(wait=False, cancel_futures=True)
    open(release, "w").close()
    pool.shutdown(wait=True)
    assert all(f.cancelled() for f in late)
    ran = [f for f in held if not f.cancelled()]
    assert ran and len(ran) < len(held)
    assert [f.result() for f in ran] == ["released"] * len(ran)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(square, 1)


def test_a_cancelled_call_never_runs(fabric: str, tmp_path: Path) -> None:
    release = str(tmp_path / "release")
    mark = tmp_path / "ran"
    with executor(fabric) as pool:
        held = [pool.submit(wait_for, release) for _ in range(12)]  # more than the slaves take
        late = pool.submit(open, str(mark), "w")
        assert late.cancel()
        open(release, "w").close()
        wait(held, timeout=60)
    assert late.cancelled()
    with pytest.raises(CancelledError):
        late.result()
    assert not mark.exists()


#: The fabrics whose calls reach their slaves unpickled (the master itself, its threads).
SHARED = {"uni", "thread"}


def test_a_call_that_does_not_pickle_fails_at_once_and_shutdown_ends(fabric: str) -> None:
    """Alone in its run, its failure, found as it was sent, brought no report that would end
    the engine's wait: the future and ``shutdown`` waited for ever."""
    pool = executor(fabric)
    lock = threading.Lock()
    future = pool.submit(id, lock)
    if fabric in SHARED:
        assert future.result(timeout=20) == id(lock)
    else:
        with pytest.raises(UnpicklableError) as raised:
            future.result(timeout=20)
        assert str(raised.value).startswith(  # (the call names itself, with the advice for calls)
            "call of id (call 0) does not pickle: its attribute args[0] (a lock) fails"
        )
        assert "create objects that do not pickle inside the function" in str(raised.value)
    shutting = threading.Thread(target=pool.shutdown)
    shutting.start()
    shutting.join(20)
    assert not shutting.is_alive()


def gives_a_lock() -> Any:
    return threading.Lock()


def test_a_value_that_does_not_pickle_fails_its_call_saying_what_to_return(fabric: str) -> None:
    """It was told as a result of a command, with advice about memos."""
    with executor(fabric) as pool:
        future = pool.submit(gives_a_lock)
        if fabric in SHARED:
            assert future.result(timeout=60) is not None
            return
        with pytest.raises(UnpicklableError) as raised:
            future.result(timeout=60)
        # (the plug-in fabric seals a report without its batch: it cannot name the call)
        named = "call of gives_a_lock (call 0)" if fabric != PLUGIN_FABRIC else "None"
        assert str(raised.value).startswith(f"the value of {named} does not pickle")
        assert "return objects that pickle" in str(raised.value)
        assert pool.submit(square, 3).result(timeout=60) == 9


def test_bad_arguments_are_refused_with_the_reason(fabric: str) -> None:
    with executor(fabric) as pool:
        with pytest.raises(TypeError, match="callable"):
            pool.submit(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(square, range(3), chunksize=0)
    with pytest.raises(ValueError, match="max_workers"):
        Executor(fabric, 0)
    with pytest.raises(TypeError, match="max_workers is a whole number of slaves"):
        Executor(fabric, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="option 'on_failure': expected one of continue, stop"):
        Executor(fabric, on_failure="bogus")


# The framework's contract, for calls -------------------------------------------------------


def test_the_output_of_a_call_is_replayed_as_one_block_with_its_prefix(
    fabric: str, capfd: pytest.CaptureFixture[str]
) -> None:
    if fabric == "uni":
        pytest.skip("one slave: lines go bare")
    size = slaves_for(fabric)
    with Executor(fabric, size) as pool:  # verbosity 1 by default
        assert list(pool.map(talk, range(6), chunksize=1)) == list(range(6))
    out, err = capfd.readouterr()
    lines = [line for line in out.splitlines() if "call" in line]
    assert len(lines) == 12
    for block in range(0, 12, 2):
        rank, text = re.match(r"\s*(\d+)  \| (.*)", lines[block]).groups()  # type: ignore[union-attr]
        i = re.match(r"call (\d+)", text).group(1)  # type: ignore[union-attr]
        assert lines[block + 1] == f"{rank:>{len(str(size))}}  | call {i} line 2"
    assert sorted(re.findall(r"E\| call (\d+) to stderr", err)) == [str(i) for i in range(6)]


@pytest.mark.parametrize(("setting", "drawn"), [("yes", True), ("auto", False)])
def test_a_bar_counts_the_calls_taken_and_waiting_and_shows_only_when_asked_for(
    fabric: str,
    setting: str,
    drawn: bool,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr("multi.progress.DELAY_SECONDS", 0.0)
    monkeypatch.setattr("multi.progress._on_terminal", lambda: True)  # ("auto" would draw)
    flag = tmp_path / "go"
    with executor(fabric, progress=setting) as pool:
        futures = [pool.submit(wait_for, str(flag)) for _ in range(12)]
        flag.touch()  # (none has finished before: every bar drawn knows of all twelve)
        assert [future.result(timeout=60) for future in futures] == ["released"] * 12
    totals = re.findall(r"(\d+)/(\d+) \[", capfd.readouterr().err)
    assert {total for _, total in totals} == ({"12"} if drawn else set())
    assert ("12", "12") in totals or not drawn


def test_a_dead_slave_is_named_and_its_call_retried(fabric: str, tmp_path: Path) -> None:
    if fabric not in REPLACING:
        pytest.skip(f"the {fabric} fabric does not replace a dead slave")
    with executor(fabric) as pool:
        survivor = pool.submit(die_once, str(tmp_path / "died")).result(timeout=60)
        assert survivor != os.getpid()
        dead = pool.submit(die_always)
        with pytest.raises(SlaveDiedError, match=REPLACING[fabric]):
            dead.result(timeout=60)
        assert pool.submit(square, 3).result(timeout=60) == 9


def test_a_call_past_the_timeout_fails_and_the_others_run(fabric: str) -> None:
    if fabric not in REPLACING:
        pytest.skip(f"the {fabric} fabric cannot stop a running call")
    with executor(fabric, timeout=1) as pool:
        stuck = pool.submit(nap, 120)
        quick = [pool.submit(square, i) for i in range(20)]
        with pytest.raises(CommandTimeoutError):
            stuck.result(timeout=60)
        assert [f.result(timeout=60) for f in quick] == [i * i for i in range(20)]


@pytest.mark.parametrize("cancel", [True, False], ids=["cancel_futures", "no cancel_futures"])
def test_shutdown_killing_workers_cancels_the_calls_not_taken_only_if_asked(
    fabric: str, cancel: bool
) -> None:
    if fabric not in REPLACING:
        pytest.skip(f"the {fabric} fabric cannot stop a running call")
    pool = executor(fabric)
    held = [pool.submit(nap, 120) for _ in range(12)]  # more than the slaves take
    until(held[0].running)
    late = [pool.submit(square, i) for i in range(5)]
    pool.shutdown(cancel_futures=cancel, kill_workers=True)
    assert isinstance(held[0].exception(), MultiError)  # dropped, its slave killed
    if cancel:
        assert all(f.cancelled() for f in late)
    else:  # (as loky: they cannot run, and say why)
        assert not any(f.cancelled() for f in held + late)
        errors = [f.exception() for f in held + late]
        assert all("the executor was shut down" in str(e) for e in errors)
        # (it said of the calls it killed that they were not run)
        assert "call 0 did not finish: the executor was shut down" in str(errors[0])


def test_shutdown_killing_workers_without_wait_returns_at_once_and_stops_the_slaves(
    fabric: str, tmp_path: Path
) -> None:
    if fabric not in REPLACING:
        pytest.skip(f"the {fabric} fabric cannot stop a running call")
    pool = executor(fabric)
    held = [pool.submit(nap_noted, str(tmp_path)) for _ in range(SLAVES)]
    until(lambda: len(list(tmp_path.iterdir())) >= SLAVES)
    slaves = {int(note.name) for note in tmp_path.iterdir()}
    released = threading.Event()
    held[0].add_done_callback(lambda _: released.wait(10))  # holds the engine as it ends
    start = time.monotonic()
    pool.shutdown(wait=False, kill_workers=True)
    assert time.monotonic() - start < 5  # (waiting for the engine would take the 10 s)
    released.set()
    assert survivors(slaves) == []
    assert all(isinstance(f.exception(timeout=30), MultiError) for f in held)


# Programs ------------------------------------------------------------------------------------

PROGRAM = textwrap.dedent(
    """
    import sys
    from multi import Executor

    def cube(x):
        return x ** 3

    if __name__ == "__main__":
        fabric = sys.argv[1] if len(sys.argv) > 1 else None
        with Executor(fabric) as pool:
            print(sum(pool.map(cube, range(100))), pool.processor.processor_size() >= 1)
    """
)


def test_an_executor_under_the_launcher_runs_on_the_launcher_slaves(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    result = run(sys.executable, "-m", "multi", "-m", "multiprocessing", "-n", "2", str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "24502500 True"


def test_under_the_launcher_another_fabric_is_refused_with_the_way_to_run_it(
    tmp_path: Path,
) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    launcher = [sys.executable, "-m", "multi", "-m", "multiprocessing", "-n", "2", str(script)]
    same = run(*launcher, "multiprocessing")
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[0] == "24502500 True"
    other = run(*launcher, "thread")
    assert other.returncode == 1
    assert "runs this program on the multiprocessing fabric" in other.stderr
    assert "multi -m thread" in other.stderr


def test_under_the_launcher_other_settings_given_here_are_refused_with_the_flags_that_give_them(
    tmp_path: Path,
) -> None:
    script = tmp_path / "program.py"
    script.write_text(
        "from multi import Executor\n"
        "with Executor(None, max_workers=3, verbosity=0, retries=5) as pool:\n"
        "    print(list(pool.map(abs, [-1])))\n"
    )
    launcher = [sys.executable, "-m", "multi", "-m", "multiprocessing"]
    refused = run(*launcher, "-n", "2", str(script))
    assert refused.returncode == 1
    assert "leave out max_workers=3, verbosity=0, retries=5 here" in refused.stderr
    assert "launch with multi -n 3 -v 0 --retries 5 ..." in refused.stderr
    taken = run(*launcher, "-n", "3", "-v", "0", "--retries", "5", str(script))  # the same
    assert (taken.returncode, taken.stdout) == (0, "[1]\n"), taken.stderr
    script.write_text(script.read_text().replace("retries=5", 'retries="5", retires=2'))
    mistyped = run(*launcher, "-n", "3", "-v", "0", "--retries", "5", str(script))
    assert "the 'multiprocessing' fabric has no option 'retires'" in mistyped.stderr


@pytest.mark.skipif(bool(MPI_MISSING), reason=f"MPI is not available: {MPI_MISSING}")
def test_an_executor_under_mpiexec_serves_on_ranks_above_zero(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    result = run(mpiexec(), "-n", "3", sys.executable, str(script), "mpi4py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["24502500 True"]  # printed by rank 0 alone


#: A call that starts a child, notes in $STARTED that it runs (see ``conftest.interrupt``), and
#: sleeps: the start of a program to interrupt.
FOREVER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from multi import Executor

    def forever(i):
        child = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(os.environ["STARTED"], f"{os.getpid()}-{i}"), "w") as note:
            note.write(str(child.pid))
        time.sleep(600)
    """
)
INTERRUPTED = FOREVER + textwrap.dedent(
    """
    if __name__ == "__main__":
        with Executor(sys.argv[1], 2) as pool:  # (more calls than two slaves hold)
            list(pool.map(forever, range(8), chunksize=1))
    """
)


FORGETFUL = textwrap.dedent(
    """
    import sys, time
    from multi import Executor

    def note(path, i):
        time.sleep(0.05)
        with open(path, "a") as out:
            out.write(f"{i}\\n")

    if __name__ == "__main__":
        pool = Executor(sys.argv[2], 2) if len(sys.argv) > 2 else Executor()
        for i in range(40):
            pool.submit(note, sys.argv[1], i)
        time.sleep(0.5)  # (the program ends while its calls run)
    """
)


def _ran_every_call(result: subprocess.CompletedProcess[str], mark: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert sorted(int(line) for line in mark.read_text().split()) == list(range(40))
    assert "slave" not in result.stderr  # (no death told: nothing stopped the slaves early)


def test_a_program_that_forgets_shutdown_still_gets_its_calls_run(
    replacing_fabric: str, tmp_path: Path
) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(FORGETFUL)
    mark = tmp_path / "mark"
    result = subprocess.run(
        [sys.executable, str(script), str(mark), replacing_fabric],
        capture_output=True,
        text=True,
        timeout=60,
    )
    _ran_every_call(result, mark)


FORKS = textwrap.dedent(
    """
    import multiprocessing
    from multi import Executor

    def child():
        print("the child ran", flush=True)

    if __name__ == "__main__":
        pool = Executor("thread", 2, verbosity=0)
        print(pool.submit(abs, -3).result(), flush=True)
        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(30)
        print("the child ended with", process.exitcode, flush=True)
        pool.shutdown()
    """
)


def test_a_child_forked_while_an_executor_is_open_ends(tmp_path: Path) -> None:
    # The child has no engine of the parent's executor: nothing to finish as it ends.
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    script = tmp_path / "forks.py"
    script.write_text(FORKS)
    result = run(sys.executable, str(script))
    assert result.stdout == "3\nthe child ran\nthe child ended with 0\n", result.stderr


@pytest.mark.parametrize("launched", ["multiprocessing", "thread", "mpi4py"])
def test_an_executor_left_open_on_the_launcher_slaves_gets_its_calls_run(
    launched: str, tmp_path: Path
) -> None:
    if launched in MISSING:
        pytest.skip(f"{launched} is not available: {MISSING[launched]}")
    script = tmp_path / "forgetful.py"
    script.write_text(FORGETFUL)
    mark = tmp_path / "mark"
    result = run(sys.executable, "-m", "multi", "-m", launched, "-n", "2", "-v", "0", str(script),
                 str(mark))  # fmt: skip
    _ran_every_call(result, mark)


INTERRUPTED_LEFT_OPEN = FOREVER + textwrap.dedent(
    """
    if __name__ == "__main__":
        pool = Executor(sys.argv[1], 2)
        for future in [pool.submit(forever, i) for i in range(8)]:
            future.result()
    """
)


INTERRUPTED_AT_EXIT = FOREVER + textwrap.dedent(
    """
    if __name__ == "__main__":  # (their calls run as the program ends)
        # (two executors, but on pvm, whose library serves one processor in a program, and
        # under mpiexec, whose ranks serve the first)
        alone = sys.argv[1] in ("pvm", "mpi4py")
        pools = [Executor(sys.argv[1], 2)] if alone else [Executor(sys.argv[1], 1) for _ in "ab"]
        calls = [(pool, 4 * k + i) for k, pool in enumerate(pools) for i in range(4)]
        futures = [pool.submit(forever, i) for pool, i in calls]
    """
)


NOTED_CHUNKS = textwrap.dedent(
    """
    import os, sys, time
    from multi import Executor

    def noted(i):
        open(os.path.join(sys.argv[1], str(i)), "w").close()
        time.sleep(2)

    if __name__ == "__main__":
        with Executor("uni", verbosity=0) as pool:
            list(pool.map(noted, range(6), chunksize=2))
    """
)


def test_ctrl_c_on_uni_starts_no_call_after_the_chunk_under_way(tmp_path: Path) -> None:
    """uni runs a call where the executor's engine is: the chunk under way finishes, and
    then nothing more starts. The engine sent its next chunk before it asked its calls' source,
    which would have told it to stop: that chunk ran whole."""
    script, notes = tmp_path / "chunks.py", tmp_path / "notes"
    script.write_text(NOTED_CHUNKS)
    notes.mkdir()
    program = subprocess.Popen(
        [sys.executable, str(script), str(notes)], stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        until(lambda: (notes / "0").exists())
        os.killpg(program.pid, signal.SIGINT)  # (as call 0 sleeps: call 1 is of its chunk)
        status = program.wait(timeout=30)
    finally:
        if program.poll() is None:
            os.killpg(program.pid, signal.SIGKILL)
            program.wait()
    assert status == -signal.SIGINT, program.stderr.read()  # type: ignore[union-attr]
    assert sorted(note.name for note in notes.iterdir()) == ["0", "1"]


@pytest.mark.parametrize("kind", ["multiprocessing", "thread", "pvm"])
@pytest.mark.parametrize(
    "program",
    [INTERRUPTED, INTERRUPTED_LEFT_OPEN, INTERRUPTED_AT_EXIT],
    ids=["in a with block", "left open", "at exit"],
)
def test_ctrl_c_ends_an_executor_program_and_every_slave(
    kind: str, program: str, tmp_path: Path
) -> None:
    if kind in MISSING:
        pytest.skip(f"{kind} is not available: {MISSING[kind]}")
    script = tmp_path / "interrupted.py"
    script.write_text(program)
    status, stderr, processes = interrupt([sys.executable, str(script), kind], 2)
    # Ended by Ctrl-C as a shell sees it (130): by the signal itself, as Python ends, or with
    # its status, where MPI ends the job. The calls are dropped, not waited for.
    assert status in (-signal.SIGINT, 128 + signal.SIGINT), stderr
    said = "Ctrl-C as the program ended" if program is INTERRUPTED_AT_EXIT else "KeyboardInterrupt"
    assert said in stderr
    assert "slave" not in stderr and "Error" not in stderr  # (no death told, no traceback)
    assert survivors(processes) == []
