"""How instances of plain classes are pickled: a reducer made once per class.

For an instance of a class of its own, pickle asks ``object.__reduce_ex__``, which looks for a
dozen hooks the class may define (``__getnewargs_ex__``, ``__getstate__``, slot names...) at
every instance, to end with the same three things each time: ``copyreg.__newobj__``, the class,
and the instance's ``__dict__``. That search was half the time it took to pickle a batch of
tiny commands. A class found plain (``plain``: Python classes only, no slots, none of pickle's
hooks, nothing registered with ``copyreg``) gets a reducer that gives those three things
straight away; the stream is byte for byte what pickle writes.

A ``memoryview`` travels as one too, with its format and shape (``view``): pickle refuses
one, and cloudpickle sends its bytes as ``bytes``, so that it came back as one or the other
depending on the pickler the message took.
"""

from __future__ import annotations

import copyreg
from collections.abc import Callable, Mapping
from typing import Any

Reducer = Callable[[Any], Any]

_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement (or like one)
#: What a class may define to be pickled its own way (object has the first three, as its own).
_HOOKS = ("__reduce_ex__", "__reduce__", "__getstate__", "__getnewargs_ex__", "__getnewargs__")
#: Classes whose reducer is known, beyond which a table starts again (classes made anew in a
#: loop would otherwise be kept for ever).
KEPT = 10_000


def _plain(cls: type) -> bool:
    """Whether ``object.__reduce_ex__`` reduces instances of ``cls`` to its ``__newobj__``,
    the class and the instance's ``__dict__``."""
    if cls.__mro__[-1] is not object or not cls.__dictoffset__:
        return False
    for base in cls.__mro__[:-1]:
        if not base.__flags__ & _HEAP_TYPE or "__slots__" in base.__dict__:
            return False
    own = [getattr(cls, hook, None) for hook in _HOOKS]
    return own == [getattr(object, hook, None) for hook in _HOOKS]


def _reducer(cls: type) -> Reducer | None:
    if copyreg.dispatch_table.get(cls) is not None or not _plain(cls):
        return None
    newobj, args = copyreg.__newobj__, (cls,)  # type: ignore[attr-defined]
    return lambda obj: (newobj, args, obj.__dict__ or None)


#: Every table that holds what was found of classes, and the number of ``copyreg``
#: registrations when they were last emptied (``check_registrations``).
_tables: list[dict[type, Any]] = []
_registrations = len(copyreg.dispatch_table)


def kept(table: dict[type, Any]) -> None:
    """Let ``check_registrations`` empty ``table`` too."""
    _tables.append(table)


def check_registrations() -> None:
    """Forget what was found of every class if ``copyreg`` registrations came or went since
    (a class registered after its first instance was pickled): called once per message."""
    global _registrations
    if len(copyreg.dispatch_table) != _registrations:
        _registrations = len(copyreg.dispatch_table)
        for table in _tables:
            table.clear()


def view(obj: memoryview) -> Any:
    """The reducer of a memoryview: a copy of its bytes, in the stream. (Out of band, its
    ``PickleBuffer`` would hold the view itself, and CPython before 3.12.7 crashes as its
    collector breaks a cycle that holds a view so exported: gh-77894.) One that cannot be made
    again with its format and shape is refused, rather than sent as its bytes."""
    data, shape = obj.tobytes(), obj.shape or ()
    try:
        _cast(memoryview(data), obj.format, shape)
    except (TypeError, ValueError, NotImplementedError):
        raise TypeError(
            f"a memoryview of format {obj.format!r} and shape {shape} cannot be made again "
            "(memoryview.cast takes native single-character formats, and no length 0 in more "
            "than one dimension): send the object it views (a numpy array), or its bytes"
        ) from None
    return viewed, (data if obj.readonly else bytearray(data), obj.format, shape, obj.readonly)


def viewed(data: Any, format: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    """A memoryview made again, of its format and shape, writable if it was."""
    made = memoryview(data)
    if made.readonly and not readonly:
        made = memoryview(bytearray(made))
    made = _cast(made, format, shape)
    return made.toreadonly() if readonly else made


def _cast(made: memoryview, format: str, shape: tuple[int, ...]) -> memoryview:
    """``made``, bytes, as a view of ``format`` and ``shape``."""
    made = made.cast("B")
    if len(shape) == 1 and not shape[0]:  # (cast takes no length 0: an empty view has none)
        return made.cast(format)  # type: ignore[call-overload,no-any-return]
    return made.cast(format, shape)  # type: ignore[call-overload,no-any-return]


class Plain_reducers(dict[type, Reducer | None]):
    """The reducer of each plain class, None for the others, found when a class is first met.

    A class that ``registered`` names (a pickler's own table of reducers) is not plain there,
    and a class whose instances are classes is never plain: pickle saves classes by name.
    ``memoryview`` has its own (``view``), in every pickler's place.
    """

    def __init__(self, registered: Mapping[type, Any] | None = None) -> None:
        super().__init__()
        self.registered = registered
        kept(self)

    def __missing__(self, cls: type) -> Reducer | None:
        if len(self) >= KEPT:
            self.clear()
        if cls is memoryview and copyreg.dispatch_table.get(cls) is None:
            reducer: Reducer | None = view
        else:
            own = self.registered is not None and cls in self.registered
            reducer = None if own or issubclass(cls, type) else _reducer(cls)
        self[cls] = reducer
        return reducer


#: Each class's reducer if it is plain, else None, for picklers with no table of their own.
plain = Plain_reducers()
