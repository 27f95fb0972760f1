"""Code defined in the main module (a script without a ``__main__`` guard, a program on standard
input, a notebook's cells) reaches the slaves by value, and comes back as the master's own;
slaves never run the application's top-level code."""

from __future__ import annotations

import array
import dataclasses
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
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
    assert "code changed in place reaches the slaves: True" in out
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
    assert "code changed in place reaches the slaves: True" in out


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


def test_a_memoryview_keeps_its_type_format_and_shape_by_either_pickler() -> None:
    """Pickle refuses a memoryview, and cloudpickle made its bytes ``bytes``: by reference it
    failed, by value it changed type."""
    numpy = pytest.importorskip("numpy")

    class Holds:  # (local: by value, through cloudpickle's pickler)
        def __init__(self, views: list[memoryview]) -> None:
            self.views = views

    def views() -> list[memoryview]:
        grid = numpy.arange(12.0).reshape(3, 4)
        return [
            memoryview(array.array("i", [1, 2, 3])),
            memoryview(grid),  # (contiguous: out of band)
            memoryview(grid[:, ::2]),  # (strided: its bytes, in the stream)
            memoryview(b"read only"),
            memoryview(numpy.zeros(0)),  # (empty)
            memoryview(numpy.float64(2.5)),  # (no dimension)
        ]

    for copies in (wire.loads(wire.dumps(views())), wire.loads(wire.dumps(Holds(views()))).views):
        for copy, view in zip(copies, views(), strict=True):
            assert type(copy) is memoryview
            assert (copy.format, copy.shape, copy.readonly) == (
                view.format,
                view.shape,
                view.readonly,
            )
            assert copy.tolist() == view.tolist()


def test_a_memoryview_that_cannot_be_made_again_is_refused_saying_what_to_send() -> None:
    """Its bytes came back as a view of bytes, of another type and shape, without a word."""
    numpy = pytest.importorskip("numpy")
    pairs = numpy.zeros(2, dtype=[("x", "<f8"), ("y", "<i4")])
    for view in (memoryview(numpy.zeros(2, dtype=complex)), memoryview(pairs)):
        with pytest.raises(UnpicklableError, match=r"cannot be made again .* send the object"):
            wire.dumps([view])


@pytest.fixture
def pickled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the script's code pickled by value from now on, in order."""
    names: list[str] = []

    class Noting(sent_code.Pickler):  # type: ignore[misc]
        def dump(self, obj: Any) -> None:
            if not self.outer:  # (a definition; the outer pickler makes the message)
                names.append(obj.__qualname__)
            super().dump(obj)

    monkeypatch.setattr(sent_code, "Pickler", Noting)
    return names


def script(source: str) -> dict[str, Any]:
    """The globals of a script (code of the main module) that ``source`` defines."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)
    return namespace


def carried(command: Any, peer: sent_code.Peer, held: bool = True) -> list[str]:
    """The definitions that the batch of ``command`` carries to ``peer``, in a run of its own
    (``held`` as ``run_queue`` holds it; else as a run that the Executor keeps open)."""
    if held:
        sent_code.hold()
    try:
        wire.dumps(([0], [command]), peer)
        names = sorted(sent_code._issued[key].__qualname__ for key in peer.offered)
        peer.confirm()
    finally:
        sent_code.release()
    return names


SCALED = """
    FACTOR = 2
    OFFSETS = [0]
    UNREAD = 0

    def scaled(x):
        return FACTOR * x + OFFSETS[-1]

    class Work:
        step = 1

        def __init__(self, x):
            self.x = x

        def run(self, processor, completed):
            return scaled(self.x) * self.step
"""
EVERY = ["Work", "Work.__init__", "Work.run", "scaled"]


@pytest.mark.parametrize("held", [True, False], ids=["run_queue", "open run"])
def test_a_scripts_code_is_pickled_once_while_nothing_it_reads_changes(
    pickled: list[str], held: bool
) -> None:
    code = script(SCALED)
    peer = sent_code.Peer()
    assert carried(code["Work"](1), peer, held) == EVERY
    assert sorted(pickled) == EVERY
    pickled.clear()
    assert carried(code["Work"](2), peer, held) == []
    assert carried(code["Work"](3), sent_code.Peer(), held) == EVERY  # (a new slave)
    assert pickled == []


@pytest.mark.parametrize(
    ("change", "again"),
    [
        ("FACTOR = 3", ["Work", "Work.run", "scaled"]),  # and what names it, to see it
        ("OFFSETS.append(5)", ["Work", "Work.run", "scaled"]),  # in place
        ("Work.step = 2", ["Work"]),
        ("Work.__init__.__defaults__ = (0,)", ["Work", "Work.__init__"]),
        ("def scaled(x):\n    return x", ["Work", "Work.run", "scaled"]),  # defined anew
        ("UNREAD = 1", []),
    ],
    ids=["global", "list", "class attribute", "defaults", "redefined", "unread"],
)
def test_code_whose_state_changed_between_runs_goes_again_with_what_names_it(
    pickled: list[str], change: str, again: list[str]
) -> None:
    code = script(SCALED)
    peer = sent_code.Peer()
    carried(code["Work"](1), peer)
    exec(change, code)
    assert carried(code["Work"](2), peer) == again
    assert carried(code["Work"](3), peer) == []


def test_in_a_cycle_of_functions_a_change_to_one_sends_the_others_again() -> None:
    # hops is pickled inside hop's definition, by value (it is being defined as hop is): hop
    # must go again when what hops reads changes, though hop itself did not change.
    code = script(
        """
        LANDING = 1

        def hops(n):
            return hop(n - 1) if n else LANDING

        def hop(n):
            return hops(n)

        class Hop:
            def run(self, processor, completed):
                return hops(2)
        """
    )
    peer = sent_code.Peer()
    assert carried(code["Hop"](), peer) == ["Hop", "Hop.run", "hop", "hops"]
    code["LANDING"] = 2
    assert carried(code["Hop"](), peer) == ["Hop", "Hop.run", "hop", "hops"]


def test_a_built_in_method_of_a_global_is_looked_at_with_its_object() -> None:
    # cloudpickle pickles PARAMS.get with the dictionary: a value changed in it must go.
    code = script(
        """
        PARAMS = {"scale": 1}
        LOOKUP = PARAMS.get

        class Scaled:
            def run(self, processor, completed):
                return LOOKUP("scale") * len("ab")
        """
    )
    peer = sent_code.Peer()
    carried(code["Scaled"](), peer)
    assert carried(code["Scaled"](), peer) == []
    code["PARAMS"]["scale"] = 2
    assert carried(code["Scaled"](), peer) == ["Scaled", "Scaled.run"]


def test_a_slave_that_holds_another_version_of_a_class_that_code_names_gets_it_again() -> None:
    # A class that goes again is updated in place in the slave (cloudpickle's class tracker),
    # under the code that came with its first version: once the master's class is as it was
    # then, that code is as it was, but the class must go again.
    code = script(
        """
        class Model:
            scale = 1

        class First:
            def run(self, processor, completed):
                return Model.scale

        class Second:
            def run(self, processor, completed):
                return -Model.scale
        """
    )
    first, second, model = code["First"], code["Second"], code["Model"]
    slave, other = sent_code.Peer(), sent_code.Peer()
    carried(first(), slave)
    model.scale = 2
    assert carried(second(), slave) == ["Model", "Second", "Second.run"]
    model.scale = 1
    carried(second(), other)  # (the run's first batch went to another slave)
    assert carried(first(), slave) == ["Model"]


def test_a_definition_that_a_run_did_not_look_at_is_let_go() -> None:
    # A class defined again in a cell at every run: each version's pickle must not stay.
    namespace: dict[str, Any] = {}
    versions = []
    for _ in range(3):
        namespace = script(SCALED)
        versions.append(namespace["Work"])
        carried(namespace["Work"](1), sent_code.Peer())
    made = {id(definition.obj) for definition in sent_code._made.values()}
    assert id(versions[0]) not in made
    assert {id(versions[1]), id(versions[2])} <= made  # (the last run's, and this one's)
    peer = sent_code.Peer()
    assert carried(versions[0](1), peer) == EVERY  # (made again where it is named again)
    assert carried(versions[0](1), peer) == []


def test_a_forked_child_is_in_no_run_of_its_parents(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_keys", "_key_of", "_issued", "_made"):  # (this process's own, kept)
        value = getattr(sent_code, name)
        monkeypatch.setattr(sent_code, name, value if name == "_keys" else value.copy())
    sent_code.hold()  # (forked during a run: a slave started in place of a lost one)
    try:
        sent_code._issue_afresh()  # (what a forked child does first)
        assert sent_code._run_checks is None  # (its own runs look at their code again)
    finally:
        sent_code.release()


def test_code_whose_state_cannot_be_looked_at_is_pickled_for_every_run(
    pickled: list[str],
) -> None:
    code = script(
        """
        import weakref

        SEEN = weakref.WeakSet()  # (plain pickle refuses it; cloudpickle has its own way)

        class Counts:
            def run(self, processor, completed):
                return len(SEEN)
        """
    )
    peer = sent_code.Peer()
    assert carried(code["Counts"](), peer) == ["Counts", "Counts.run"]
    pickled.clear()
    assert carried(code["Counts"](), peer) == []  # (pickled alike: nothing goes again)
    assert pickled == ["Counts", "Counts.run"]


def test_a_lambda_that_code_reads_is_looked_at_by_what_it_is_made_of(
    pickled: list[str],
) -> None:
    code = script(
        """
        OFFSET = 1
        SHIFT = lambda x: x + OFFSET  # (a lambda travels by value wherever it is met)

        class Shifted:
            def run(self, processor, completed):
                return SHIFT(1)
        """
    )
    peer = sent_code.Peer()
    assert carried(code["Shifted"](), peer) == ["Shifted", "Shifted.run"]
    pickled.clear()
    assert carried(code["Shifted"](), peer) == []
    assert pickled == []
    code["OFFSET"] = 2  # what the lambda reads
    assert carried(code["Shifted"](), peer) == ["Shifted", "Shifted.run"]
    exec("SHIFT = lambda x: x - OFFSET", code)  # another lambda
    assert carried(code["Shifted"](), peer) == ["Shifted", "Shifted.run"]
    assert carried(code["Shifted"](), peer) == []


@pytest.mark.parametrize("kind", ["dataclass", "abc"])
def test_dataclasses_and_abstract_classes_are_pickled_once_too(
    pickled: list[str], kind: str
) -> None:
    code = script(
        """
        import abc
        import dataclasses

        @dataclasses.dataclass
        class Fit:
            x: int
            scale: float = 2.0

            def run(self, processor, completed):
                return self.x * self.scale

        class Base(abc.ABC):
            @abc.abstractmethod
            def run(self, processor, completed): ...

        class Concrete(Base):
            def run(self, processor, completed):
                return 1
        """
    )
    command = code["Fit"](1) if kind == "dataclass" else code["Concrete"]()
    peer = sent_code.Peer()
    carried(command, peer)
    pickled.clear()
    assert carried(command, peer) == []
    assert pickled == []
    type(command).tag = "changed"
    assert type(command).__qualname__ in carried(command, peer)
    if kind == "abc":  # (its registry is its state; the caches that isinstance fills are not)
        assert isinstance(command, code["Base"]) and carried(command, peer) == []
        code["Base"].register(int)
        assert carried(command, peer) == ["Base", "Concrete"]


def test_a_forked_child_makes_its_own_definitions(
    pickled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child forked from a master that sent code (a slave started later under fork) issues
    # keys of its own: it passes the script's code on to slaves of its own under those keys.
    code = script(SCALED)
    carried(code["Work"](1), sent_code.Peer())
    pickled.clear()
    for name in ("_keys", "_key_of", "_issued", "_made"):  # (this process's own, kept)
        value = getattr(sent_code, name)
        monkeypatch.setattr(sent_code, name, value if name == "_keys" else value.copy())
    sent_code._issue_afresh()  # (what a forked child does first)
    peer = sent_code.Peer()
    assert carried(code["Work"](1), peer) == EVERY
    assert sorted(pickled) == EVERY
    assert {sent_code._issued[key] for key in peer.known} == {
        code["Work"],
        code["Work"].__init__,
        code["Work"].run,
        code["scaled"],
    }


def cloudpickled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The messages pickled by cloudpickle's way from now on (one pickler each)."""
    used: list[Any] = []

    class Noting(sent_code.Pickler):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("message") is None and len(args) < 4:  # (not a definition's)
                used.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sent_code, "Pickler", Noting)
    return used


def test_a_batch_names_the_scripts_classes_its_slave_holds_without_cloudpickle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = script(SCALED)
    peer = sent_code.Peer()
    carried(code["Work"](1), peer)  # (the definitions go with the first batch)
    used = cloudpickled(monkeypatch)
    assert carried(code["Work"](2), peer) == []
    assert used == []  # (the C pickler alone: the slave holds the class as it is)
    wire.dumps(code["Work"](3), peer)
    assert len(used) == 1  # (outside a run, the code is looked at by cloudpickle's way)
    code["FACTOR"] = 3
    assert carried(code["Work"](4), peer) == ["Work", "Work.run", "scaled"]
    assert carried(code["Work"](5), sent_code.Peer()) == EVERY


def test_a_report_names_the_classes_its_slave_received_without_cloudpickle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = script(
        """
        class Point:
            def __init__(self, x):
                self.x = x

        class Slotted:
            __slots__ = ("x",)

            def __init__(self, x):
                self.x = x
        """
    )
    point, slotted = code["Point"], code["Slotted"]
    # As a slave receives them (in the process that issued them, as uni's pickle check does).
    wire.loads(wire.dumps([point, slotted], sent_code.Peer()))
    used = cloudpickled(monkeypatch)
    copies = wire.loads(wire.dumps([point(1), point(2)]))  # (a report goes to no peer)
    assert [(type(copy), copy.x) for copy in copies] == [(point, 1), (point, 2)]
    assert used == []  # (the C pickler alone)
    copy = wire.loads(wire.dumps(slotted(3)))  # (not a plain class: by cloudpickle, as ever)
    assert (type(copy), copy.x) == (slotted, 3)
    assert len(used) == 1


@pytest.mark.parametrize("attribute", ["module", "keys"])
def test_what_the_plain_pickler_refuses_in_an_instance_that_names_its_class_goes_by_cloudpickle(
    attribute: str,
) -> None:
    code = script(
        """
        import math

        class Holds:
            def __init__(self, kind):
                self.held = math if kind == "module" else {1: 2}.keys()
        """
    )
    holds = code["Holds"]
    peer = sent_code.Peer()
    carried(holds(attribute), peer)
    carried(holds(attribute), peer)  # (the slave holds the class: the C pickler's way first)
    wire.loads(wire.dumps([holds], sent_code.Peer()))  # (received, as a slave receives it)
    copy = wire.loads(wire.dumps(holds(attribute)))  # (a report: the C pickler's way first)
    assert type(copy) is holds and type(copy.held) is type(holds(attribute).held)


def test_within_a_run_a_scripts_code_is_taken_as_its_first_batch_found_it(
    pickled: list[str],
) -> None:
    code = script(SCALED)
    batch = ([0], [code["Work"](1)])
    sent_code.hold()  # as the engine does for a run_queue
    try:
        messages = [wire.dumps(batch, sent_code.Peer()) for _ in range(3)]  # three new slaves
        code["FACTOR"] = 3  # changed during the run: the run keeps what it sent
        messages.append(wire.dumps(batch, sent_code.Peer()))
    finally:
        sent_code.release()
    assert sorted(pickled) == EVERY
    assert all(message[0] == messages[0][0] for message in messages)  # each defines it alike
    pickled.clear()
    wire.dumps(batch, sent_code.Peer())  # the next run takes the code as it is then
    assert sorted(pickled) == ["Work", "Work.run", "scaled"]
