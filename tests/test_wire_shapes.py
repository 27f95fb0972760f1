"""What a batch and a report become on the wire: everything comes back, in a lean form."""

from __future__ import annotations

import abc
import copyreg
import dataclasses
import datetime
import enum
import fractions
import functools
import gc
import pickle
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from multi import sent_code, wire
from multi.errors import Failure
from multi.slave import SETUP_ID, Report, batch_for_wire, rebuilt_batch, rebuilt_report, seal
from tests import workloads as w


@pytest.mark.parametrize(
    "ids", [range(5, 9), range(0, 1), [7, 2, 4, 3], [SETUP_ID, SETUP_ID, SETUP_ID, SETUP_ID]]
)
def test_a_batch_comes_back_with_the_ids_of_its_commands(ids: Sequence[int]) -> None:
    commands = [w.Square(i) for i in range(len(ids))]
    frames = wire.dumps(batch_for_wire((ids, commands)))

    batch = rebuilt_batch(frames)

    assert not isinstance(batch, Exception)
    assert list(batch[0]) == list(ids)
    assert [command.x for command in batch[1]] == [0, 1, 2, 3][: len(ids)]
    if isinstance(ids, range):  # a stretch names its first index, not a range object
        assert b"range" not in bytes(frames[0])


@pytest.mark.parametrize("ids", [range(2, 4), [2, 3]])  # (a stretch, and commands sent again)
def test_a_command_holding_only_its_memo_id_travels_without_it_and_gets_it_back(
    ids: Sequence[int],
) -> None:
    bare, more = w.Tiny(), w.Square(2)
    memo_ids = [None, None, 41, 42]
    frames = wire.dumps(batch_for_wire((ids, [bare, more]), memo_ids), sent_code.Peer())

    _, commands, held, _ = wire.loads(frames)
    assert (vars(commands[0]), vars(commands[1]), held) == ({}, {"memo_id": None, "x": 2}, [41, 42])
    batch = rebuilt_batch(frames)
    assert not isinstance(batch, Exception)
    assert [vars(command) for command in batch[1]] == [{"memo_id": 41}, {"memo_id": 42, "x": 2}]


def test_a_report_comes_back_whole() -> None:
    failure = Failure(ValueError("bad"), "While running", 3)
    report = Report(3, [1, 2, 3], [2, 0, 1], [0.5, 0.25, 0.125], {1: [(1, "out\n")]},
                    {1: failure}, started=12.5, lost="was ended by KeyboardInterrupt")  # fmt: skip

    back = rebuilt_report(3, seal(report, []))

    assert type(back) is Report
    assert back.fields()[:5] == report.fields()[:5]
    assert back.started == 12.5 and back.lost == report.lost
    assert back.failures is not None and str(back.failures[1].exception()) == "bad"
    assert back.unreadable is None


# The pickler's table of reducers gives what pickle gives --------------------------------------


class Colour(enum.Enum):
    RED = 1


class Shape(abc.ABC):
    @abc.abstractmethod
    def area(self) -> float: ...


class Plain:
    def __init__(self) -> None:
        self.items = [1, 2]
        self.me = self  # (a cycle)


class Derived(Plain):
    pass


class Empty:
    pass


class Slotted:
    __slots__ = ("a",)

    def __init__(self) -> None:
        self.a = 1


class Own_state:
    def __init__(self) -> None:
        self.a, self.b = 1, 2

    def __getstate__(self) -> dict[str, Any]:
        return {"a": self.a}


class Own_reduce:
    def __reduce__(self) -> Any:
        return (Own_reduce, ())


class Delegating:
    """Answers for what it wraps, as proxies do; pickle looks its hooks up on the class, so
    what it wraps has no say (an int's ``__getnewargs__`` here)."""

    def __init__(self) -> None:
        self.inner = 7

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class Table(dict[str, int]):
    pass


class Registered:
    def __init__(self) -> None:
        self.a = 1


class Registered_late:
    def __init__(self) -> None:
        self.a = 1


@dataclasses.dataclass
class Record:
    a: int = 1


class Failed(Exception):
    pass


def _registered(obj: Registered) -> Any:
    return (Registered, ())


@pytest.fixture
def registered() -> Iterator[None]:
    copyreg.pickle(Registered, _registered)
    try:
        yield
    finally:
        del copyreg.dispatch_table[Registered]


def _kinds() -> list[Any]:
    plain = Plain()
    return [
        plain, [plain, plain], Derived(), Empty(), Slotted(), Own_state(), Own_reduce(),
        Delegating(), Table(a=1), Registered(), Record(), Failed("x"), Colour.RED, Colour, Shape,
        Plain, int,
        fractions.Fraction(1, 3), datetime.datetime(2026, 1, 2), functools.partial(print, 1),
        np.float64(2), range(3), [Plain(), Plain()],
    ]  # fmt: skip


@pytest.mark.parametrize("obj", _kinds(), ids=lambda obj: type(obj).__name__)
def test_a_message_is_pickled_byte_for_byte_as_pickle_does(obj: Any, registered: None) -> None:
    expected = pickle.dumps(obj, protocol=wire.PROTOCOL)

    frames = wire.dumps(obj)

    assert bytes(frames[0]) == expected


def test_a_class_registered_with_copyreg_after_it_travelled_is_pickled_as_registered() -> None:
    wire.dumps(Registered_late())  # (found plain, and kept so)
    copyreg.pickle(Registered_late, lambda obj: (Registered_late, ()))
    try:
        expected = pickle.dumps(Registered_late(), protocol=wire.PROTOCOL)

        frames = wire.dumps(Registered_late())
    finally:
        del copyreg.dispatch_table[Registered_late]

    assert bytes(frames[0]) == expected
    assert bytes(wire.dumps(Registered_late())[0]) == pickle.dumps(Registered_late(), 5)


def test_a_class_registered_again_with_copyreg_is_pickled_as_registered_last() -> None:
    copyreg.pickle(Registered_late, lambda obj: (Registered_late, ()))
    try:
        wire.dumps(Registered_late())  # (its reducer found, and kept)
        copyreg.pickle(Registered_late, lambda obj: (dict, ((("again", 1),),)))
        expected = pickle.dumps(Registered_late(), protocol=wire.PROTOCOL)

        frames = wire.dumps(Registered_late())
    finally:
        del copyreg.dispatch_table[Registered_late]

    assert bytes(frames[0]) == expected
    assert wire.loads(frames) == {"again": 1}


def test_arrays_of_a_plain_object_stay_out_of_band() -> None:
    holder = Plain()
    holder.items = [np.arange(1000.0)]

    frames = wire.dumps(holder)

    assert len(frames) == 2
    back = wire.loads(frames)
    assert back.me is back and np.array_equal(back.items[0], holder.items[0])


# The pickler kept for the next message -------------------------------------------------------


class Nested:
    """Pickles a message of its own while it is pickled (as some objects' reductions do)."""

    def __reduce__(self) -> tuple[Any, ...]:
        inner = wire.dumps([Plain(), np.arange(3.0)])
        return _from_frames, (bytes(inner[0]), [bytes(frame) for frame in inner[1:]])


def _from_frames(stream: bytes, buffers: list[bytes]) -> Any:
    return wire.loads([stream, *buffers])


def test_a_message_pickled_while_another_is_comes_whole_and_leaves_the_other_whole() -> None:
    outer = [Plain(), np.arange(5.0), Nested(), np.arange(7.0)]

    back = wire.loads(wire.dumps(outer))

    assert back[0].me is back[0]
    assert np.array_equal(back[1], np.arange(5.0)) and np.array_equal(back[3], np.arange(7.0))
    inner = back[2]
    assert inner[0].me is inner[0] and np.array_equal(inner[1], np.arange(3.0))


def test_a_message_that_fails_to_pickle_leaves_nothing_in_the_next() -> None:
    with pytest.raises(wire.UnpicklableError):
        wire.dumps([Plain(), np.arange(4.0), threading.Lock()])

    frames = wire.dumps([1, 2])

    assert len(frames) == 1 and bytes(frames[0]) == pickle.dumps([1, 2], protocol=wire.PROTOCOL)


def test_what_was_pickled_is_not_kept_alive() -> None:
    plain = Plain()
    alive = weakref.ref(plain)
    wire.dumps([plain, plain])

    del plain
    gc.collect()

    assert alive() is None
