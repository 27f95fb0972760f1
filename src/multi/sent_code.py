"""Code that travels by value goes to each slave process once; later messages name it.

The classes and functions of the application's main script (or notebook) reach slaves by value
(see ``multi.wire``): pickled whole, methods and all, with every batch that uses them. A
script's command class of a few hundred lines would then make up most of every batch of small
commands, both ways. Instead, the first batch to a slave defines it (a persistent id
``("d", key, obj)`` around its by-value pickle) and later ones name it (``("m", key)``); a slave
names the code it received in what it sends back (``("s", key)``), which the master finds
again as its own object.

What is sent once is what a script defines at its top level: classes and functions of the
main module. Lambdas and local definitions, which a program may make anew at every call,
travel by value each time, so nothing here grows with the number of calls. The master keeps
what it gave a key weakly; a slave keeps what it received for its life.
"""

from __future__ import annotations

import itertools
import pickle
import types
import weakref
from typing import Any

import cloudpickle

_keys = itertools.count(1)
#: The master's side: the key of each object sent once, and the object of each key.
_key_of: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_issued: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
#: A slave's side: what it received, by key, and the key of each (by ``id``; kept alive here).
_received: dict[int, Any] = {}
_received_key: dict[int, int] = {}


class Peer:
    """What one slave process holds of the code sent once: ``known`` once a batch that defined
    it was sent, ``offered`` by the batch just pickled (confirmed when it is sent)."""

    __slots__ = ("known", "offered")

    def __init__(self) -> None:
        self.known: set[int] = set()
        self.offered: set[int] = set()

    def confirm(self) -> None:
        """The batch last pickled for this slave was sent: what it defined, the slave has."""
        if self.offered:
            self.known |= self.offered
            self.offered = set()


def _sent_once(obj: Any, main_modules: tuple[str, ...]) -> bool:
    """Whether ``obj`` is code that a script defines at its top level."""
    return (
        getattr(obj, "__module__", None) in main_modules
        and "<" not in getattr(obj, "__qualname__", "<")  # not <lambda>, nor <locals>
    )


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no types
    """cloudpickle's pickler, which defines a script's code once per slave and names it after."""

    def __init__(
        self, file: Any, peer: Peer | None, main_modules: tuple[str, ...], **options: Any
    ) -> None:
        super().__init__(file, **options)
        self.peer = peer
        self.main_modules = main_modules
        self.defining: set[int] = set()  # ids of what this stream defines (its memo names them)
        if peer is not None:
            peer.offered = set()

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, (type, types.FunctionType)):
            return None
        key = _received_key.get(id(obj))
        if key is not None:  # on a slave: code the master sent, named by its key
            return ("s", key)
        peer = self.peer
        if peer is None or id(obj) in self.defining or not _sent_once(obj, self.main_modules):
            return None
        key = _key_of.get(obj)
        if key is None:
            key = _key_of[obj] = next(_keys)
            _issued[key] = obj
        if key in peer.known:
            return ("m", key)
        self.defining.add(id(obj))
        peer.offered.add(key)
        return ("d", key, obj)  # the object inside is pickled by value, as ever


class Unpickler(pickle.Unpickler):
    """Resolves the names of code sent once (see the module)."""

    def persistent_load(self, pid: Any) -> Any:
        kind, key = pid[0], pid[1]
        try:
            if kind == "d":  # a definition: keep it, for the messages that will name it
                obj = pid[2]
                _received[key] = obj
                _received_key[id(obj)] = key
                return obj
            if kind == "m":
                return _received[key]
            if kind == "s":  # (a slave's own round trip finds what it received)
                obj = _issued.get(key)
                return obj if obj is not None else _received[key]
        except KeyError:
            raise pickle.UnpicklingError(
                f"code sent once under key {key} is not known in this process"
            ) from None
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
