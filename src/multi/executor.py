"""``multi.Executor``: the ``concurrent.futures`` interface on every fabric.

Calls travel as commands and their values come back as result commands, through the same
engine as the seed's API: batching, capture of output, remote tracebacks, retries of calls
whose slave died, timeouts and the failure policy hold for calls as they hold for commands.

A thread of the executor, the *engine thread*, plays the master: it feeds submitted calls to
one open run of the processor (``Processor.run_stream``), which hands each call's outcome to
its future as soon as it arrives, in the order calls finish. Futures are marked running when
the engine takes their call, so a call still waiting in the executor can be cancelled.

``map`` groups the items into chunks, one call each, so that many tiny calls cost little:
the values come back in order, item by item.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import itertools
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from multi import application
from multi.commands import Slave_command
from multi.errors import MultiError
from multi.memo import Memo
from multi.options import Option, resolve
from multi.processor import Processor, end_interrupted, ending_status, failure_policy
from multi.results import Result_command
from multi.verbosity import Verbosity

#: The fabric of an executor made outside the launcher without one.
DEFAULT_FABRIC = "multiprocessing"
#: An open run takes at most this many calls: then it drains, and the next one starts. This
#: bounds what a long-lived executor keeps of the calls it ran.
CALLS_PER_RUN = 100_000
#: ``map`` makes about this many chunks per slave, when it can count the items.
CHUNKS_PER_SLAVE = 4
MAX_CHUNK = 10_000


class _Call(Slave_command):
    """A function call, or with ``many`` a chunk of calls of one function, run on a slave."""

    def __init__(
        self,
        key: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        many: list[Any] | None = None,
        spread: bool = False,
    ) -> None:
        self.key = key
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.many = many
        self.spread = spread  # each item of ``many`` is a tuple of arguments, else one argument

    def run(self, processor: Processor, completed: bool) -> None:
        fn, many = self.fn, self.many
        if many is None:
            processor.return_object(_Returned(self.key, fn(*self.args, **self.kwargs)))
            return
        values: list[Any] = []
        try:
            values.extend(itertools.starmap(fn, many) if self.spread else map(fn, many))
        except BaseException:
            # The values before the failing call go first, for map to give them before it
            # raises the failure; the calls after it in the chunk do not run.
            processor.return_object(_Returned(self.key, values, partial=True))
            raise
        processor.return_object(_Returned(self.key, values))

    @property
    def multi_kind(self) -> str:
        """The function's name, for the statistics and the timeline."""
        return str(getattr(self.fn, "__qualname__", None) or type(self.fn).__name__)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        if self.many is not None:
            return f"call of {name} on {len(self.many)} items (call {self.key})"
        return f"call of {name} (call {self.key})"


class _Returned(Result_command):
    """A call's value, handed to its future on the master (``completed`` and ``memo_id``
    are the class's: ``Result``)."""

    #: How the engine names one that does not pickle (``multi.slave``), and what to do.
    multi_unpicklable = (
        "the value of",
        "A call's value travels back to the master: return objects that pickle (numbers, "
        "strings, arrays, and lists or dicts of those).",
    )

    #: Whether the value is what a chunk gave before the call that failed (set where it is).
    partial = False

    def __init__(self, key: int, value: Any, partial: bool = False) -> None:
        self.key = key
        self.value = value
        if partial:
            self.partial = partial

    def run(self, processor: Processor, memo: Memo | None) -> None:
        assert isinstance(memo, _Futures)
        if self.partial:
            memo.before_failure[self.key] = self.value
        else:
            memo.settle(self.key, self.value)


class _Futures(Memo):
    """The futures of the calls under way, by call number: the memo of every call."""

    def __init__(self) -> None:
        self.by_key: dict[int, Future[Any]] = {}
        #: The values of a failed chunk's calls before the one that failed, by call number,
        #: until its failure comes (which follows them).
        self.before_failure: dict[int, list[Any]] = {}

    def settle(self, key: int, value: Any) -> None:
        future = self.by_key.pop(key, None)
        if future is not None:
            future.set_result(value)

    def fail(self, key: int, error: BaseException) -> None:
        future = self.by_key.pop(key, None)
        values = self.before_failure.pop(key, None)
        if future is not None:
            if values:
                future.values_before_failure = values  # type: ignore[attr-defined]
            future.set_exception(error)


class Executor(concurrent.futures.Executor):
    """Run calls on the slaves of a fabric: ``submit``, ``map`` and ``shutdown``.

    ``fabric`` names the fabric (None: the launcher's under ``multi``, else
    ``multiprocessing``); ``max_workers`` is the number of slaves (None: the fabric's default,
    one per core or what ``mpiexec`` gave); ``fabric_options`` are the fabric's own options
    (``retries``, ``timeout``, ``on_failure``, ...) and ``verbosity`` (1: each call's output
    is replayed as one block with its slave's prefix). By default every call runs whatever
    the others do (``on_failure="run-all"``).

    Under ``mpiexec -n P+1 python app.py``, ``Executor("mpi4py")`` makes ranks 1 to P serve
    the master there and end the process when it is done, as ``processor.run()`` does.
    """

    def __init__(
        self,
        fabric: str | None = None,
        max_workers: int | None = None,
        **fabric_options: Any,
    ) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(
                    "max_workers is a whole number of slaves (or None: one per core), not "
                    f"{max_workers!r}"
                )
            if max_workers < 1:
                raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self._on_failure = failure_policy(fabric_options.pop("on_failure", "run-all"))
        self._processor, self._owned = _processor(fabric, max_workers, fabric_options)
        if self._processor.process_rank != 0:
            self._processor.serve()  # a slave of an MPI job: serves, then ends the process
        self._futures = _Futures()
        self._keys = itertools.count()
        self._waiting: deque[tuple[_Call, Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        #: The status the program ends with, once the run under way must end at once and
        #: drop the calls it holds (Ctrl-C, sys.exit): MPI ends the job with it.
        self._abandon: int | None = None
        self._broken: BaseException | None = None
        #: Set as the engine ends: once Ctrl-C has interrupted a join of its thread, a later
        #: join returns at once (Python 3.11 releases the lock that tells the thread's end),
        #: while the engine runs on.
        self._ended = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._engine, name="multi-executor", daemon=True)
        self._thread.start()
        _executors.add(self)
        if not self._owned:  # the launcher's slaves: they stop once the calls have finished
            self._processor.before_stop(self._close)

    # concurrent.futures.Executor ---------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on a slave; its future holds the value or the
        exception (with the slave's traceback as ``__cause__``)."""
        if not callable(fn):
            raise TypeError(f"submit() takes a callable first, not {type(fn).__name__}")
        return self._submit(_Call(next(self._keys), fn, args, kwargs))

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[Any]:
        """``fn`` applied to the items of ``iterables`` on the slaves, values in order.

        Items travel in chunks of ``chunksize`` calls (None: about ``CHUNKS_PER_SLAVE``
        chunks per slave when the items can be counted, else 1). ``timeout`` bounds the
        whole iteration from this call on; an exception raised by a call is raised when its
        value would have been reached.
        """
        if not callable(fn):
            raise TypeError(f"map() takes a callable first, not {type(fn).__name__}")
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        if not iterables:  # (no item: nothing, as concurrent.futures gives)
            return iter(())
        end = None if timeout is None else time.monotonic() + timeout
        size = chunksize or self._chunksize(iterables)
        spread = len(iterables) != 1
        items = zip(*iterables) if spread else iter(iterables[0])  # noqa: B905 (as map() does)
        futures = [
            self._submit(_Call(next(self._keys), fn, (), {}, chunk, spread))
            for chunk in iter(lambda: list(itertools.islice(items, size)), [])
        ]
        return _values(futures, end)

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, kill_workers: bool = False
    ) -> None:
        """Take no more calls; with ``cancel_futures``, cancel those not taken yet; with
        ``wait``, return once every call taken has finished and the slaves are stopped.

        With ``kill_workers`` (as loky's executor has it), the calls under way are dropped
        too, their slaves killed, where the fabric can stop a slave alone (the processes of
        ``multiprocessing``, ``pvm``, spawned MPI slaves); elsewhere they finish first. The
        calls not taken yet that ``cancel_futures`` leaves then fail, as loky's do, and
        without ``wait`` the slaves are stopped all the same, once this has returned.
        """
        if kill_workers and self._processor.can_stop_commands() and self._abandon is None:
            self._abandon = 0  # (the engine drops its run at once, and kills the slaves)
            self._processor.wake_stream()
        with self._lock:
            self._closed = True
            if cancel_futures:
                while self._waiting:
                    _, future = self._waiting.popleft()
                    future.cancel()
            self._wake.notify_all()
        if wait and threading.current_thread() is not self._thread and self._pid == os.getpid():
            self._ended.wait()  # (a forked child has no engine: nothing of it to wait for)

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool | None:
        """Wait for the calls to finish; but if the block ended in Ctrl-C or another
        ``BaseException`` that is no ``Exception``, drop them and stop the slaves at once."""
        if error is not None and not isinstance(error, Exception):
            self._drop(ending_status(error))
            return None
        self.shutdown(wait=True)
        return None

    def _drop(self, status: int) -> None:
        """End the run under way at once and cancel the calls that wait; the program ends with
        ``status``."""
        self._abandon = status
        self._processor.wake_stream()
        self.shutdown(wait=True, cancel_futures=True)

    def _close(self, ending: BaseException | None) -> None:
        """Finish the calls taken as the program ends, or drop them if ``ending`` ends it (a
        failure, Ctrl-C); Ctrl-C meanwhile drops them too, and is raised again."""
        if ending is not None:
            self._drop(ending_status(ending))
            return
        try:
            self.shutdown(wait=True)
        except KeyboardInterrupt as interrupt:
            self._drop(ending_status(interrupt))
            raise

    def takes_calls(self) -> bool:
        """Whether ``submit`` takes calls still: not shut down, not broken."""
        with self._lock:
            return not self._closed and self._broken is None

    @property
    def processor(self) -> Processor:
        """The processor whose slaves run the calls (its ``last_run`` tells how they went)."""
        return self._processor

    # Feeding the engine -------------------------------------------------------------------

    def _submit(self, call: _Call) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._broken is not None:
                raise MultiError(f"this executor cannot run calls any more: {self._broken}")
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._waiting.append((call, future))
            if len(self._waiting) == 1:
                self._wake.notify()
                self._processor.wake_stream()  # (a run under way asks for it at once)
        return future

    def _chunksize(self, iterables: tuple[Iterable[Any], ...]) -> int:
        try:
            count = min(len(items) for items in iterables)  # type: ignore[arg-type]
        except TypeError:
            return 1
        slaves = max(1, self._processor.processor_size())
        return max(1, min(MAX_CHUNK, -(-count // (CHUNKS_PER_SLAVE * slaves))))

    def _take(
        self, wanted: int, taken: list[int]
    ) -> list[tuple[Slave_command, Memo | None]] | None:
        """Up to ``wanted`` calls for the run under way; None once it should end."""
        if self._abandon is not None:
            raise _Abandoned()
        items: list[tuple[Slave_command, Memo | None]] = []
        with self._lock:
            waiting = self._waiting
            if not waiting and (
                self._closed or taken[0] >= CALLS_PER_RUN or not self._futures.by_key
            ):
                return None  # (with no call under way: the engine sleeps until one comes)
            while waiting and len(items) < wanted and taken[0] < CALLS_PER_RUN:
                call, future = waiting.popleft()
                if future.set_running_or_notify_cancel():
                    self._futures.by_key[call.key] = future
                    items.append((call, self._futures))
                    taken[0] += 1
        return items

    def _failed(self, command: Slave_command, error: BaseException) -> None:
        assert isinstance(command, _Call)
        self._futures.fail(command.key, error)

    def _engine(self) -> None:
        """Run the calls as they come, one open run after another, until shut down."""
        try:
            self._serve_calls()
        finally:
            self._ended.set()

    def _serve_calls(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._waiting and not self._closed:
                        self._wake.wait()
                    if not self._waiting and self._closed:
                        break
                taken = [0]  # calls this run took
                take = functools.partial(self._take, taken=taken)
                stopped = None
                try:
                    stopped = self._processor.run_stream(
                        take, self._failed, self._on_failure, self._waiting.__len__
                    )
                except _Abandoned:
                    stopped = "the executor was shut down, dropping the calls it had not finished"
                    break
                except BaseException as exc:  # the slaves are gone, or the engine broke
                    self._break(exc)
                    break
                finally:
                    self._not_run(stopped or "its run ended before it started", bool(stopped))
        finally:
            self._not_run("the executor was shut down")
            if self._owned:
                dropped = self._abandon
                self._processor.stop_slaves(kill=dropped is not None, status=dropped or 0)

    def _break(self, error: BaseException) -> None:
        with self._lock:
            self._broken = error
            self._closed = True

    def _not_run(self, why: str, waiting_too: bool = False) -> None:
        """Fail the futures of calls that were taken but will never finish (the run stopped on
        a failure, or ended abruptly; some may have started), and with ``waiting_too`` those
        submitted meanwhile, which never ran;
        cancel those never taken, if the executor ended."""
        futures = self._futures.by_key
        self._futures.before_failure.clear()  # (values of chunks whose failure will not come)
        while futures:
            key, future = futures.popitem()
            error = self._broken or MultiError(f"call {key} did not finish: {why}")
            if not future.done():
                future.set_exception(error)
        with self._lock:
            if waiting_too:
                while self._waiting:
                    call, future = self._waiting.popleft()
                    if future.set_running_or_notify_cancel():
                        future.set_exception(MultiError(f"call {call.key} was not run: {why}"))
            if self._closed:
                while self._waiting:
                    _, future = self._waiting.popleft()
                    if self._broken is not None:
                        future.set_exception(self._broken)
                    else:
                        future.cancel()


class _Abandoned(BaseException):
    """Raised in the engine thread to end the run under way at once (Ctrl-C on the caller)."""


def _values(futures: list[Future[Any]], end: float | None) -> Iterator[Any]:
    """The values of the chunks' futures, item by item; the rest are cancelled if the caller
    stops early."""
    futures.reverse()
    try:
        while futures:
            future = futures.pop()
            left = None if end is None else end - time.monotonic()
            try:
                values = future.result(left)
            except BaseException:
                yield from getattr(future, "values_before_failure", ())
                raise
            yield from values
    finally:
        for future in futures:
            future.cancel()


#: The launcher's flags for the executor's own arguments (for a fabric's options, ``Option.flag``).
_LAUNCHER_FLAGS = {"max_workers": "-n", "verbosity": "-v"}


def _processor(
    fabric: str | None, max_workers: int | None, options: dict[str, Any]
) -> tuple[Processor, bool]:
    """The processor to run on, and whether the executor made it (and so stops it)."""
    launched = application.launched()
    if launched is not None:
        if fabric is not None and fabric != launched.fabric:
            raise MultiError(
                f"the multi launcher runs this program on the {launched.fabric} fabric: leave "
                f"out the fabric {fabric!r} here, or launch with multi -m {fabric}"
            )
        own = {"max_workers": max_workers, "verbosity": options.pop("verbosity", None)}
        given = {name: value for name, value in own.items() if value is not None} | options
        # (read as the fabric reads them: an unknown option or a bad value is refused as ever)
        read = given | resolve(launched.fabric, launched.options, options)
        theirs = {
            "max_workers": launched.processor_size(),
            "verbosity": Verbosity.level(),
            **launched.settings,
        }
        differ = {name: value for name, value in given.items() if read[name] != theirs[name]}
        if differ:  # (the launcher's own settings, given again, are taken)
            settings = ", ".join(f"{name}={value!r}" for name, value in differ.items())
            flags = " ".join(f"{_LAUNCHER_FLAGS.get(name) or Option(name, '', None).flag} "
                             f"{value}" for name, value in differ.items())  # fmt: skip
            raise MultiError(
                "under the multi launcher the executor runs on the launcher's slaves, with its "
                f"settings: leave out {settings} here, and launch with multi {flags} ..."
            )
        return launched, False
    verbosity = options.pop("verbosity", 1)
    processor = application.load_multiprocessor(
        fabric or DEFAULT_FABRIC,
        None,  # type: ignore[arg-type]
        processor_size=-1 if max_workers is None else max_workers,
        verbosity=verbosity,
        **options,
    )
    return processor, True


_executors: weakref.WeakSet[Executor] = weakref.WeakSet()


def _shut_down_at_exit() -> None:
    """An executor left open ends with the program: its calls are finished first, as
    ``concurrent.futures`` does; they are dropped if the program ends in Ctrl-C (the
    exception Python printed last, ``sys.last_value``), or on Ctrl-C meanwhile.

    Called as the main thread ends, before ``atexit``'s handlers (where concurrent.futures
    finishes its own calls too): those include multiprocessing's, which kills daemon
    processes such as the slaves, and an MPI transport's, which stops its slaves. Run after
    them, the calls were lost and the program still ended with status 0.
    """
    last = getattr(sys, "last_value", None)
    ending: BaseException | None = last if isinstance(last, KeyboardInterrupt) else None
    interrupted = False
    for executor in list(_executors):
        try:
            executor._close(ending)
        except KeyboardInterrupt as interrupt:
            interrupted = True
            ending = interrupt  # (the other executors' calls are dropped too)
    sys.stdout.flush()
    if interrupted:
        print(
            "multi: Ctrl-C as the program ended: the calls of open executors that had not "
            "finished were dropped",
            file=sys.stderr,
        )
        atexit.register(_end_as_interrupted)  # (registered last: called first)


def _end_as_interrupted() -> None:
    """End the program as Python ends one that Ctrl-C interrupted (killed by SIGINT: 130 to a
    shell), once its threads are joined and its other ``atexit`` handlers have run: calls
    that Ctrl-C dropped as the program ended must not end it with status 0."""
    atexit.unregister(_end_as_interrupted)
    atexit._run_exitfuncs()  # the others (which it forgets: they do not run twice)
    end_interrupted()


def _forget_in_a_forked_child() -> None:
    """A forked child has none of its parent's engines: it has no executor to end."""
    _executors.clear()


os.register_at_fork(after_in_child=_forget_in_a_forked_child)


threading._register_atexit(_shut_down_at_exit)  # type: ignore[attr-defined]
