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

A definition is the same only if its pickle is, so a global that the program changes between
runs (``THRESHOLD = 10`` in a cell) reaches the slaves as before. But pickling a script's command
class by value, with its methods and its result's class, takes the master most of a
millisecond: ten times a round trip. So the master keeps each pickle, with a snapshot of what
it depends on (``_state``: the globals, defaults and closure of a function, the attributes of a
class, with the code they meet named by identity), and pickles again only code whose snapshot
changed, or that meets code whose snapshot did. Within one ``run_queue`` the code is taken as
it was when its first batch named it (``hold``); a run that the Executor keeps open, which may
last across cells, looks again for every message. What cannot be looked at so (a global that
plain pickle refuses, such as a weak set) is pickled again for every run, as before.
What is saved is the master's pickling, the bytes on the wire and the slaves' unpickling.

What is named so is what a script defines at its top level: classes and functions of the
main module. Lambdas and local definitions, which a program may make anew at every call,
travel by value each time, so nothing here grows with the number of calls.
"""

from __future__ import annotations

import abc
import hashlib
import io
import itertools
import os
import pickle
import secrets
import types
from dataclasses import dataclass, field
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
    """A definition made for a message: the object, its pickle and digest, the keys of the
    code that the pickle names (defined before it) and their digests then, and the snapshot
    of what the pickle depends on (``_state``; None where it cannot be told)."""

    obj: Any
    key: int
    data: bytes
    digest: bytes
    names: list[int]
    uses: list[bytes]
    state: _State | None = None
    name: Named_code | None = None  # (what a batch names it by, made when first needed)
    seen: int = 0  # (the last run that looked at it: see ``hold``)


@dataclass(slots=True)
class _State:
    """What a definition's pickle is made of (``_leaves``), to tell whether it would be the
    same now: the ``id`` of each leaf that is compared by identity (``_fixed``; 0 for the
    others), the digest of the others, pickled (the content of a list that the program
    appends to counts), and the ``id`` of each piece of the script's code met (it has its own
    definition, looked at in turn)."""

    ids: list[int]
    fixed: list[bool]
    loose: bytes = b""  # (their digest; empty where every leaf is fixed)
    met: list[int] = field(default_factory=list)
    #: The objects whose ``id`` it holds, kept so that no ``id`` passes to another object
    #: (not the loose leaves: an array that the program lets go is not kept for it).
    kept: list[Any] = field(default_factory=list)


#: Every definition made, by ``id`` of its object: taken again while ``_unchanged``.
_made: dict[int, _Definition] = {}
#: The runs held so far (``hold``). A definition that neither a run nor the messages after it
#: looked at is let go when the next run starts: a class defined again in a notebook's cell at
#: every run would otherwise keep the pickle of each version, its large globals included.
_runs = 0
#: While a run is held (``hold``), whether each definition it looked at is unchanged, by
#: ``id``: the run takes the code as it was when its first message named it.
_run_checks: dict[int, bool] | None = None


def hold() -> None:
    """Take the code of the main module as it is now named for the rest of a run: each
    definition is looked at (and pickled if it changed) for its first message, and serves the
    run's other messages as it is. The definitions that the run before did not look at go."""
    global _run_checks, _runs
    _run_checks = {}
    _runs += 1
    if _made:  # (none where the script's code never travelled: the usual run)
        for gone in [key for key, made in _made.items() if made.seen < _runs - 1]:
            del _made[gone]


def release() -> None:
    """End ``hold``: the next message looks at the code again (a global may have changed)."""
    global _run_checks
    _run_checks = None


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
    another. (The definitions made under the keys it inherited go with them; it is in no run of
    its parent's.)"""
    global _keys, _run_checks
    _keys = itertools.count(secrets.randbits(40) << 20)
    _run_checks = None
    _key_of.clear()
    _issued.clear()
    _made.clear()


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

    __slots__ = ("checks", "definitions", "digests", "in_progress", "keys", "names", "uses")

    def __init__(self) -> None:
        #: What ``_unchanged`` found, by ``id``: the run's, else this message's own.
        self.checks: dict[int, bool] = _run_checks if _run_checks is not None else {}
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
        queue its definition if the slave lacks it. A definition made before serves again if
        neither it nor the code it meets changed since."""
        message = self.message
        made = _made.get(id(obj))
        checks = message.checks
        if made is not None and made.obj is obj and _unchanged(made, checks, self.main_modules):
            if _held_as_known(made, self.peer, checks):  # type: ignore[arg-type]
                message.keys[id(obj)] = made.key
                message.digests[made.key] = made.digest
                return made.key
            message.in_progress.add(id(obj))  # (code it names, made again, names it by value)
            for named in made.names:  # (defined before it, as the first time)
                if named not in message.digests and id(_issued[named]) not in message.in_progress:
                    self._define(_issued[named])
            message.in_progress.discard(id(obj))
            if [message.digests.get(named) for named in made.names] == made.uses:
                message.keys[id(obj)] = made.key
                self._offer(made.key, made.data, made.digest)
                return made.key
        state = _state(obj, self.main_modules)  # (before pickling: what the pickle reads)
        key = message.keys[id(obj)] = _key(obj)
        message.in_progress.add(id(obj))
        outer, message.uses, message.names = (message.uses, message.names), [], []
        with io.BytesIO() as file:
            Pickler(file, self.peer, self.main_modules, message, protocol=self.proto).dump(obj)
            data = file.getvalue()
        digest = hashlib.blake2b(data + b"".join(message.uses), digest_size=16).digest()
        _made[id(obj)] = _Definition(
            obj, key, data, digest, message.names, message.uses, state, seen=_runs
        )
        message.checks[id(obj)] = True  # (what the run takes from now on)
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


def _unchanged(made: _Definition, checks: dict[int, bool], main_modules: tuple[str, ...]) -> bool:
    """Whether a definition made before would pickle as it did: neither its own state nor
    that of any code it meets has changed, cycles included. Each definition it reaches is
    looked at once for ``checks`` (a run's, or a message's outside a run)."""
    root = id(made.obj)
    found = checks.get(root)
    if found is not None:
        return found
    reached: dict[int, _Definition | None] = {root: made}
    stack = [made]
    while stack:
        state = stack.pop().state
        for met in state.met if state is not None else ():
            if met not in reached and met not in checks:
                definition = reached[met] = _made.get(met)
                if definition is not None:
                    stack.append(definition)
    changed = {
        key
        for key, definition in reached.items()
        if definition is None
        or definition.state is None
        or not _same(definition.state, definition.obj, main_modules)
    }
    # (then whatever meets changed code has changed too, until nothing more does)
    spread = True
    while spread:
        spread = False
        for key, definition in reached.items():
            if key in changed:
                continue
            meets = definition.state.met  # type: ignore[union-attr]  # (else changed)
            if any(other in changed or checks.get(other) is False for other in meets):
                changed.add(key)
                spread = True
    for key, definition in reached.items():
        checks[key] = key not in changed
        if definition is not None:
            definition.seen = _runs  # (kept for the next run: see ``hold``)
    return checks[root]


def _held_as_known(made: _Definition, peer: Peer, checks: dict[int, bool]) -> bool:
    """Whether the slave holds an unchanged definition as it is, and all that it names, and
    what that names in turn, as they are now: the usual case, where nothing needs to be defined.

    Each named definition is looked at in the slave too: it may have received another version
    since, with other code that names it (the run before, a global had another value). A class
    received again is updated in place (cloudpickle's class tracker), so the code that it
    came with would see that version, not the one it was pickled with."""
    known = peer.known
    if known.get(made.key) != made.digest:
        return False
    stack, seen = [made], {made.key}
    while stack:
        definition = stack.pop()
        for named, digest in zip(definition.names, definition.uses):  # noqa: B905
            if named in seen:
                continue
            seen.add(named)
            obj = _issued[named]
            other = _made.get(id(obj))
            if not checks.get(id(obj)) or other is None or other.digest != digest:
                return False  # (not looked at yet, made again or let go: go through them)
            if known.get(named) != digest:
                return False  # (the slave holds another version: it goes again)
            other.seen = _runs
            stack.append(other)
    return True


def known(cls: type, peer: Peer, main_modules: tuple[str, ...]) -> Named_code | None:
    """What a batch names a class of the script by, if the slave of ``peer`` holds its
    definition as it is for the run under way (and all that it names): its instances can then
    name it, which the C pickler does (``multi.wire``). None outside a run (``hold``), or where
    the definition must go first."""
    checks = _run_checks
    made = _made.get(id(cls))
    if checks is None or made is None or made.obj is not cls:
        return None
    if not _unchanged(made, checks, main_modules) or not _held_as_known(made, peer, checks):
        return None
    if made.name is None:
        made.name = Named_code(("m", made.key))
    return made.name


#: cloudpickle's own account of the globals that a function's pickle holds, and of what it
#: pickles by reference (private to cloudpickle: under a version without them, every
#: definition is pickled again for every run, as ``_state`` then tells nothing).
_code_globals = getattr(cloudpickle.cloudpickle, "_extract_code_globals", None)
_by_reference = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)
#: Objects that a state names by identity: immutable, and made by the interpreter.
_BY_IDENTITY = (
    types.CodeType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


class _Unsure(Exception):
    """What a definition depends on cannot be told by looking at it."""


class _Absent:
    """Stands for a global that a function names but that is not defined, or a cell not
    filled yet: defining it changes the function."""


def _stands_for(*what: Any) -> None:
    """What a snapshot puts in place of an object it records its own way (never called)."""


class _State_pickler(pickle.Pickler):
    """Pickles the leaves of a state that are not compared by identity. Plain values are
    pickled as pickle would; what ``_fixed`` takes (code of the interpreter, of the script,
    found by reference) is named by identity; code that cloudpickle pickles by value where it
    is met (a lambda, a local class) is described by its own leaves."""

    def __init__(self, file: Any, main_modules: tuple[str, ...], state: _State) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.main_modules = main_modules
        self.state = state
        self.described: set[int] = set()

    def reducer_override(self, obj: Any) -> Any:
        if obj is _stands_for:
            return NotImplemented
        if _fixed(obj, self.main_modules, self.state.met):  # (the rule of the fixed leaves)
            return self._by_identity(obj)
        kind = type(obj)
        if kind is types.FunctionType or isinstance(obj, type):
            if id(obj) in self.described:  # (met again, within itself: as pickle's memo)
                return self._by_identity(obj)
            self.described.add(id(obj))  # a lambda, a local class: by what it is made of
            return _stands_for, ("by value", _leaves(obj))
        if kind is types.ModuleType:  # (one that cloudpickle pickles by value)
            raise _Unsure(obj)
        if kind is types.CellType:
            return _stands_for, ("cell", _contents(obj))
        if kind is types.MappingProxyType:
            return _stands_for, ("mapping", dict(obj))
        if kind is staticmethod or kind is classmethod:
            return _stands_for, (kind, obj.__func__)
        if kind is property:
            return _stands_for, (kind, obj.fget, obj.fset, obj.fdel, obj.__doc__)
        return NotImplemented

    def _by_identity(self, obj: Any) -> Any:
        self.state.kept.append(obj)
        return _stands_for, ("id", id(obj))


#: Values compared by identity where they are leaves of a state (with code, in ``_fixed``).
_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None), type(...), range})


def _leaves(obj: Any) -> list[Any]:
    """What the pickle of a function or a class of the script is made of, its dictionaries
    flattened (each behind its length): the code of a function, its names, defaults, the
    globals it reads and its closure; the attributes of a class, the classes registered with
    an abstract one. A global's value is one leaf."""
    leaves: list[Any]
    if isinstance(obj, type):
        leaves = [type(obj), obj.__name__, obj.__qualname__, obj.__bases__]
        attributes = vars(obj)
        _flatten(attributes, leaves)
        if "_abc_impl" in attributes:  # (its caches change at every isinstance: not its state)
            registered = abc._get_dump(obj)[0]  # type: ignore[attr-defined]
            leaves[6 + 2 * list(attributes).index("_abc_impl")] = len(registered)
            leaves += [reference() for reference in registered]
        return leaves
    code = obj.__code__
    leaves = [code, obj.__name__, obj.__qualname__, obj.__module__, obj.__doc__]
    leaves.append(obj.__defaults__)
    found = obj.__globals__.get
    leaves += [found(name, _Absent) for name in _global_names(code)]
    leaves += [_contents(cell) for cell in obj.__closure__ or ()]
    for part in (obj.__kwdefaults__ or {}, obj.__annotations__, obj.__dict__):
        _flatten(part, leaves)
    return leaves


def _flatten(mapping: Any, leaves: list[Any]) -> None:
    """Add a dictionary to the leaves: its length, then each key and value."""
    leaves.append(len(mapping))
    for item in mapping.items():
        leaves += item


#: The globals that each function's code reads, by ``id`` of the code (kept with it).
_names_read: dict[int, tuple[types.CodeType, tuple[str, ...]]] = {}


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The globals that cloudpickle pickles with a function of this code (it keeps them too,
    but in a weak dictionary, which takes a third of the time to look at a function)."""
    known = _names_read.get(id(code))
    if known is None or known[0] is not code:
        known = _names_read[id(code)] = (code, tuple(_code_globals(code)))  # type: ignore[misc]
    return known[1]


def _contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # (not filled yet)
        return _Absent


def _fixed(value: Any, main_modules: tuple[str, ...], met: list[int]) -> bool:
    """Whether a leaf is the same exactly where it is the same object: a number, a string,
    code of the interpreter, of the script (``met``), or found by reference; a tuple of those;
    a built-in method bound to one of those (cloudpickle pickles ``PARAMS.get`` with the
    dictionary, which the program may change)."""
    kind = type(value)
    if kind in _ATOMS or kind in _BY_IDENTITY:
        return True
    if kind is types.BuiltinFunctionType:  # (bound to its module, or to an object: {}.get)
        owner = value.__self__
        return owner is None or _fixed(owner, main_modules, met)
    if kind is types.FunctionType or isinstance(value, type):
        if _named(value, main_modules):
            met.append(id(value))
            return True
        return bool(_by_reference(value))  # type: ignore[misc]
    if kind is types.ModuleType:
        return bool(_by_reference(value))  # type: ignore[misc]
    if kind is tuple or kind is frozenset:
        return all(_fixed(item, main_modules, met) for item in value)
    return False


def _state(obj: Any, main_modules: tuple[str, ...]) -> _State | None:
    """What the pickle of ``obj`` (a function or a class of the script) is made of now, or
    None where that cannot be told: a value that plain pickle refuses, a module pickled by
    value, another version of cloudpickle."""
    if _code_globals is None or _by_reference is None:
        return None
    try:
        leaves = _leaves(obj)
        met: list[int] = []
        fixed = [_fixed(leaf, main_modules, met) for leaf in leaves]
        kept = [leaf for leaf, is_fixed in zip(leaves, fixed) if is_fixed]  # noqa: B905
        state = _State(_ids(leaves, fixed), fixed, met=met, kept=kept)
        if len(kept) < len(leaves):
            state.loose = _pickled_loose(state, leaves, main_modules)
    except Exception:  # (_Unsure; or what a value's own reduction raises)
        return None
    return state


def _ids(leaves: list[Any], fixed: list[bool]) -> list[int]:
    return [id(leaf) if is_fixed else 0 for leaf, is_fixed in zip(leaves, fixed)]  # noqa: B905


def _pickled_loose(state: _State, leaves: list[Any], main_modules: tuple[str, ...]) -> bytes:
    """The digest of the leaves that are not fixed, pickled (a digest: a large global that
    code reads is not kept a second time beside the definition's own pickle)."""
    loose = [leaf for leaf, fixed in zip(leaves, state.fixed) if not fixed]  # noqa: B905
    with io.BytesIO() as file:
        _State_pickler(file, main_modules, state).dump(loose)
        return hashlib.blake2b(file.getbuffer(), digest_size=16).digest()


def _same(state: _State, obj: Any, main_modules: tuple[str, ...]) -> bool:
    """Whether ``obj`` is made now as ``state`` says: its fixed leaves are the same objects,
    the others pickle alike."""
    try:
        leaves = _leaves(obj)
        if len(leaves) != len(state.ids):
            return False
        if not state.loose:  # (every leaf fixed: the usual code)
            return list(map(id, leaves)) == state.ids
        if _ids(leaves, state.fixed) != state.ids:
            return False
        scratch = _State(state.ids, state.fixed)
        return _pickled_loose(scratch, leaves, main_modules) == state.loose
    except Exception:  # (as in ``_state``)
        return False


class Named_code:
    """Stands in a message for code that it names (``named``), which the C pickler can write:
    one object per class, so that a message unpickles it once for all its instances."""

    __slots__ = ("name",)

    def __init__(self, name: tuple[Any, ...]) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return named, (self.name,)


#: The stand-in of each class received, by key: what a report names it by (``received``).
_received_names: dict[int, Named_code] = {}


def received(cls: type) -> Named_code | None:
    """What a report names a class by, if this process received it (a slave: from its
    master), as cloudpickle's pickler names it (``Pickler._name``)."""
    key = _received_key.get(id(cls))
    if key is None:
        return None
    name = _received_names.get(key)
    if name is None:
        name = _received_names[key] = Named_code(("s", key))
    return name


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
