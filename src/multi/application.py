"""How an application starts the framework, and finds the processor and its data again."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from multi import registry
from multi.errors import FabricUnavailableError
from multi.verbosity import Verbosity

if TYPE_CHECKING:
    from multi.processor import Processor


class Application_callback:
    """What the processor calls back: ``init_master`` to run the application, and
    ``handle_exception`` for an exception that escapes it. Both can be replaced."""

    def __init__(self, master: Any) -> None:
        self.master = master
        self.init_master: Callable[[Processor], None] = self.default_init_master
        self.handle_exception: Callable[[Processor, BaseException], None] = (
            self.default_handle_exception
        )

    def default_init_master(self, processor: Processor) -> None:
        """Run the application: ``master.run()``."""
        self.master.run()

    def default_handle_exception(self, processor: Processor, exception: BaseException) -> None:
        """Print the exception with its traceback on stderr, then end with a failure status."""
        traceback.print_exception(type(exception), exception, exception.__traceback__)
        processor.abort()


class Processor_box:
    """Where application code finds the processor: ``Processor_box().processor``."""

    _instance: Processor_box | None = None
    processor: Processor | None
    processor_name: str | None
    class_name: str | None

    def __new__(cls) -> Processor_box:
        if cls._instance is None:
            box = super().__new__(cls)
            box.processor = box.processor_name = box.class_name = None
            cls._instance = box
        return cls._instance


def load_multiprocessor(
    processor_name: str,
    callback: Application_callback,
    processor_size: int | None = -1,
    verbosity: int = 1,
    **options: Any,
) -> Processor:
    """Make the processor of the fabric called ``processor_name`` with ``processor_size`` slaves.

    ``processor_size=-1`` asks for the fabric's default (one slave per usable core, or what
    ``mpiexec`` gave). ``options`` are the fabric's own settings. The processor is also put in
    ``Processor_box()``. Under the launcher (``multi script.py``), the launcher's processor is
    returned, whatever the arguments.
    """
    if callback is not None and not all(
        callable(getattr(callback, name, None)) for name in ("init_master", "handle_exception")
    ):
        raise TypeError(
            "load_multiprocessor() takes the application wrapped in an Application_callback, "
            f"whose init_master runs it: load_multiprocessor({processor_name!r}, "
            f"Application_callback(application), ...), not a {type(callback).__name__}"
        )
    if _launched is not None:  # under the launcher, whose choice of fabric stands
        _launched.callback = callback
        return _launched
    cls = registry.load(processor_name)
    try:
        cls.check_available()
    except (ImportError, OSError) as exc:
        raise FabricUnavailableError(
            f"the fabric {processor_name!r} cannot run here: {exc}"
        ) from exc
    Verbosity().set(verbosity)
    processor = cls(processor_size=processor_size, callback=callback, **options)
    _put_in_box(processor)
    return processor


def _put_in_box(processor: Processor | None) -> None:
    box = Processor_box()
    box.processor = processor
    cls = type(processor) if processor is not None else None
    box.processor_name = cls.__module__.rpartition(".")[2] if cls is not None else None
    box.class_name = cls.__name__ if cls is not None else None


@contextmanager
def boxed(processor: Processor) -> Iterator[None]:
    """Have ``Processor_box()`` hold ``processor`` while its application runs, and then the
    one whose application runs around it, if any, else the one it held before: the last one
    made may be another (two made before either runs), and a program may make and run one
    processor inside another's application."""
    before = Processor_box().processor
    _running.append(processor)
    _put_in_box(processor)
    try:
        yield
    finally:
        _running.pop()
        _put_in_box(_running[-1] if _running else before)


#: The processors whose applications run, the innermost last.
_running: list[Processor] = []


#: The processor that the launcher made, which the program's own calls get.
_launched: Processor | None = None


def launch(processor: Processor) -> None:
    """Make ``load_multiprocessor`` hand out ``processor`` (the launcher's) from now on."""
    global _launched
    _launched = processor


def launched() -> Processor | None:
    """The launcher's processor, when the program runs under ``multi``."""
    return _launched


def _processor() -> Processor:
    processor = Processor_box().processor
    if processor is None:
        raise RuntimeError("no processor is loaded yet: call load_multiprocessor() first")
    return processor


def fetch_data(name: str | None = None) -> Any:
    """The data sent under ``name`` to this slave with ``send_data_to_slaves``."""
    return _processor().fetch_data(name)


def fetch_data_store() -> Any:
    """This slave's data store (the master's own on the master)."""
    return _processor().data_store


def send_data_to_slaves(name: str | None = None, value: Any = None) -> None:
    """Store ``value`` as ``name`` on every slave, once each."""
    _processor().send_data_to_slaves(name, value)
