"""How each tool runs the benchmark's tasks: every fabric of multi, its peers, and the limits.

A backend is a ``Runner``: ``start`` creates and warms its workers (never timed), ``many`` and
``one`` run tasks, ``stop`` shuts down. Peers are used the way their documentation shows, with
their defaults, except that ``multiprocessing.Pool`` is run twice, with chunk size 1 and with
the chunk size that ``Pool.map`` would pick (``len / (4 * workers)``) for the tiny commands.
MPI backends run under ``mpiexec`` (``launch`` says how); their ``start`` returns on rank 0
only, or serves as a worker until rank 0 is done.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import tasks
from benchmarks.tasks import Tally

#: Warm-up: short naps, two per worker, so that every worker has started and imported the tasks.
WARM_NAP = 0.02
#: The size of the batches the million-command run makes of tiny commands (some 330 of them).
APPLICATION_BATCH = 3_000

FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "noop": tasks.noop,
    "echo": tasks.echo,
    "spin": tasks.timed_spin,
    "nap": tasks.nap,
}


def tally_results(kind: str, results: Iterable[Any]) -> Tally:
    """Count what came back, without keeping it (arrays would hold hundreds of MiB)."""
    tally = Tally()
    for result in results:
        tally.count += 1
        if kind == "echo":
            tally.nbytes += result.nbytes
        elif kind == "spin":
            tally.seconds.append(result)
    return tally


class Runner:
    """A backend's workers, started once, then used by one or more workloads."""

    def __init__(self, slaves: int) -> None:
        self.slaves = slaves

    def start(self) -> bool:
        """Start and warm the workers; False on an MPI rank that served as a worker."""
        return True

    def stop(self) -> None:
        """Shut the workers down."""

    def many(self, kind: str, items: Sequence[Any]) -> Tally:
        raise NotImplementedError(f"{type(self).__name__} does not run many tasks")

    def one(self, kind: str, item: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not run single tasks")

    def queue_cost(self, count: int) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} has no queue of its own")

    def million(self, count: int) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} has no queue of its own")

    def run(self, jobs: Sequence[Callable[[Runner], dict[str, Any]]]) -> list[dict[str, Any]]:
        """Start, run each job (a failure is recorded, not raised), stop. Empty on a worker."""
        if not self.start():
            return []
        try:
            return [_guarded(job, self) for job in jobs]
        finally:
            self.stop()


def _guarded(job: Callable[[Runner], dict[str, Any]], runner: Runner) -> dict[str, Any]:
    try:
        return job(runner)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# Pools of the standard library and of the peers --------------------------------------------


class Pool_runner(Runner):
    """A peer with a map over functions: subclasses say how to map and how to call once."""

    def imap(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        raise NotImplementedError

    def call(self, function: Callable[[Any], Any], item: Any) -> Any:
        raise NotImplementedError

    def warm(self) -> None:
        for _ in self.imap(tasks.nap, [WARM_NAP] * (2 * self.slaves)):
            pass

    def many(self, kind: str, items: Sequence[Any]) -> Tally:
        return tally_results(kind, self.imap(FUNCTIONS[kind], items))

    def one(self, kind: str, item: Any) -> None:
        self.call(FUNCTIONS[kind], item)


class Mp_pool(Pool_runner):
    """``multiprocessing.Pool.imap``, with chunk size 1 or with ``Pool.map``'s own choice."""

    def __init__(self, slaves: int, chunked: bool) -> None:
        super().__init__(slaves)
        self.chunked = chunked

    def start(self) -> bool:
        self.pool = multiprocessing.Pool(self.slaves)
        self.warm()
        return True

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()

    def imap(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        chunksize = max(1, math.ceil(len(items) / (4 * self.slaves))) if self.chunked else 1
        return self.pool.imap(function, items, chunksize=chunksize)

    def call(self, function: Callable[[Any], Any], item: Any) -> Any:
        return self.pool.apply(function, (item,))


class Executor(Pool_runner):
    """A ``concurrent.futures`` executor: ``map`` (default chunk size 1), ``submit``."""

    def make(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.slaves)

    def start(self) -> bool:
        self.executor = self.make()
        self.warm()
        return True

    def stop(self) -> None:
        self.executor.shutdown(wait=True)

    def imap(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        return self.executor.map(function, items)

    def call(self, function: Callable[[Any], Any], item: Any) -> Any:
        return self.executor.submit(function, item).result()


class Chunked_executor(Executor):
    """``ProcessPoolExecutor.map`` with a chunk size of len/(4·workers), as ``Pool.map`` picks."""

    def imap(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        chunksize = max(1, math.ceil(len(items) / (4 * self.slaves)))
        return self.executor.map(function, items, chunksize=chunksize)


class Multi_executor(Executor):
    """``multi.Executor`` on a fabric: ``map`` with its own chunk size, ``submit``."""

    def __init__(self, slaves: int, fabric: str) -> None:
        super().__init__(slaves)
        self.fabric = fabric

    def make(self) -> Any:
        from multi import Executor as Multi_executor_class

        return Multi_executor_class(self.fabric, self.slaves, verbosity=0)


class Loky(Executor):
    """loky's reusable executor, as joblib uses it."""

    def make(self) -> Any:
        import loky

        return loky.get_reusable_executor(max_workers=self.slaves)


class Mpi_futures(Executor):
    """``mpi4py.futures.MPIPoolExecutor`` on the workers that ``python -m mpi4py.futures``
    set up under ``mpiexec`` (the harness launches it so; no dynamic spawning)."""

    def make(self) -> Any:
        from mpi4py.futures import MPIPoolExecutor

        return MPIPoolExecutor()


class Schwimmbad_multi(Pool_runner):
    """schwimmbad's ``MultiPool`` (a ``multiprocess`` Pool): ``map`` is all it offers."""

    def start(self) -> bool:
        import schwimmbad

        self.pool = schwimmbad.MultiPool(processes=self.slaves)
        self.warm()
        return True

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()

    def imap(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        return self.pool.map(function, items)

    def call(self, function: Callable[[Any], Any], item: Any) -> Any:
        return self.pool.map(function, [item])[0]


class Schwimmbad_mpi(Pool_runner):
    """schwimmbad's ``MPIPool`` on ``COMM_WORLD``: rank 0 maps, the others serve in the
    constructor and exit there."""

    def start(self) -> bool:
        import schwimmbad

        self.pool = schwimmbad.MPIPool()  # workers never return from this
        self.warm()
        return True

    def stop(self) -> None:
        self.pool.close()

    def imap(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        return self.pool.map(function, list(items))

    def call(self, function: Callable[[Any], Any], item: Any) -> Any:
        return self.pool.map(function, [item])[0]


# The limits: the bare transports, with nothing on top -------------------------------------


def _pipe_echo(connection: Any) -> None:
    while (message := connection.recv()) is not None:
        connection.send(message)


class Raw_pipe(Runner):
    """A ``multiprocessing.Pipe`` ping-pong with one process that echoes: the floor for a
    round trip between two local processes in Python."""

    def start(self) -> bool:
        self.connection, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=_pipe_echo, args=(theirs,), daemon=True)
        self.process.start()
        theirs.close()
        for _ in range(100):
            self.one("noop", None)
        return True

    def stop(self) -> None:
        self.connection.send(None)
        self.process.join(5)

    def one(self, kind: str, item: Any) -> None:
        self.connection.send((kind, item))
        self.connection.recv()


def _share_worker(connection: Any) -> None:
    while (message := connection.recv()) is not None:
        kind, items = message
        function = FUNCTIONS[kind]
        connection.send([function(item) for item in items])


class Raw_shares(Runner):
    """Plain processes, each sent an equal share of the tasks in one message: what this
    machine gives for work split over that many processes, with nothing scheduled (the
    limit for equal CPU-bound commands, which every fabric's speed-up is bounded by)."""

    def start(self) -> bool:
        self.connections: list[Any] = []
        self.processes: list[multiprocessing.Process] = []
        for _ in range(self.slaves):
            ours, theirs = multiprocessing.Pipe()
            process = multiprocessing.Process(target=_share_worker, args=(theirs,), daemon=True)
            process.start()
            theirs.close()
            self.connections.append(ours)
            self.processes.append(process)
        self.many("nap", [WARM_NAP] * (2 * self.slaves))
        return True

    def stop(self) -> None:
        for connection in self.connections:
            connection.send(None)
        for process in self.processes:
            process.join(5)

    def many(self, kind: str, items: Sequence[Any]) -> Tally:
        for at, connection in enumerate(self.connections):
            connection.send((kind, list(items[at :: self.slaves])))
        return tally_results(kind, [r for c in self.connections for r in c.recv()])


class Raw_mpi(Runner):
    """mpi4py's pickled ``comm.send``/``comm.recv`` and nothing else.

    Rank 0 is the master; the other ranks echo what they receive until they get ``None``.
    ``one`` is a ping-pong with rank 1; ``many`` keeps every worker busy, giving the next item
    to whichever answers first (the plainest dynamic send loop).
    """

    def start(self) -> bool:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.slaves = self.comm.Get_size() - 1
        if self.comm.Get_rank() != 0:
            while (message := self.comm.recv(source=0)) is not None:
                self.comm.send(message, dest=0)
            return False
        for _ in range(100):
            self.one("noop", None)
        return True

    def stop(self) -> None:
        for rank in range(1, self.slaves + 1):
            self.comm.send(None, dest=rank)

    def one(self, kind: str, item: Any) -> None:
        self.comm.send((kind, item), dest=1)
        self.comm.recv(source=1)

    def many(self, kind: str, items: Sequence[Any]) -> Tally:
        status = self.MPI.Status()
        pending = iter(items)
        tally = Tally()
        busy = 0
        for rank in range(1, self.slaves + 1):
            item = next(pending, None)
            if item is None:
                break
            self.comm.send(item, dest=rank)
            busy += 1
        while busy:
            result = self.comm.recv(source=self.MPI.ANY_SOURCE, status=status)
            busy -= 1
            tally.count += 1
            tally.nbytes += getattr(result, "nbytes", 0)
            item = next(pending, None)
            if item is not None:
                self.comm.send(item, dest=status.Get_source())
                busy += 1
        return tally


# multi, on each of its fabrics ----------------------------------------------------------------


class Multi(Runner):
    """A multi processor: the jobs run as the master program of ``processor.run()``."""

    def __init__(self, slaves: int, fabric: str) -> None:
        super().__init__(slaves)
        self.fabric = fabric

    def run(self, jobs: Sequence[Callable[[Runner], dict[str, Any]]]) -> list[dict[str, Any]]:
        from multi import Application_callback, load_multiprocessor

        outcome: list[dict[str, Any]] = []
        runner = self

        class Master:
            def run(self) -> None:
                runner.processor = processor
                runner.slaves = processor.processor_size()
                runner.warm()
                outcome.extend(_guarded(job, runner) for job in jobs)

        def reraise(processor: Any, exception: BaseException) -> None:
            raise exception

        callback = Application_callback(Master())
        callback.handle_exception = reraise
        size = 1 if self.fabric == "uni" else (-1 if self.fabric == "mpi4py" else self.slaves)
        processor = load_multiprocessor(
            self.fabric, callback, processor_size=size, verbosity=0, progress="no"
        )
        processor.run()  # on an MPI slave rank: serves, then returns with nothing measured
        return outcome

    def warm(self) -> None:
        for _ in range(2 * self.slaves):
            self.processor.add_to_queue(tasks.Nap_command(WARM_NAP))
        self.processor.run_queue()

    def many(self, kind: str, items: Sequence[Any]) -> Tally:
        make: Callable[[Any], Any] = {
            "noop": lambda _: tasks.Noop_command(),
            "echo": tasks.Echo_command,
            "spin": tasks.Spin_command,
            "nap": tasks.Nap_command,
        }[kind]
        tally = Tally()
        share = tasks.Share
        add = self.processor.add_to_queue
        for item in items:  # every command with its own memo, as applications queue them
            add(make(item), share(tally))
        self.processor.run_queue()
        return tally

    def one(self, kind: str, item: Any) -> None:
        self.processor.add_to_queue(tasks.Noop_command())
        self.processor.run_queue()

    def million(self, count: int) -> dict[str, float]:
        """A run of ``count`` tiny commands as applications write them: each with its own memo,
        a result run on the master. Measured: the application's own time to create and queue
        them; run_queue's; the master's CPU per command beyond the application's objects (its
        total, less pickling the commands, unpickling the results and running them, timed apart
        on objects of the same kinds before and after the run); and, under tracemalloc in a
        second pass, the bytes per command the queue adds to the application's objects, the peak
        of the run over what was queued, and how much more three runs after it leave than the
        first of them does."""
        figures: dict[str, float] = {}
        tally = Tally()
        start = time.perf_counter()
        for _ in range(count):
            self.processor.add_to_queue(tasks.Noop_command(), tasks.Share(tally))
        figures["app_seconds"] = time.perf_counter() - start
        app_cpu = self._application_cpu(count)
        cpu, start = time.process_time(), time.perf_counter()
        self.processor.run_queue()
        figures["seconds"] = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if tally.count != count:
            raise RuntimeError(f"expected {count} results, got {tally.count}")
        # Timed before and after the run: the machine's speed moves within seconds here.
        app_cpu = (app_cpu + self._application_cpu(count)) / 2
        figures["master_us_per_command"] = 1e6 * max(0.0, cpu - app_cpu) / count
        figures["ratio"] = figures["seconds"] / figures["app_seconds"]
        figures.update(self._million_memory(count))
        return figures

    def _application_cpu(self, count: int) -> float:
        """The master's CPU time on the application's own objects in a run of ``count``:
        pickling the commands, unpickling and running the results (objects of the same kinds),
        as the master pickles and unpickles them: a batch at a time, each batch's results let
        go once run. (All at once, a million results unpickled in one piece set off full
        collections of the master's heap that the run never makes, and their CPU time, taken
        off the master's, left it 0.03 to 0.26 µs per command.)"""
        from multi import wire

        batch = APPLICATION_BATCH
        commands = [tasks.Noop_command() for _ in range(count)]
        results = [
            wire.dumps([tasks.Done_result(self.processor) for _ in range(min(batch, count - at))])
            for at in range(0, count, batch)
        ]
        share = tasks.Share(Tally())
        cpu = time.process_time()
        for at in range(0, count, batch):
            wire.dumps(commands[at : at + batch])
        for frames in results:
            for result in wire.loads(frames):
                result.run(self.processor, share)
        return time.process_time() - cpu

    def _million_memory(self, count: int) -> dict[str, float]:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tally = Tally()
            pairs = [(tasks.Noop_command(), tasks.Share(tally)) for _ in range(count)]
            objects = tracemalloc.get_traced_memory()[0] - base
            for command, memo in pairs:
                self.processor.add_to_queue(command, memo)
            del command, memo
            queued = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.reset_peak()
            del pairs
            self.processor.run_queue()
            peak = tracemalloc.get_traced_memory()[1] - base
            left = []
            for _ in range(3):  # smaller runs after it: what each leaves behind
                for _ in range(count // 10):
                    self.processor.add_to_queue(tasks.Noop_command(), tasks.Share(tally))
                self.processor.run_queue()
                left.append(tracemalloc.get_traced_memory()[0] - base)
        finally:
            tracemalloc.stop()
        return {
            "bytes_per_command": (queued - objects) / count,
            "app_bytes_per_command": objects / count,
            "peak_over_queued": peak / queued,
            "left_after_runs_mib": left[-1] / 2**20,
            "growth_mib": (left[-1] - left[0]) / 2**20,
        }

    def queue_cost(self, count: int) -> dict[str, float]:
        """Time ``add_to_queue`` alone, then (a second pass) the memory the queue holds, under
        tracemalloc, which would slow the timed pass down."""
        commands = [tasks.Noop_command() for _ in range(count)]
        start = time.perf_counter()
        for command in commands:
            self.processor.add_to_queue(command)
        seconds = time.perf_counter() - start
        del commands
        self.processor.run_queue()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            self.processor.add_to_queue(tasks.Noop_command())
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.processor.run_queue()
        return {
            "seconds": seconds,
            "us_per_command": 1e6 * seconds / count,
            "bytes_per_command": (held - before) / count,
            "peak_mib": (peak - before) / 2**20,
        }


# The catalogue ------------------------------------------------------------------------------

PEER, LIMIT, MULTI = "peer", "limit", "multi"
LOCAL, MPI, MPI_FUTURES = "local", "mpi", "mpi-futures"

ALL_TIMED = (
    "noop", "latency", "arrays", "arrays_after_tiny", "cpu", "uneven", "balance", "sleep",
    "master_cpu",
)  # fmt: skip
#: multi's own: what a run costs on more slaves than the work needs.
WIDE = ("latency_wide",)
IN_PROCESS = ("noop", "latency", "arrays", "arrays_after_tiny", "cpu", "uneven", "example",
              "queue")  # fmt: skip


@dataclass(frozen=True)
class Backend:
    """A row of the report: how to make its runner, how to launch it, what it runs."""

    name: str
    label: str
    kind: str  # MULTI, PEER or LIMIT
    make: Callable[[int], Runner]
    workloads: tuple[str, ...]
    launch: str = LOCAL  # LOCAL, MPI (every rank runs the child) or MPI_FUTURES
    ranks: int = 3  # under mpiexec: master + slaves
    requires: tuple[str, ...] = ()  # modules that must import
    fabric: str | None = None  # multi's fabric name, for the example and the registry check


BACKENDS: tuple[Backend, ...] = (
    Backend("multi-uni", "multi uni", MULTI, lambda n: Multi(n, "uni"), IN_PROCESS, fabric="uni"),
    Backend(
        "multi-thread",
        "multi thread",
        MULTI,
        lambda n: Multi(n, "thread"),
        (*IN_PROCESS, "sleep", *WIDE),
        fabric="thread",
    ),
    Backend(
        "multi-multiprocessing",
        "multi multiprocessing",
        MULTI,
        lambda n: Multi(n, "multiprocessing"),
        (*ALL_TIMED, *WIDE, "example", "queue", "million"),
        fabric="multiprocessing",
    ),
    Backend(
        "multi-mpi4py",
        "multi mpi4py",
        MULTI,
        lambda n: Multi(n, "mpi4py"),
        (*ALL_TIMED, *WIDE, "example"),
        launch=MPI,
        requires=("mpi4py",),
        fabric="mpi4py",
    ),
    Backend(
        "multi-pvm",
        "multi pvm",
        MULTI,
        lambda n: Multi(n, "pvm"),
        (*ALL_TIMED, *WIDE, "example"),
        fabric="pvm",
    ),
    Backend(
        "pool-1",
        "multiprocessing.Pool imap, chunk 1",
        PEER,
        lambda n: Mp_pool(n, False),
        ALL_TIMED,
    ),
    Backend(
        "pool-chunked",
        "multiprocessing.Pool imap, chunk len/4·workers",
        PEER,
        lambda n: Mp_pool(n, True),
        ("noop", "map"),
    ),
    Backend(
        "multi-executor",
        "multi.Executor, multiprocessing",
        MULTI,
        lambda n: Multi_executor(n, "multiprocessing"),
        ("map", "master_cpu"),
        fabric="multiprocessing",
    ),
    Backend("ppe", "concurrent.futures.ProcessPoolExecutor", PEER, Executor, ALL_TIMED),
    Backend(
        "ppe-chunked",
        "concurrent.futures.ProcessPoolExecutor map, chunk len/4·workers",
        PEER,
        Chunked_executor,
        ("map",),
    ),
    Backend("loky", "loky reusable executor", PEER, Loky, ALL_TIMED, requires=("loky",)),
    Backend(
        "schwimmbad-multi",
        "schwimmbad MultiPool",
        PEER,
        Schwimmbad_multi,
        ALL_TIMED,
        requires=("schwimmbad",),
    ),
    Backend(
        "mpi4py-futures",
        "mpi4py.futures MPIPoolExecutor",
        PEER,
        Mpi_futures,
        ALL_TIMED,
        launch=MPI_FUTURES,
        requires=("mpi4py",),
    ),
    Backend(
        "schwimmbad-mpi",
        "schwimmbad MPIPool",
        PEER,
        Schwimmbad_mpi,
        ALL_TIMED,
        launch=MPI,
        requires=("schwimmbad", "mpi4py"),
    ),
    Backend("raw-pipe", "raw multiprocessing.Pipe ping-pong", LIMIT, Raw_pipe, ("latency",)),
    Backend("raw-shares", "raw processes, an equal share each", LIMIT, Raw_shares, ("cpu",)),
    Backend(
        "raw-mpi-pingpong",
        "raw mpi4py ping-pong (2 ranks)",
        LIMIT,
        Raw_mpi,
        ("latency",),
        launch=MPI,
        ranks=2,
        requires=("mpi4py",),
    ),
    Backend(
        "raw-mpi-send",
        "raw mpi4py pickled comm.send loop",
        LIMIT,
        Raw_mpi,
        ("arrays",),
        launch=MPI,
        requires=("mpi4py",),
    ),
)

BY_NAME = {backend.name: backend for backend in BACKENDS}
