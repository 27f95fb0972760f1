"""A joblib backend, so that joblib and scikit-learn run on any fabric, MPI included::

    import joblib
    import multi  # registers the backend "multi" (once joblib is imported, if it is later)

    with joblib.parallel_config(backend="multi", fabric="mpi4py", n_jobs=4):
        values = joblib.Parallel()(joblib.delayed(fit)(x) for x in data)

Every keyword that ``parallel_config`` does not know itself goes to ``multi.Executor``
(``fabric``, ``retries``, ``timeout``, ``verbosity``, ...). joblib's batches of calls run as
the executor's calls, with joblib's own batch sizing.

The executor outlives each ``Parallel`` call, as loky's does: the next call with the same
settings takes it again (``_Executors``), with its slaves started already, and it is shut
down as the program ends, or once other settings took its place and no call uses it. Under
``mpiexec -n P+1``, whose ranks serve one executor for the whole program, that is what lets a
program call ``Parallel`` more than once.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase

from multi.application import launched
from multi.executor import Executor


class Multi_backend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's calls on the slaves of a ``multi.Executor``."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False

    def __init__(
        self,
        fabric: str | None = None,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level)
        self.fabric = fabric
        self.options = options
        self._executor: Executor | None = None
        self._n_jobs: int | None = None
        #: Whether the calls share the caller's memory (joblib's require="sharedmem").
        self.supports_sharedmem = fabric in ("uni", "thread")

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if self._executor is not None:
            return self._executor.processor.processor_size()
        if n_jobs is None or n_jobs < 0:
            return max(1, (os.cpu_count() or 1) + 1 + (n_jobs or -1))
        return n_jobs

    def configure(
        self, n_jobs: int = 1, parallel: Any = None, prefer: Any = None, require: Any = None,
        **backend_kwargs: Any,
    ) -> int:  # fmt: skip
        """Start the executor's slaves (once); return how many there are. With one, joblib
        runs the calls itself, in order, and never stops the backend: none is started then."""
        self.parallel = parallel
        self._n_jobs = n_jobs
        if self.fabric == "uni" or self.effective_n_jobs(n_jobs) == 1:
            return 1
        return self._started().processor.processor_size()

    def _started(self) -> Executor:
        if self._executor is None:
            n_jobs = self._n_jobs
            workers = None if n_jobs is None or n_jobs == -1 else self.effective_n_jobs(n_jobs)
            options = self.options
            if launched() is not None:  # its slaves and settings, unless the program's own
                workers = None  # options differ, which the executor refuses, saying so
            else:
                options = {"verbosity": 0, **options}  # (joblib's calls say nothing)
            self._executor = _executors.take(self.fabric, workers, options)
        return self._executor

    def submit(self, func: Any, callback: Any = None) -> Any:
        future = self._started().submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    def terminate(self) -> None:
        """joblib is done with the backend for now: the executor stays for the next call."""
        executor, self._executor = self._executor, None
        if executor is not None:
            _executors.give_back(executor)

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed, or ran past joblib's timeout: drop the calls that wait and those
        under way (their slaves are killed), where no other ``Parallel`` uses the executor and
        the fabric can stop a slave alone; the next call then starts afresh."""
        executor, self._executor = self._executor, None
        if executor is not None:
            _executors.give_back(executor, abort=True)


class _Executors:
    """The executors of ``Parallel`` calls: the one that calls with the same settings share,
    and those that other settings took the place of, each shut down once the last call that
    uses it is done."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shared: tuple[tuple[Any, ...], Executor] | None = None
        self.users: dict[Executor, int] = {}

    def take(self, fabric: str | None, workers: int | None, options: dict[str, Any]) -> Executor:
        """The shared executor if it was made for these settings (and ``workers`` slaves, where
        that is asked and the program chooses) and still takes calls; else a new one, in its
        place."""
        key = (fabric, workers, sorted(options.items(), key=str))
        retired = None
        with self.lock:
            if any(executor.processor.on_slave() for executor in self.users):
                # a call of an executor in use, on a slave that is a thread of this process
                # (a nested Parallel, at any depth): the slaves of the shared one may all run
                # calls that wait for this one, so it gets an executor of its own, which goes
                # once it is given back
                executor = Executor(fabric, workers, **options)
                self.users[executor] = 1
                return executor
            if (
                self.shared is not None
                and _same(self.shared[0], key, self.shared[1])
                and self.shared[1].takes_calls()
            ):
                executor = self.shared[1]
            else:
                executor = Executor(fabric, workers, **options)
                if self.shared is not None and not self.users.get(self.shared[1]):
                    retired = self.shared[1]
                self.shared = key, executor
            self.users[executor] = self.users.get(executor, 0) + 1
        if retired is not None:
            retired.shutdown(wait=True)
        return executor

    def give_back(self, executor: Executor, abort: bool = False) -> None:
        """A ``Parallel`` call is done with ``executor``; with ``abort``, it failed."""
        with self.lock:
            users = self.users.pop(executor, 1) - 1
            if users:
                self.users[executor] = users
            shared = self.shared is not None and self.shared[1] is executor
            kill = abort and not users and executor.processor.can_stop_commands()
            if kill and shared:
                self.shared = None
        if kill:
            executor.shutdown(wait=True, cancel_futures=True, kill_workers=True)
        elif not shared and not users:
            executor.shutdown(wait=True)

    def shut_down(self) -> None:
        with self.lock:
            shared, self.shared = self.shared, None
        if shared is not None:
            shared[1].shutdown(wait=True)


_executors = _Executors()


def _forget_executors() -> None:
    """In a process forked from one that has executors: it has none, their engines stayed
    behind (a slave forked from a master that ran Parallel calls hung on the master's)."""
    global _executors
    _executors = _Executors()


os.register_at_fork(after_in_child=_forget_executors)


def _same(made_for: tuple[Any, ...], asked: tuple[Any, ...], executor: Executor) -> bool:
    """Whether ``executor``, made for the settings ``made_for`` (fabric, slaves asked for,
    options), serves a call that asks for ``asked``. Under ``mpiexec -n P+1`` the slaves
    asked for do not count: the executor has the job's, and its ranks serve the first
    executor of the program only, so another was refused."""
    if executor.processor.size_is_given():
        return (made_for[0], made_for[2]) == (asked[0], asked[2])
    return made_for == asked


def shutdown() -> None:
    """Shut down the executor that ``Parallel`` calls share, once its calls are done, and stop
    its slaves (the end of the program does it too)."""
    _executors.shut_down()


def register() -> None:
    """Make the backend known to joblib as ``"multi"``."""
    import joblib

    joblib.register_parallel_backend("multi", Multi_backend)
