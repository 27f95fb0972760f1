"""Serialisation of what crosses between master and slaves: pickle protocol 5.

Large buffers (numpy arrays, bytes-like objects that support it) travel out of band, as
separate frames that the transport sends without copying them into the pickle stream.

Objects travel by reference to their module, as pickle does, except code that no slave can
import: what the main module defines (a script, a program fed on standard input, a notebook's
cells) and what is local to a function. That travels by value, with cloudpickle, as loky and
ipyparallel send it; cloudpickle's class tracker makes a class that comes back (a result, an
exception) the sender's own class again. Slaves never import the application's main module.
The C pickler runs first, and cloudpickle only where its stream names the main module or
where it cannot find a class or function by reference, so importable objects pay nothing.

Instances of plain classes, the application's commands and results as a rule, are reduced by
a function made once per class (``multi.reducers``).

When something does not pickle, ``find_unpicklable`` names the attribute that failed, so the
error says what to change.
"""

from __future__ import annotations

import copyreg
import io
import operator
import pickle
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import cloudpickle

from multi import reducers, sent_code
from multi.commands import Slave_command
from multi.errors import UnpicklableError

PROTOCOL = 5
#: The names under which a process knows the application's main module (``__mp_main__`` in a
#: process that multiprocessing started for it): what they define travels by value.
MAIN_MODULES = ("__main__", "__mp_main__")
_MAIN, _MP_MAIN = (name.encode() for name in MAIN_MODULES)

Frames = list[Any]  # the pickle stream, then its out-of-band buffers

#: The default of pickle, for what no table names.
_by_default = operator.methodcaller("__reduce_ex__", PROTOCOL)


def _main_code(obj: Any) -> NoReturn:
    raise pickle.PicklingError("the main module's code travels by value")


class _Reducers(dict[type, Callable[[Any], Any]]):
    """The reducer of each class the pickler meets, found when it first meets it: as
    ``copyreg`` says, a plain class's own (``multi.reducers``), else pickle's default. An
    instance of a class of the main module stops the plain pickler at once, rather than once
    it has pickled the whole message by reference to the main module. An instance of a plain
    class of the script names its class by its key instead, as cloudpickle's pickler would
    (``multi.sent_code``) at a fraction of the cost, where no definition needs to go with it:
    in a batch, where the slave holds the class as it is (``_as_sent``); in a report, where
    the slave received it (``_as_received``).

    A class whose instances are classes has none: pickle saves those by name when the table
    names no reducer, and only then.
    """

    def __init__(self, reports: bool = False) -> None:
        super().__init__()
        self.reports = reports

    def __missing__(self, cls: type) -> Callable[[Any], Any]:
        if issubclass(cls, type):
            raise KeyError(cls)
        if len(self) >= reducers.KEPT:
            self.clear()
        if cls.__module__ in MAIN_MODULES:
            made = _as_received(cls) if self.reports else _as_sent(cls)
            reducer: Callable[[Any], Any] = made or _main_code
        elif cls in copyreg.dispatch_table:
            reducer = _as_registered(cls)
        elif not self.reports and issubclass(cls, Slave_command) and reducers.plain[cls]:
            reducer = _as_queued(copyreg.__newobj__, (cls,))  # type: ignore[attr-defined]
        else:
            reducer = reducers.plain[cls] or _by_default
        self[cls] = reducer
        return reducer


# An instance that holds one attribute unpickles in four times the time of one that holds none
# (220 ns against 55): pickle builds its state, a dictionary, and sets it item by item. Where the
# message says that attribute for all its instances, they travel without it (a result's rank:
# ``multi.slave.seal``).


def _as_queued(new: Callable[..., Any], args: tuple[Any, ...]) -> reducers.Reducer:
    """The reducer of a plain class of commands, in a batch: a command that holds nothing but
    its memo id travels as its class alone; the batch carries the memo ids of its commands
    (``multi.slave.batch_for_wire``), and one inside another command was not queued: its memo
    id reads None (the class's)."""

    def reduce(obj: Any) -> Any:
        state = obj.__dict__
        return new, args, None if len(state) == 1 and "memo_id" in state else (state or None)

    return reduce


def _as_registered(cls: type) -> Callable[[Any], Any]:
    """The reducer of a class registered with ``copyreg``: the one registered when an instance
    is pickled, as pickle asks (a registration may be replaced by another for the same class,
    which leaves the number of registrations as it was)."""
    table = copyreg.dispatch_table

    def reduce(obj: Any) -> Any:
        registered = table.get(cls)
        return registered(obj) if registered is not None else _by_default(obj)

    return reduce


def _as_received(cls: type) -> Callable[[Any], Any] | None:
    """The reducer of a plain class that this process received, for a report (or None)."""
    name = sent_code.received(cls) if _plain_made(cls) else None
    if name is None:
        return None

    def reduce(obj: Any) -> Any:
        _kept.named += 1  # (noted for ``dumps``)
        return _NEW, (name,), obj.__dict__ or None

    return reduce


def _as_sent(cls: type) -> Callable[[Any], Any] | None:
    """The reducer of a plain class of the script, for a batch (or None): its instances name
    it where the slave holds it as it is (``sent_code.known``), else go by cloudpickle's way,
    which defines it first."""
    if not _plain_made(cls):
        return None
    lone = "memo_id" if issubclass(cls, Slave_command) else ""  # (see ``_as_queued``)

    def reduce(obj: Any) -> Any:
        kept = _kept
        if kept.peer is None:
            _main_code(obj)
        peer, names = kept.peer  # (what this message found of each class: once for all)
        name = names.get(cls, False)
        if name is False:
            name = names[cls] = sent_code.known(cls, peer, MAIN_MODULES)
        if name is None:
            _main_code(obj)
        kept.named += 1  # (noted for ``dumps``)
        state = obj.__dict__
        return _NEW, (name,), None if len(state) == 1 and lone in state else (state or None)

    return reduce


#: How an instance that names its class (``sent_code.Named_code``) is made again: in C, as
#: ``copyreg.__newobj__`` makes one where ``__new__`` is object's own.
_NEW = object.__new__


def _plain_made(cls: type) -> bool:
    """Whether instances of ``cls`` are plain (``multi.reducers``) and made by ``_NEW``."""
    return reducers.plain[cls] is not None and cls.__new__ is _NEW  # type: ignore[comparison-overlap]


class _Pickler(pickle.Pickler):
    dispatch_table = _Reducers()


class _Report_pickler(pickle.Pickler):
    """For what goes without a peer, a slave's reports: no code is sent once there."""

    dispatch_table = _Reducers(reports=True)


reducers.kept(_Pickler.dispatch_table)
reducers.kept(_Report_pickler.dispatch_table)


class _Pickling:
    """A pickler with its file and its buffers, which pickles one message after another:
    making them took as long as pickling a batch of one tiny command. ``busy`` while it
    pickles, as an object's own reduction may pickle another message meanwhile."""

    def __init__(self, kind: type[pickle.Pickler] = _Pickler) -> None:
        self.file = io.BytesIO()
        self.buffers: list[pickle.PickleBuffer] = []
        self.pickler = kind(self.file, PROTOCOL, buffer_callback=self.buffers.append)
        self.busy = False

    def frames(self, obj: Any) -> Frames:
        """Pickle ``obj``: the stream, then the out-of-band buffers."""
        self.busy = True
        try:
            self.pickler.dump(obj)
            return [self.file.getvalue(), *self.buffers]
        finally:
            self.pickler.clear_memo()  # (the memo holds the objects: none is kept alive here)
            self.file.seek(0)
            self.file.truncate()
            self.buffers.clear()
            self.busy = False


class _Kept(threading.local):
    """The picklings of this thread, kept for its next message: to a peer, and without one."""

    def __init__(self) -> None:
        self.pickling = _Pickling()
        self.report = _Pickling(_Report_pickler)
        #: The slave process that the batch being pickled goes to (``dumps``), with what it
        #: names each class of the script by, as the batch found (``_as_sent``).
        self.peer: tuple[sent_code.Peer, dict[type, sent_code.Named_code | None]] | None = None
        #: Instances of the script's classes named by the C pickler so far (``dumps``).
        self.named = 0


_kept = _Kept()


def _by_reference(obj: Any, report: bool = False) -> Frames:
    """Pickle ``obj`` with the C pickler, code and classes by reference (with ``report``, as
    ``_Report_pickler`` does); a message pickled while another is gets a pickling of its own."""
    pickling = _kept.report if report else _kept.pickling
    if pickling.busy:
        pickling = _Pickling(type(pickling.pickler))
    return pickling.frames(obj)


COMMAND_ADVICE = (
    "Commands travel to the slaves: keep objects that do not pickle in a Memo on the master, "
    "or create them inside run(); code of the main script travels with the globals it uses."
)
#: The same for an executor's calls, which travel as the function and its arguments.
CALL_ADVICE = (
    "A call travels to a slave with its function and arguments: create objects that do not "
    "pickle inside the function; code of the main script travels with the globals it uses."
)


def dumps(obj: Any, peer: sent_code.Peer | None = None) -> Frames:
    """Pickle ``obj`` into frames: the stream first, then each out-of-band buffer.

    ``peer`` is the slave process it goes to: the main script's code that travels by value
    then goes once (see ``multi.sent_code``). Raises ``UnpicklableError`` if it does not pickle.
    """
    reducers.check_registrations()
    named = _kept.named
    try:
        if peer is None:
            frames = _by_reference(obj, report=True)
        else:
            if peer.offered:  # (a batch pickled again, smaller, defines what it defines itself)
                peer.offered = {}
            frames = _to_peer(obj, peer)
    except (pickle.PicklingError, AttributeError):  # not found by reference: try by value
        pass
    except Exception as exc:
        # Where an instance of the script's classes named its class, the C pickler went on to
        # its attributes, which cloudpickle's way took before: what the C pickler refuses and
        # cloudpickle does not (a module, a dictionary's keys, a property) goes that way, as
        # then.
        if _kept.named == named:
            raise UnpicklableError(f"{type(exc).__name__}: {exc}") from exc
    else:
        head = frames[0]
        # One scan for the end that both names share (``in`` on bytes costs twice ``find``).
        if head.find(b"main__") < 0 or not _names_main(head):
            return frames
    return _dumps_by_value(obj, peer)


def _to_peer(obj: Any, peer: sent_code.Peer) -> Frames:
    """``_by_reference``, with the slave that the batch goes to at hand for the reducers of
    the script's classes (``_as_sent``)."""
    kept = _kept
    outer, kept.peer = kept.peer, (peer, {})
    try:
        return _by_reference(obj)
    finally:
        kept.peer = outer


def _names_main(head: bytes) -> bool:
    """Whether a pickle stream refers to the main module."""
    return _MAIN in head or _MP_MAIN in head


def _dumps_by_value(obj: Any, peer: sent_code.Peer | None) -> Frames:
    """Pickle ``obj`` with cloudpickle: the code of the main module, and code that cannot be
    found by reference, by value; the rest by reference, and buffers out of band as ever."""
    mp_main = sys.modules.get("__mp_main__")
    if mp_main is not None and not _by_value(mp_main):
        cloudpickle.register_pickle_by_value(mp_main)
    buffers: list[pickle.PickleBuffer] = []
    try:
        with io.BytesIO() as file:
            sent_code.Pickler(
                file, peer, MAIN_MODULES, protocol=PROTOCOL, buffer_callback=buffers.append
            ).dump(obj)
            head = file.getvalue()
    except Exception as exc:
        raise UnpicklableError(f"{type(exc).__name__}: {exc}") from exc
    return [head, *buffers]


def _by_value(module: types.ModuleType) -> bool:
    """Whether cloudpickle sends what ``module`` defines by value."""
    return module.__name__ in cloudpickle.list_registry_pickle_by_value()


def loads(frames: Sequence[Any]) -> Any:
    """Rebuild an object from the frames that ``dumps`` made."""
    return unpickle(frames[0], frames[1:])


def unpickle(stream: Any, buffers: Sequence[Any]) -> Any:
    """Rebuild an object from a pickle stream and its out-of-band buffers.

    ``pickle.loads`` reads it without a copy of the stream, code sent once included.
    """
    return pickle.loads(stream, buffers=buffers)


def byte_view(frame: Any) -> memoryview:
    """A frame as a flat view of its bytes, without a copy. A buffer pickled out of band keeps
    its array's shape, which ``raw`` flattens: a cast cannot where the shape holds a zero."""
    return memoryview(frame.raw() if isinstance(frame, pickle.PickleBuffer) else frame).cast("B")


def size(frames: Frames) -> int:
    """The bytes that frames take on the wire."""
    total = 0
    for frame in frames:  # (a generator took as long again as this loop, on every message)
        total += memoryview(frame).nbytes
    return total


def round_trip(obj: Any) -> Any:
    """A copy of ``obj`` made as a slave on another machine would receive it.

    Raises ``UnpicklableError`` if it does not make the trip.
    """
    frames = dumps(obj)
    try:
        return loads(frames)
    except Exception as exc:
        raise UnpicklableError(f"{type(exc).__name__} while unpickling: {exc}") from exc


def find_unpicklable(obj: Any, depth: int = 4) -> tuple[str, Any, str] | None:
    """The innermost part of ``obj`` that does not make the pickle round trip, as
    (path, part, reason), or None if it all does."""
    try:
        round_trip(obj)
    except UnpicklableError as exc:
        reason = str(exc)
    else:
        return None
    if depth > 0:
        for label, part in _parts(obj):
            found = find_unpicklable(part, depth - 1)
            if found is not None:
                return (label + found[0], found[1], found[2])
    return ("", obj, reason)


def _parts(obj: Any) -> list[tuple[str, Any]]:
    """The parts of ``obj`` that pickling it pickles, each with the step that reaches it.

    Code that travels by value takes along what it uses: a function its variables and the
    globals it names, a class its methods, an object its class.
    """
    if isinstance(obj, dict):
        return [(f"[{key!r}]", value) for key, value in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{index}]", value) for index, value in enumerate(obj)]
    if isinstance(obj, types.FunctionType):
        return _code_parts(obj)
    if isinstance(obj, type):
        if not _travels_by_value(obj):
            return []
        return [(f", method {name}", value) for name, value in vars(obj).items()
                if isinstance(value, types.FunctionType)]  # fmt: skip
    parts = []
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        parts = [(f".{name}", value) for name, value in state.items()]
    if _travels_by_value(type(obj)):
        parts.append((f", class {type(obj).__qualname__}", type(obj)))
    return parts


def _code_parts(function: types.FunctionType) -> list[tuple[str, Any]]:
    """What a function pickled by value takes along: its variables, the globals it names."""
    parts: list[tuple[str, Any]] = []
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (), strict=True):
        try:
            parts.append((f", variable {name}", cell.cell_contents))
        except ValueError:  # a variable not bound yet
            continue
    names = function.__code__.co_names
    parts += [(f", global {name}", function.__globals__[name])
              for name in names if name in function.__globals__]  # fmt: skip
    return parts


def _travels_by_value(cls: type) -> bool:
    """Whether a class travels by value: one of the main module, or local to a function."""
    return cls.__module__ in MAIN_MODULES or "<locals>" in cls.__qualname__


def unpicklable_error(what: str, obj: Any, advice: str) -> UnpicklableError:
    """The error for ``obj`` that does not pickle, naming the part that failed."""
    found = find_unpicklable(obj)
    if found is None:
        return UnpicklableError(f"{what} does not pickle with the rest of its batch. {advice}")
    path, part, reason = found
    kind = type(part).__qualname__
    return UnpicklableError(
        f"{what} does not pickle: {_where(path)} (a {kind}) fails: {reason}. {advice}"
    )


def _where(path: str) -> str:
    """Words for a path that ``find_unpicklable`` gave: its attribute x[1], its global y ..."""
    if not path:
        return "it"
    if path.startswith(", "):
        return f"its {path[2:]}"
    if path.startswith("["):
        return f"its item {path}"
    return f"its attribute {path[1:]}"
