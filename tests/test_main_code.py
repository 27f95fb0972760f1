"""Code defined in the main module (a script without a ``__main__`` guard, a program on standard
input, a notebook's cells) reaches the slaves by value, and comes back as the master's own;
slaves never run the application's top-level code."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from multi import UnpicklableError, sent_code, wire
from tests import workloads as w
from tests.conftest import MISSING, MPI_MISSING, run_master

ROOT = Path(__file__).parent.parent
APP = ROOT / "tests" / "apps" / "main_code.py"
SECONDS = 60
METHODS = [
    m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()
]
#: Every fabric whose slaves are processes: multiprocessing under each start method, mpi4py
#: started alone (its slaves spawned), and pvm.
PROCESS_FABRICS = [
    pytest.param("multiprocessing", {"MULTI_MULTIPROCESSING_START_METHOD": m}, id=m)
    for m in METHODS
] + [
    pytest.param(
        "mpi4py",
        {},
        id="mpi4py",
        marks=pytest.mark.skipif(bool(MPI_MISSING), reason=f"MPI is not available: {MPI_MISSING}"),
    ),
    pytest.param(
        "pvm",
        {},
        id="pvm",
        marks=pytest.mark.skipif(
            "pvm" in MISSING, reason=f"PVM is not available: {MISSING.get('pvm')}"
        ),
    ),
]
#: How the program starts: a script, the same program on standard input, the launcher.
WAYS = {
    "script": lambda fabric: [sys.executable, str(APP), fabric, "3"],
    "stdin": lambda fabric: [sys.executable, "-", fabric, "3"],
    "launcher": lambda fabric: [
        sys.executable, "-m", "multi", "-m", fabric, "-n", "2", "-v", "0", str(APP), fabric, "3"
    ],
}  # fmt: skip


def run_app(command: list[str], env: dict[str, str], ran: Path) -> tuple[int, str, str, int]:
    """Run the program; return its status, output, error output and pid."""
    with open(APP) as program:
        process = subprocess.Popen(
            command,
            stdin=program if command[1] == "-" else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **env, "MAIN_CODE_RAN": str(ran)},
        )
        try:
            out, err = process.communicate(timeout=SECONDS)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return process.returncode, out, err, process.pid


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(("process_fabric", "env"), PROCESS_FABRICS)
def test_a_program_without_a_main_guard_runs_its_top_level_once(
    process_fabric: str, env: dict[str, str], way: str, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    status, out, err, pid = run_app(WAYS[way](process_fabric), env, ran)
    assert status == 3, err
    assert "Traceback" not in err, err
    assert ran.read_text().split() == [str(pid)]  # the master alone ran the top level
    assert out.count("the top level ran") == 1
    assert "cubes: [0, 1, 8, 27, 64], own classes: True" in out
    assert "the master's globals: [0, 1, 8, 27, 64]" in out
    assert "the second run sent a third of the first's bytes or less: True" in out
    assert "a global changed on the master reaches the slaves: True" in out
    assert "Odd_error from a slave: True: 5 is not wanted" in out


NESTED = """
from multi import Executor

FACTOR = 10

def leaf(x):
    return x * FACTOR

def nested(n):
    with Executor("multiprocessing", max_workers=1, verbosity=0) as inner:
        return sum(inner.map(leaf, range(n)))

if __name__ == "__main__":
    with Executor("multiprocessing", max_workers=1, verbosity=0) as outer:
        print("nested:", outer.submit(nested, 4).result(timeout=60))
        FACTOR = 100  # (leaf goes again, under the key it had: the slave's own keys differ)
        print("nested:", outer.submit(nested, 4).result(timeout=60))
"""


def test_a_slave_passes_the_scripts_code_it_received_on_to_slaves_of_its_own(
    tmp_path: Path,
) -> None:
    # The slave that runs ``nested`` received ``leaf`` from the master; its own slaves did not.
    script = tmp_path / "nested.py"
    script.write_text(NESTED)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=SECONDS, cwd=ROOT
    )
    assert (result.returncode, result.stdout) == (0, "nested: 60\nnested: 600\n"), result.stderr


FAILING = """
from multi import Executor

def parse(text):
    return int(text)  # the line that fails

if __name__ == "__main__":
    with Executor("multiprocessing", max_workers=1, verbosity=0) as pool:
        try:
            pool.submit(parse, "twelve").result(timeout=60)
        except ValueError as error:
            print(error.__cause__)
"""


def test_a_slave_traceback_names_the_script_and_shows_its_line(tmp_path: Path) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=SECONDS, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert f'File "{script}", line 5, in parse' in result.stdout
    assert "return int(text)  # the line that fails" in result.stdout


def test_under_the_pickle_check_the_masters_code_stays_its_own(tmp_path: Path) -> None:
    # uni's pickle check unpickles the slave's side of every trip in the master's own process,
    # where the script's code was defined: its classes, and the globals they see, must stay the
    # master's own, as on any other fabric.
    env = {"MULTI_UNI_PICKLE_CHECK": "1"}
    status, out, err, _ = run_app(WAYS["script"]("uni"), env, tmp_path / "ran")
    assert status == 3, err
    assert "cubes: [0, 1, 8, 27, 64], own classes: True" in out
    assert "the master's globals: [0, 1, 8, 27, 64]" in out
    assert "a global changed on the master reaches the slaves: True" in out


def test_code_of_the_main_module_that_cannot_travel_is_named(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    status, out, err, _ = run_app(WAYS["script"]("multiprocessing"), {}, ran)
    assert status == 3, err
    message = next(line for line in out.splitlines() if line.startswith("UnpicklableError"))
    assert "command Uses_the_lock" in message
    assert "its class Uses_the_lock, method run, global LOCK (a lock) fails" in message
    assert "cannot pickle '_thread.lock' object" in message
    assert "code of the main script travels with the globals it uses" in message


@pytest.fixture
def pickling(fabric: str) -> dict[str, Any]:
    """The options under which a fabric pickles what travels (skip the fabric if it cannot)."""
    if fabric == "thread":
        pytest.skip("threads share objects: nothing is pickled")
    return {"pickle_check": True} if fabric == "uni" else {}


def test_local_classes_travel_by_value_and_come_back_as_the_masters_own(
    fabric: str, pickling: dict[str, Any]
) -> None:
    class Local_point:
        def __init__(self, x: int) -> None:
            self.x = x

    class Local_error(Exception):
        pass

    class Make(w.Slave_command):
        def __init__(self, x: int) -> None:
            super().__init__()
            self.x = x

        def run(self, processor: Any, completed: bool) -> None:
            if self.x < 0:
                raise Local_error("negative")
            processor.return_object(w.Value(processor, Local_point(self.x)))

    def body(processor: Any) -> tuple[list[Any], BaseException]:
        memo = w.Record()
        for x in (1, 2, -1):
            processor.add_to_queue(Make(x), memo)
        with pytest.raises(Local_error) as caught:
            processor.run_queue()
        return [value for _, value in memo.values], caught.value

    points, error = run_master(fabric, body, **pickling)
    assert [type(point) for point in points] == [Local_point, Local_point]
    assert [point.x for point in points] == [1, 2]
    assert type(error) is Local_error


def test_a_dataclass_that_travels_by_value_keeps_its_fields(
    fabric: str, pickling: dict[str, Any]
) -> None:
    @dataclasses.dataclass
    class Fit(w.Slave_command):
        x: int
        scale: float = 2.0

        def __post_init__(self) -> None:
            super().__init__()

        def run(self, processor: Any, completed: bool) -> None:
            fields = [field.name for field in dataclasses.fields(self)]
            processor.return_object(w.Value(processor, (fields, self.x * self.scale)))

    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        for x in (1, 2):
            processor.add_to_queue(Fit(x), memo)
        processor.run_queue()
        return [value for _, value in memo.values]

    assert run_master(fabric, body, **pickling) == [(["x", "scale"], 2.0), (["x", "scale"], 4.0)]
    assert [field.name for field in dataclasses.fields(Fit)] == ["x", "scale"]  # (the master's)


def test_what_cannot_travel_even_by_value_is_named(fabric: str, pickling: dict[str, Any]) -> None:
    lock = threading.Lock()

    def body(processor: Any) -> None:
        processor.add_to_queue(w.Carries(lambda: lock))
        pattern = r"Carries.*its attribute payload, variable lock \(a lock\) fails"
        with pytest.raises(UnpicklableError, match=pattern):
            processor.run_queue()

    run_master(fabric, body, **pickling)


def test_importable_objects_take_the_plain_pickler() -> None:
    frames = wire.dumps((list(range(3)), [w.Square(i) for i in range(3)]))
    assert b"cloudpickle" not in frames[0]
    assert frames[0] == pickle.dumps(
        (list(range(3)), [w.Square(i) for i in range(3)]), protocol=wire.PROTOCOL
    )


def test_arrays_stay_out_of_band_in_code_that_travels_by_value() -> None:
    numpy = pytest.importorskip("numpy")

    class Holds:
        def __init__(self, array: Any) -> None:
            self.array = array

    array = numpy.arange(100_000, dtype=float)
    frames = wire.dumps(Holds(array))
    assert b"cloudpickle" in frames[0] and len(frames[0]) < 10_000
    assert len(frames) == 2 and wire.size(frames[1:]) == array.nbytes
    copy = wire.loads(frames)
    assert type(copy) is Holds and numpy.array_equal(copy.array, array)


class Counting:
    """A class attribute that counts how often the class holding it was pickled by value."""

    pickled = 0

    def __reduce__(self) -> tuple[Any, ...]:
        Counting.pickled += 1
        return (Counting, ())


def test_within_a_run_a_scripts_code_is_pickled_once_for_all_its_batches() -> None:
    script = {"__name__": "__main__"}
    exec("class Work:\n    def run(self, processor, completed): pass", script)
    work = script["Work"]
    work.counting = Counting()
    batch = ([0], [work()])
    before = Counting.pickled
    sent_code.hold()  # as the engine does for a run_queue
    try:
        messages = [wire.dumps(batch, sent_code.Peer()) for _ in range(3)]  # three new slaves
        work.counting = Counting()  # changed during the run: the run keeps what it sent
        messages.append(wire.dumps(batch, sent_code.Peer()))
    finally:
        sent_code.release()
    assert Counting.pickled - before == 1
    assert all(message[0] == messages[0][0] for message in messages)  # each defines it alike
    wire.dumps(batch, sent_code.Peer())  # the next run takes the code as it is then
    assert Counting.pickled - before == 2
