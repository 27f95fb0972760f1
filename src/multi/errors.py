"""Exceptions of the framework, and how a slave's exception travels to the master.

A command that raises on a slave reaches the master as the same exception type, with the
slave's traceback attached as ``__cause__`` under a header that names the slave and the
command. An exception that cannot make the trip (it does not pickle, or does not unpickle)
arrives as a ``Capturing_exception`` holding its type name, message and traceback as text.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, NoReturn


class MultiError(Exception):
    """Base of the framework's own errors."""


class MultiWarning(UserWarning):
    """Base of the framework's own warnings."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Where a thread starts: an executor's engine thread has no line of the program's above.
_THREADS = threading.__file__


def warn(message: str) -> None:
    """Warn with a ``MultiWarning`` at the program's line that led here: the first frame
    outside this package, which the program reaches by many paths (``load_multiprocessor``,
    an ``Executor``, ``run``); where there is none (the launcher's flags, a thread of an
    executor), at the line here."""
    frame, level = sys._getframe(1), 2  # (1 is this function)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE)
        or frame.f_code.co_filename.startswith("<frozen ")  # (runpy: the launcher)
        or frame.f_code.co_filename == _THREADS
    ):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, MultiWarning, stacklevel=level if frame is not None else 2)


class FabricNotFoundError(MultiError, LookupError):
    """No fabric answers to the name that was asked for."""


class FabricUnavailableError(MultiError, ImportError):
    """The fabric exists but cannot run here (a missing package, no MPI ...)."""


class ProcessorSizeError(MultiError, ValueError):
    """The number of slaves asked for is not one that the fabric can give."""


class UnpicklableError(MultiError, pickle.PicklingError):
    """A command or a result cannot travel between processes."""


class SlaveDiedError(MultiError):
    """A slave ended while it ran a command, more often than the retries allow."""

    def __init__(
        self, rank: int, reason: str, command: str, attempts: int, doing: str = "running"
    ) -> None:
        self.rank = rank
        self.reason = reason
        self.command = command
        self.attempts = attempts
        if attempts:
            what = f"while {doing} {command} (tried {times(attempts)})"
        else:
            what = f"before it could run {command}"
        debug = "with the option pickle_check " if doing == "unpickling" else ""
        super().__init__(
            f"slave {rank} {reason} {what}; if the command itself crashes the process, run it "
            f"on the 'uni' fabric {debug}to debug it"
        )


class BrokenProcessorError(SlaveDiedError):
    """Every slave was lost for good: nothing is left to run commands on."""

    def __init__(self, command: str, reason: str, restartable: bool = True) -> None:
        then = "; the next run_queue starts new slaves" if restartable else ""
        MultiError.__init__(self, f"no slave is left to run {command}: {reason}{then}")
        self.rank = 0
        self.reason = reason
        self.command = command
        self.attempts = 0


class CommandTimeoutError(MultiError, TimeoutError):
    """A command ran longer than the processor's ``timeout``; its slave was stopped."""

    def __init__(self, rank: int, slave: str, command: str, seconds: float) -> None:
        self.rank = rank
        self.command = command
        self.seconds = seconds
        super().__init__(
            f"{command} ran on slave {rank} {slave} for more than the timeout of {seconds:g} s: "
            "the slave was stopped, and the command is not run again"
        )


class SlaveExitError(MultiError):
    """A command called ``sys.exit`` on a slave, which cannot end the program."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a slave, shown as the cause on the master."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def raise_unimplemented(method: Callable[..., Any]) -> NoReturn:
    """Raise ``NotImplementedError`` for an abstract method that a subclass did not provide."""
    raise NotImplementedError(f"Attempt to invoke unimplemented abstract method {method.__name__}")


def add_note(exc: BaseException, note: str) -> None:
    """Attach a line of context to an exception (shown by Python 3.11 and later)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10 keeps the note where 3.11 would show it
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


def exit_status(exit: SystemExit) -> int:
    """The status a process ends with for ``sys.exit(code)``, as Python maps it."""
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
    return 1


def times(count: int) -> str:
    """How many times, in words: "once", "2 times"."""
    return "once" if count == 1 else f"{count} times"


def ending(exitcode: int | None) -> str:
    """How a process ended, for a message: ``exitcode`` as ``multiprocessing`` gives it (the
    negative signal number for a death by a signal; None while it runs)."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-exitcode} ({name})"
    return f"exited with status {exitcode}"


def describe(obj: object, limit: int = 120) -> str:
    """Name an object for a message: its class, or its own repr when it defines one."""
    cls = type(obj)
    if cls.__repr__ is object.__repr__:
        return cls.__qualname__
    try:
        text = repr(obj)
    except Exception:
        return cls.__qualname__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Capturing_exception(Exception):
    """A slave's exception reduced to text: its type name, message and traceback.

    Used when the exception itself cannot travel to the master.
    """

    def __init__(
        self,
        exc_info: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
        | None = None,
        rank: int | str = "unknown",
        name: str = "unknown",
    ) -> None:
        exc_type, value, tb = exc_info if exc_info is not None else sys.exc_info()
        self.rank = rank
        self.name = name
        self.exception_name = exc_type.__name__ if exc_type is not None else "unknown"
        self.exception_string = _safe_str(value) if value is not None else ""
        self.traceback = traceback.format_tb(tb) if tb is not None else []
        super().__init__(self.exception_name, self.exception_string)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_capturing, (dict(self.__dict__),))

    def __str__(self) -> str:
        where = self.name  # (a slave's own words name it: "slave 1 of 2 (host ...)")
        if not str(where).startswith(f"slave {self.rank} "):
            where = f"slave {self.rank}, {where}"
        return (
            f"{self.exception_name}: {self.exception_string} (on {where}; the exception itself "
            "could not travel to the master)"
        )


def _rebuild_capturing(state: dict[str, Any]) -> Capturing_exception:
    exc = Capturing_exception.__new__(Capturing_exception)
    Exception.__init__(exc, state.get("exception_name"), state.get("exception_string"))
    exc.__dict__.update(state)
    return exc


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__} whose str() failed>"


class Failure:
    """An exception raised on a slave, packed with its traceback text to travel to the master.

    Deliberately not an exception itself, so that pickling it cannot collide with the
    exception machinery; ``exception()`` gives the one to raise on the master.
    """

    def __init__(
        self,
        exception: BaseException,
        header: str,  # (without its colon)
        rank: int | str = "unknown",
        name: str = "unknown",
    ) -> None:
        lines = traceback.format_exception(type(exception), exception, exception.__traceback__)
        if isinstance(exception, SystemExit):  # its traceback, above, says where it was called
            exception = SlaveExitError(
                f"a command called sys.exit({exception.code!r}) on a slave, which cannot end "
                "the program: raise an exception instead, or let the master call sys.exit"
            )
        self._exception = exception
        self.header = header
        self.body = "".join(lines)
        self.rank = rank
        self.name = name

    def exception(self, place: str = "") -> BaseException:
        """The exception to raise on the master, the slave's traceback as its cause; ``place``
        ends the traceback's header with what the master knows of the command's place in
        its run (``Run.place``), which the slave does not."""
        exc = self._exception.with_traceback(None)
        exc.__cause__ = RemoteTraceback(f"{self.header}{place}:\n{self.body}")
        return exc

    def __reduce__(self) -> tuple[Any, ...]:
        exception = _portable(self._exception, self.rank, self.name)
        return (_rebuild_failure, (exception, self.header, self.body, self.rank, self.name))


def _rebuild_failure(
    exception: BaseException, header: str, body: str, rank: int | str, name: str
) -> Failure:
    failure = Failure.__new__(Failure)
    failure._exception = exception
    failure.header, failure.body = header, body
    failure.rank = rank
    failure.name = name
    return failure


def _portable(exc: BaseException, rank: int | str, name: str) -> Any:
    """The exception itself when it survives the trip to the master (its class travels by value
    if the main script defines it); else the same rebuilt from its state, without its
    ``__init__``; else its text form."""
    from multi import wire  # (wire raises this module's errors)

    for candidate in (exc, _Exception_state(exc)):
        try:
            wire.round_trip(candidate)
        except Exception:
            continue
        return candidate
    return Capturing_exception((type(exc), exc, exc.__traceback__), rank=rank, name=name)


class _Exception_state:
    """An exception that pickle cannot rebuild (pickle calls its class with ``args``, which an
    ``__init__`` of other parameters refuses): it travels as its class, ``args`` and
    attributes, and is made again from them without ``__init__``, as its class still."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> tuple[Any, ...]:
        exc = self.exc
        return (_exception_from_state, (type(exc), exc.args, dict(vars(exc)), _fields(exc)))


#: The fields of an OSError, which only its ``__init__`` sets from its arguments (``args`` keeps
#: neither filename); ``winerror`` exists on Windows, ``characters_written`` once it is set.
_OSERROR_FIELDS = ("errno", "strerror", "filename", "filename2", "winerror", "characters_written")


def _fields(exc: BaseException) -> dict[str, Any]:
    """The attributes of an exception that its ``__dict__`` does not hold: those in the
    ``__slots__`` of its classes, and an OSError's fields. Unset ones are left out."""
    names = list(_OSERROR_FIELDS) if isinstance(exc, OSError) else []
    for cls in type(exc).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        private = "_" + cls.__name__.lstrip("_")  # the prefix of its mangled names
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__") and private != "_":
                name = private + name  # as the class body mangled it
            names.append(name)
    missing = object()
    values = {name: getattr(exc, name, missing) for name in names}
    return {name: value for name, value in values.items() if value is not missing}


def _exception_from_state(
    cls: type[BaseException],
    args: tuple[Any, ...],
    state: dict[str, Any],
    fields: dict[str, Any],
) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    for name, value in fields.items():
        with suppress(AttributeError, TypeError):  # (a field a subclass made read-only)
            setattr(exc, name, value)
    return exc
