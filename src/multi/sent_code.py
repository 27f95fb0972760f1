"""Code that travels by value goes to each slave process once for as long as it is the same;
later messages name it.

The classes and functions of the application's main script (or notebook) reach slaves by value
(see ``multi.wire``): pickled whole, methods, globals and all. A script's command class of a few
hundred lines would make up most of every batch of small commands, and come back with every
result. Instead, a message names such code by a key (``("m", key)``, which ``named`` turns
into the object where the message is unpickled), and the first place that names it carries
before it the definitions that the slave lacks (``("d", [(key, pickle), ...], key)``); a slave
names the code it received in what it sends back (``("s", key)``), which the master finds
again as its own object, whose code sees the master's globals.

The pickler looks at what it meets through ``reducer_override``, which pickle calls once for
each object of a message that is not a number, a string or a container, and reduces instances
of plain classes itself (``multi.reducers``): a batch of a script's tiny commands is pickled in
a quarter of the time that cloudpickle takes alone.

The master pickles the code again for every run: a definition is the same only if its pickle
is, so a global that the program changes between runs (``THRESHOLD = 10`` in a cell) reaches
the slaves as before. Within one ``run_queue`` the code is taken as it was when its first batch
named it (``hold``): pickling a script's command class by value takes some 0.1-0.5 ms, which
every batch paid. (A run that the Executor keeps open is not held: it may last across cells.)
What is saved is the master's pickling, the bytes on the wire and the slaves' unpickling.

What is named so is what a script defines at its top level: classes and functions of the
main module. Lambdas and local definitions, which a program may make anew at every call,
travel by value each time, so nothing here grows with the number of calls.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import pickle
import secrets
import types
from dataclasses import dataclass
from typing import Any

import cloudpickle

from multi import reducers

#: The master's side: the keys it issues (``_issue_afresh``), the key of each object (by
#: ``id``), and the object of each key.
_keys = itertools.count()
_key_of: dict[int, int] = {}
_issued: dict[int, Any] = {}
#: A slave's side: what it received, by key, and the key of each (by ``id``), every version
#: kept so that no ``id`` passes to another object.
_received: dict[int, Any] = {}
_received_key: dict[int, int] = {}
_superseded: list[Any] = []


@dataclass(slots=True)
class _Definition:
    """A definition made for a message: the object, its pickle and digest, and the keys of
    the code that the pickle names (defined before it)."""

    obj: Any
    key: int
    data: bytes
    digest: bytes
    names: list[int]


#: While a run is held (``hold``), the definitions made for its messages, by ``id``.
_held: dict[int, _Definition] | None = None


def hold() -> None:
    """Take the code of the main module as it is now named for the rest of a run: each object
    is pickled for its first message, and that pickle serves the run's other messages."""
    global _held
    _held = {}


def release() -> None:
    """End ``hold``: the next message pickles the code again (a global may have changed)."""
    global _held
    _held = None


class Peer:
    """What one slave process holds of the code sent once: the digest of each definition's
    pickle, ``known`` once a batch that carried it was sent, ``offered`` by the batch just
    pickled (known when it is sent)."""

    __slots__ = ("known", "offered")

    def __init__(self) -> None:
        self.known: dict[int, bytes] = {}
        self.offered: dict[int, bytes] = {}

    def confirm(self) -> None:
        """The batch last pickled for this slave was sent: what it defined, the slave has."""
        if self.offered:
            self.known.update(self.offered)
            self.offered = {}


def _named(obj: Any, main_modules: tuple[str, ...]) -> bool:
    """Whether ``obj`` is code that a script defines at its top level."""
    return (
        getattr(obj, "__module__", None) in main_modules
        and "<" not in getattr(obj, "__qualname__", "<")  # not <lambda>, nor <locals>
    )


def _issue_afresh() -> None:
    """Issue keys that no other process issues (from a random start of its own, again in a
    forked child, which issued nothing of what it inherited): a slave that passes code on to
    slaves of its own issues keys beside those its master sent, and must not take one for
    another."""
    global _keys
    _keys = itertools.count(secrets.randbits(40) << 20)
    _key_of.clear()
    _issued.clear()


_issue_afresh()
os.register_at_fork(after_in_child=_issue_afresh)


def _key(obj: Any) -> int:
    key = _key_of.get(id(obj))
    if key is None:
        key = _key_of[id(obj)] = next(_keys)
        _issued[key] = obj  # (kept: its id stays its own, and a slave may name it later)
    return key


class _Message:
    """What one message has decided of the code it names: the key of each object (by ``id``),
    the digest of each key, what is being pickled now, and the definitions not yet placed."""

    __slots__ = ("definitions", "digests", "in_progress", "keys", "names", "uses")

    def __init__(self) -> None:
        self.keys: dict[int, int] = {}
        self.digests: dict[int, bytes] = {}
        self.in_progress: set[int] = set()
        self.definitions: list[tuple[int, bytes]] = []
        self.uses: list[bytes] = []  # the digests of what the definition being made names
        self.names: list[int] = []  # and their keys


#: The reducer of each plain class that cloudpickle does not reduce its own way.
_plain = reducers.Plain_reducers(cloudpickle.Pickler.dispatch_table)
_code_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]
#: The file name cloudpickle gives every code object it pickles by value.
_NO_FILE = "<dynamic-code>"


def _code_in_its_file(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, with its file's name, where cloudpickle
    names none (to pickle the same code alike wherever it was written): a slave's traceback
    then names the script and its line, and shows the line where the script is there too."""
    constructor, arguments = _code_reduce(code)
    filename = code.co_filename
    return constructor, tuple(filename if arg == _NO_FILE else arg for arg in arguments)


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no types
    """cloudpickle's pickler, which defines a script's code once per slave and names it after.

    The message names each such object; the first place that names it also carries, before
    it, the definitions that the slave lacks: of the object, and of the code that it names in
    turn (a definition names the others, by key). A definition is the same if its pickle and
    those of everything it names are: code that calls a function whose globals changed is
    defined again, with it.
    """

    def __init__(
        self,
        file: Any,
        peer: Peer | None,
        main_modules: tuple[str, ...],
        message: _Message | None = None,
        **options: Any,
    ) -> None:
        super().__init__(file, **options)
        self.peer = peer
        self.main_modules = main_modules
        self.outer = message is None
        self.message = _Message() if message is None else message

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            return _code_in_its_file(obj)
        if isinstance(obj, (type, types.FunctionType)):
            name = self._name(obj)
            if name is not None:
                return named, (name,)
            return super().reducer_override(obj)
        reducer = _plain[type(obj)]
        return NotImplemented if reducer is None else reducer(obj)

    def _name(self, obj: type | types.FunctionType) -> tuple[Any, ...] | None:
        """What a message says in place of code sent once (see ``named``), or None where the
        code travels otherwise: by value, or by reference to its module."""
        key = _received_key.get(id(obj))
        if key is not None and self.peer is None:  # a slave's report: code its master sent
            return ("s", key)
        message = self.message
        if self.peer is None or id(obj) in message.in_progress:  # (a cycle: by value here)
            return None
        if not _named(obj, self.main_modules):
            return None
        key = message.keys.get(id(obj))
        if key is None:
            key = self._define(obj)
        if not self.outer:
            message.uses.append(message.digests[key])
            message.names.append(key)
            return ("m", key)
        if message.definitions:
            definitions, message.definitions = message.definitions, []
            return ("d", definitions, key)
        return ("m", key)

    def _define(self, obj: Any) -> int:
        """Pickle ``obj`` by value, naming the code it names (defined first where needed);
        queue its definition if the slave lacks it."""
        message = self.message
        held = _held.get(id(obj)) if _held is not None else None
        if held is not None and held.obj is obj:
            for named in held.names:  # (what it names, defined before it as the first time)
                if named not in message.digests:
                    self._define(_issued[named])
            message.keys[id(obj)] = held.key
            self._offer(held.key, held.data, held.digest)
            return held.key
        key = message.keys[id(obj)] = _key(obj)
        message.in_progress.add(id(obj))
        outer, message.uses, message.names = (message.uses, message.names), [], []
        with io.BytesIO() as file:
            Pickler(file, self.peer, self.main_modules, message, protocol=self.proto).dump(obj)
            data = file.getvalue()
        digest = hashlib.blake2b(data + b"".join(message.uses), digest_size=16).digest()
        if _held is not None:
            _held[id(obj)] = _Definition(obj, key, data, digest, message.names)
        message.uses, message.names = outer
        message.in_progress.discard(id(obj))
        self._offer(key, data, digest)
        return key

    def _offer(self, key: int, data: bytes, digest: bytes) -> None:
        """Note a definition's digest; queue it for the message if the slave lacks it."""
        peer, message = self.peer, self.message
        assert peer is not None
        message.digests[key] = digest
        if peer.known.get(key) != digest and peer.offered.get(key) != digest:
            peer.offered[key] = digest
            message.definitions.append((key, data))


def named(name: tuple[Any, ...]) -> Any:
    """The code that a message names (``Pickler._name``), once its definitions are kept."""
    kind, key = name[0], name[-1]
    try:
        if kind == "d":  # definitions, kept for the messages that will name them
            for defined, data in name[1]:
                # In the process that issued it (the master, under uni's pickle_check) a
                # definition is taken as the master's own object: unpickled again, cloudpickle
                # would set on the master's class copies of its methods, which see copies of
                # the master's globals.
                obj = _issued[defined] if defined in _issued else pickle.loads(data)
                old = _received.get(defined)
                if old is not None:
                    _superseded.append(old)
                _received[defined] = obj
                _received_key[id(obj)] = defined
            return _received[key]
        if kind == "m":
            return _received[key]
        if kind == "s":  # (a slave's own round trip finds what it received)
            return _issued[key] if key in _issued else _received[key]
    except KeyError:
        raise pickle.UnpicklingError(
            f"code sent once under key {key} is not known in this process"
        ) from None
    raise pickle.UnpicklingError(f"unknown name of code sent once: {name!r}")
