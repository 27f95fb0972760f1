"""Commands, results and memos that the conformance tests queue.

They live in a module of their own so that slaves in other processes can import them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import errno
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from multi import Batched_result_command, Memo, Result_command, Slave_command, fetch_data


class Record(Memo):
    """A memo that keeps what its results brought."""

    def __init__(self, name: str = "memo") -> None:
        self.name = name
        self.values: list[Any] = []


class Value(Result_command):
    """Hands ``value`` to its memo, and notes the slave that made it."""

    def __init__(self, processor: Any, value: Any, memo_id: int | None = None) -> None:
        super().__init__(processor=processor, completed=True, memo_id=memo_id)
        self.value = value

    def run(self, processor: Any, memo: Record | None) -> None:
        target = (
            memo.values
            if memo is not None
            else processor.data_store.__dict__.setdefault("unclaimed", [])
        )
        target.append((self.rank, self.value))


class Tally(Memo):
    """A memo that counts the results of its commands, keeping none of them."""

    def __init__(self) -> None:
        self.count = 0


class Counted(Result_command):
    def run(self, processor: Any, memo: Tally | None) -> None:
        if memo is not None:
            memo.count += 1


class Tiny(Slave_command):
    """Does nothing but say it is done, as the tiniest commands of an application."""

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Counted(processor))


class Gc_threshold(Result_command):
    """Sets the collector's thresholds on the master, as an application may."""

    def __init__(self, processor: Any, threshold: tuple[int, ...]) -> None:
        super().__init__(processor=processor, completed=True)
        self.threshold = threshold

    def run(self, processor: Any, memo: Any) -> None:
        gc.set_threshold(*self.threshold)


class Set_gc_threshold(Slave_command):
    """Returns a result that sets the collector's thresholds on the master."""

    def __init__(self, threshold: tuple[int, ...]) -> None:
        super().__init__()
        self.threshold = threshold

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Gc_threshold(processor, self.threshold))


class Square(Slave_command):
    def __init__(self, x: int) -> None:
        super().__init__()
        self.x = x

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, self.x * self.x))


class Several(Slave_command):
    """Returns ``count`` results."""

    def __init__(self, tag: str, count: int) -> None:
        super().__init__()
        self.tag = tag
        self.count = count

    def run(self, processor: Any, completed: bool) -> None:
        for i in range(self.count):
            processor.return_object(Value(processor, (self.tag, i)))


class To_memo(Slave_command):
    """Returns ``count`` results that name a memo of its own choosing."""

    def __init__(self, memo_id: int, count: int = 1) -> None:
        super().__init__()
        self.target = memo_id
        self.count = count

    def run(self, processor: Any, completed: bool) -> None:
        for _ in range(self.count):
            processor.return_object(Value(processor, "redirected", memo_id=self.target))


class Flagged(Result_command):
    """Hands its memo what it says of itself on the master: completed, memo_id, rank."""

    def run(self, processor: Any, memo: Record) -> None:
        memo.values.append((self.completed, self.memo_id, self.rank))


class Flags(Slave_command):
    """Returns a usual result, one not completed, and one that names its memo itself."""

    def __init__(self, memo_id: int) -> None:
        super().__init__()
        self.target = memo_id

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Flagged(processor))
        processor.return_object(Flagged(processor, completed=False))
        processor.return_object(Flagged(processor, memo_id=self.target))


class Noted(Result_command):
    """Notes on the master what it says of itself (completed, memo_id, rank) in ``seen``."""

    seen: ClassVar[list[tuple[bool, int | None, int]]] = []

    def run(self, processor: Any, memo: None) -> None:
        self.seen.append((self.completed, self.memo_id, self.rank))


class Own_memo_id(Slave_command):
    """Returns its ``memo_id`` as it reads on the slave, in a result that names that memo
    itself, as the original's commands did; with ``more``, it holds an attribute more."""

    def __init__(self, more: bool = False) -> None:
        super().__init__()
        if more:
            self.more = more

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, self.memo_id, memo_id=self.memo_id))


class Holder(Result_command):
    """Holds another result; notes on the master its own rank and the other's."""

    def __init__(self, processor: Any, inner: Result_command) -> None:
        super().__init__(processor)
        self.inner = inner

    def run(self, processor: Any, memo: Record) -> None:
        memo.values.append((self.rank, self.inner.rank))


class Nesting(Slave_command):
    """Holds a command that was never queued, and returns what its ``memo_id`` reads on the
    slave; returns a usual result inside another."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Own_memo_id()

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Holder(processor, Result_command(processor)))
        processor.return_object(Value(processor, self.inner.memo_id))


class Batched_to_memos(Slave_command):
    """Returns, inside a ``Batched_result_command``, a result that names no memo and one that
    names the memo ``other``."""

    def __init__(self, other: int) -> None:
        super().__init__()
        self.other = other

    def run(self, processor: Any, completed: bool) -> None:
        inside = [Value(processor, "mine"), Value(processor, "theirs", memo_id=self.other)]
        processor.return_object(Batched_result_command(processor, inside))


class Batched_usual(Slave_command):
    """Returns a usual result inside a ``Batched_result_command``."""

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Batched_result_command(processor, [Noted(processor)]))


class Talk(Slave_command):
    """Writes lines on stdout and stderr, some in pieces (one through the bytes of stdout),
    then returns its index."""

    def __init__(self, index: int, lines: int = 3, pause: float = 0.0) -> None:
        super().__init__()
        self.index = index
        self.lines = lines
        self.pause = pause

    def run(self, processor: Any, completed: bool) -> None:
        for line in range(self.lines):
            print(f"command {self.index} line {line}")
            if self.pause:
                time.sleep(self.pause)
        sys.stdout.write(f"command {self.index} in ")
        sys.stdout.flush()
        sys.stdout.buffer.write(b"pieces\n")
        print(f"command {self.index} to stderr", file=sys.stderr)
        sys.stdout.write(f"command {self.index} unfinished")
        processor.return_object(Value(processor, self.index))


class Fail(Slave_command):
    """Prints, returns a result, then raises ``error``."""

    def __init__(self, error: BaseException, index: int = 0) -> None:
        super().__init__()
        self.error = error
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        print(f"failing command {self.index} speaks")
        processor.return_object(Value(processor, ("before failing", self.index)))
        raise self.error


class Sleep(Slave_command):
    """Sleeps, then says which slave ran it."""

    def __init__(self, seconds: float, index: int = 0) -> None:
        super().__init__()
        self.seconds = seconds
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        time.sleep(self.seconds)
        processor.return_object(Value(processor, self.index))


class Noop(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(processor.NULL_RESULT)


class Fetch(Slave_command):
    """Returns the data stored under ``name`` on its slave."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, fetch_data(self.name)))


class Whoami(Slave_command):
    """Returns the rank of its slave, and how many times it ran there."""

    def run(self, processor: Any, completed: bool) -> None:
        store = processor.data_store
        store.whoami_runs = getattr(store, "whoami_runs", 0) + 1
        processor.return_object(Value(processor, (processor.rank(), store.whoami_runs)))


class Carries(Slave_command):
    """Carries ``payload`` to the slave and back."""

    def __init__(self, payload: Any) -> None:
        super().__init__()
        self.payload = payload

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, self.payload))


class Returns_lock(Slave_command):
    """Returns a result that does not pickle."""

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, threading.Lock()))


def _refuse(why: str) -> None:
    raise RuntimeError(why)


class Unrebuildable:
    """Pickles, but fails as it is unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ("this object cannot be rebuilt",))


class Returns_unrebuildable(Slave_command):
    """Returns a result that pickles on the slave, but does not unpickle on the master."""

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, Unrebuildable()))


class Speaks(Slave_command):
    """Prints a line, then returns its index, or with ``unrebuildable`` a result that does
    not unpickle on the master."""

    def __init__(self, index: int, unrebuildable: bool = False) -> None:
        super().__init__()
        self.index = index
        self.unrebuildable = unrebuildable

    def run(self, processor: Any, completed: bool) -> None:
        print(f"command {self.index} speaks")
        value = Unrebuildable() if self.unrebuildable else self.index
        processor.return_object(Value(processor, value))


class Uses_a_pool(Slave_command):
    """Runs a function on a process pool of its own, as a command of a scientific program
    may (numpy's, a library's)."""

    def run(self, processor: Any, completed: bool) -> None:
        with concurrent.futures.ProcessPoolExecutor(2) as pool:
            values = list(pool.map(abs, [-1, -2, -3]))
        processor.return_object(Value(processor, values))


class Raising_result(Result_command):
    """A result whose run fails on the master."""

    def run(self, processor: Any, memo: Any) -> None:
        raise KeyError("raised on the master")


class Returns_raising_result(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Raising_result(processor=processor, completed=True))


class Queues_more(Slave_command):
    """Calls master-only API on a slave."""

    def run(self, processor: Any, completed: bool) -> None:
        processor.add_to_queue(Square(1))


class No_run(Slave_command):
    """Forgets to define run()."""


class Fit_error(Exception):
    """An exception whose ``__init__`` takes other arguments than its ``args``: pickle cannot
    rebuild it by calling its class."""

    def __init__(self, residue: int, reason: str) -> None:
        super().__init__(f"residue {residue}: {reason}")
        self.residue = residue
        self.reason = reason


class Slotted_error(Exception):
    """An exception that keeps an attribute in ``__slots__``, out of its ``__dict__``."""

    __slots__ = ("residue",)


class Slotted_fit_error(Slotted_error):
    """A ``Fit_error`` whose attributes are all slots, of its class and of its base, one of
    them private (its name mangled)."""

    __slots__ = ("__tries", "reason")

    def __init__(self, residue: int, reason: str) -> None:
        super().__init__(f"residue {residue}: {reason}")
        self.residue = residue
        self.reason = reason
        self.__tries = 3

    def tries(self) -> int:
        return self.__tries


class Shown_slot_error(Slotted_error):
    """A ``Slotted_error`` whose class shows its slot through a property that cannot be set:
    rebuilt, the slot cannot be set back."""

    def __init__(self, residue: int, reason: str) -> None:
        super().__init__(f"residue {residue}: {reason}")

    @property
    def residue(self) -> int:  # type: ignore[override]
        return int(str(self).split()[1].rstrip(":"))


class Copy_error(OSError):
    """An ``OSError`` of an ``__init__`` of its own, whose fields (``errno``, ``strerror``,
    ``filename``, ``filename2``) its ``__init__`` sets through OSError's."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(errno.ENOSPC, "no space left to copy", source, None, target)


class Unpicklable_error(Exception):
    """An exception that holds what does not pickle."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Raises(Slave_command):
    """Raises ``error``, made on the slave: ``kind(*arguments)``."""

    def __init__(self, kind: type[BaseException], *arguments: Any) -> None:
        super().__init__()
        self.kind = kind
        self.arguments = arguments

    def run(self, processor: Any, completed: bool) -> None:
        raise self.kind(*self.arguments)


class Die_once(Slave_command):
    """Kills its slave with ``signal`` the first time it runs (noted in ``marker``)."""

    def __init__(self, marker: str, signal_number: int, index: int = 0) -> None:
        super().__init__()
        self.marker = marker
        self.signal_number = signal_number
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        if not os.path.exists(self.marker):
            with open(self.marker, "w") as note:
                note.write(str(os.getpid()))
            os.kill(os.getpid(), self.signal_number)
            time.sleep(10)
        processor.return_object(Value(processor, ("survived", self.index)))


class Segfault(Slave_command):
    """Crashes its slave every time."""

    def run(self, processor: Any, completed: bool) -> None:
        import ctypes

        ctypes.string_at(0)


class Ends_program(Slave_command):
    """Calls ``processor.exit(4)`` or ``processor.abort()``, as a master would."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def run(self, processor: Any, completed: bool) -> None:
        if self.how == "exit":
            processor.exit(4)
        processor.abort()


class Logs(Slave_command):
    """Logs at info and debug, and for index 1 an exception."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        logger = logging.getLogger("tests.science")
        logger.info("fitting %d", self.index)
        logger.debug("not wanted %d", self.index)
        if self.index == 1:
            try:
                raise ValueError("no data")
            except ValueError:
                logger.exception("residue %d failed", self.index)


class Returns_from_a_thread(Slave_command):
    """Hands a result back, or ends the program, from a thread of its own: both refused."""

    def __init__(self, call: str = "return_object") -> None:
        super().__init__()
        self.call = call

    def run(self, processor: Any, completed: bool) -> None:
        with ThreadPoolExecutor(1) as pool:
            if self.call == "exit":
                pool.submit(processor.exit, 4).result()
            pool.submit(processor.return_object, Value(processor, "from a thread")).result()


#: The thread that ``Leaves_a_thread_with_its_context`` left, told to go on by ``Ends_it``,
#: with what it met.
LEFT_BEHIND: dict[str, Any] = {}


class Leaves_a_thread_with_its_context(Slave_command):
    """Starts a thread that carries its context and, once ``Ends_it`` says so (the command
    is over by then), hands a result back."""

    def run(self, processor: Any, completed: bool) -> None:
        go_on = threading.Event()

        def later() -> None:
            go_on.wait(60)
            try:
                processor.return_object(Value(processor, "from a thread left behind"))
            except Exception as error:
                LEFT_BEHIND["met"] = type(error).__name__

        thread = threading.Thread(target=contextvars.copy_context().run, args=(later,))
        LEFT_BEHIND.update(thread=thread, go_on=go_on, met=None)
        thread.start()


class Ends_it(Slave_command):
    """Lets the thread that ``Leaves_a_thread_with_its_context`` left go on, and returns what
    it met."""

    def run(self, processor: Any, completed: bool) -> None:
        LEFT_BEHIND["go_on"].set()
        LEFT_BEHIND["thread"].join(60)
        processor.return_object(Value(processor, LEFT_BEHIND["met"]))


class Forks(Slave_command):
    """Forks, and its child comes back from the command (``return``), calls ``sys.exit(3)``
    or raises, as a careless command's child would; returns the child's status."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def run(self, processor: Any, completed: bool) -> None:
        child = os.fork()
        if child == 0:
            if self.how == "exit":
                sys.exit(3)
            if self.how == "raise":
                raise ValueError("in the child")
            return
        status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        processor.return_object(Value(processor, ("child ended", status)))


class Starts_a_program(Slave_command):
    """Starts a program that would run for minutes, notes its pid in a file under
    ``$STARTED``, and waits."""

    def run(self, processor: Any, completed: bool) -> None:
        child = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(os.environ["STARTED"], str(child.pid)), "w") as note:
            note.write(str(child.pid))
        time.sleep(600)


class Leaves_a_program(Slave_command):
    """Starts a program that would run for minutes, and returns its pid, leaving it running."""

    def run(self, processor: Any, completed: bool) -> None:
        child = subprocess.Popen(["sleep", "300"])
        processor.return_object(Value(processor, child.pid))


class Leaves_a_program_and_dies_once(Slave_command):
    """Starts a program that would run for minutes, notes its pid in ``folder``, and kills
    its slave the first time it runs; returns the program's pid the second time."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, processor: Any, completed: bool) -> None:
        first = not os.listdir(self.folder)
        child = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(self.folder, str(child.pid)), "w") as note:
            note.write(str(child.pid))
        if first:
            os.kill(os.getpid(), signal.SIGKILL)
        processor.return_object(Value(processor, child.pid))


class Exit_hard(Slave_command):
    """Ends its slave process without a word."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def run(self, processor: Any, completed: bool) -> None:
        os._exit(self.status)


class Exits_when_unpickled(Slave_command):
    """Ends the process that unpickles it, unless it is the master that made it: its slave
    dies before it runs anything."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.master = os.getpid()

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["master"] != os.getpid():
            os._exit(state["status"])
        self.__dict__.update(state)

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, "ran"))


class _Ends_its_pickler:
    """Ends the process that pickles it with ``status`` (a crash, or memory running out, as a
    large result is pickled)."""

    def __init__(self, status: int) -> None:
        self.status = status

    def __reduce__(self) -> Any:
        os._exit(self.status)


class Exits_when_its_result_is_pickled(Slave_command):
    """Returns a result that ends its slave as it is pickled, after every command of its
    batch ran."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, _Ends_its_pickler(self.status)))


class Where(Slave_command):
    """Sleeps, then returns the rank and process id of its slave."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def run(self, processor: Any, completed: bool) -> None:
        time.sleep(self.seconds)
        processor.return_object(Value(processor, (processor.rank(), os.getpid())))


class Pid(Slave_command):
    """Returns the process id of its slave."""

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Value(processor, os.getpid()))


class Open_files(Slave_command):
    """Returns what each descriptor of its slave's process is open on (``/proc``'s links)."""

    def run(self, processor: Any, completed: bool) -> None:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # (the listing's own, closed since)
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
        processor.return_object(Value(processor, links))


class Runs_queue(Result_command):
    """A result that starts another run from the master, or stops the slaves, or sends them
    data (which is refused)."""

    def __init__(self, processor: Any, call: str) -> None:
        super().__init__(processor=processor, completed=True)
        self.call = call

    def run(self, processor: Any, memo: Any) -> None:
        if self.call == "stop_slaves":
            processor.stop_slaves()
        if self.call == "send_data_to_slaves":
            processor.send_data_to_slaves("table", [1, 2])
        processor.add_to_queue(Square(100))
        processor.run_queue()


class Queued_from_another_thread(Result_command):
    """A result that has another thread of the master queue a command while the run goes
    on, and notes what that thread was told."""

    def run(self, processor: Any, memo: Record) -> None:
        told: list[str] = []

        def queue() -> None:
            try:
                processor.add_to_queue(Square(1))
                told.append("queued")
            except Exception as error:
                told.append(f"{type(error).__name__}: {error}")

        thread = threading.Thread(target=queue)
        thread.start()
        thread.join()
        memo.values.append((self.rank, told[0]))


class Returns_one_queued_from_another_thread(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Queued_from_another_thread(processor=processor, completed=True))


class Starts_a_run(Slave_command):
    def __init__(self, call: str = "run_queue") -> None:
        super().__init__()
        self.call = call

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Runs_queue(processor, self.call))


class Follow_up(Result_command):
    """A result that queues a command for the next run, as iterative applications do."""

    def run(self, processor: Any, memo: Any) -> None:
        processor.add_to_queue(Square(2))


class Queues_a_follow_up(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Follow_up(processor=processor, completed=True))


class Fails_and_its_result_too(Slave_command):
    """Returns a result that raises on the master, then raises itself."""

    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Raising_result(processor=processor, completed=True))
        raise ValueError("the command failed")


class Halt(BaseException):
    """An exception outside Exception, as some libraries raise."""


class Halting_result(Result_command):
    """A result that raises ``Halt`` on the master: the run ends there, as on Ctrl-C."""

    def run(self, processor: Any, memo: Any) -> None:
        raise Halt


class Returns_halting_result(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        processor.return_object(Halting_result(processor=processor, completed=True))


class Interrupt_once(Slave_command):
    """Sends its own slave SIGINT the first time it runs (noted in ``marker``), which ends the
    slave; then returns its index."""

    def __init__(self, marker: str, index: int = 0, always: bool = False) -> None:
        super().__init__()
        self.marker = marker
        self.index = index
        self.always = always

    def run(self, processor: Any, completed: bool) -> None:
        if self.always or not os.path.exists(self.marker):
            with open(self.marker, "w"):
                pass
            print(f"interrupted {self.index}")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)  # (the KeyboardInterrupt comes here)
        processor.return_object(Value(processor, ("survived", self.index)))


class Catches_its_sigint(Slave_command):
    """Sends its own slave SIGINT, and takes the KeyboardInterrupt itself: the slave goes on."""

    def run(self, processor: Any, completed: bool) -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
        except KeyboardInterrupt:
            processor.return_object(Value(processor, "caught"))


class Logs_wanted(Slave_command):
    """Returns whether its slave logs the levels of ``levels`` on the logger ``name``."""

    def __init__(self, name: str, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.name = name
        self.levels = levels

    def run(self, processor: Any, completed: bool) -> None:
        enabled = logging.getLogger(self.name).isEnabledFor
        processor.return_object(Value(processor, [enabled(level) for level in self.levels]))


class Logged(Slave_command):
    """Appends its index to a file each time it runs, then returns it."""

    def __init__(self, log: str, index: int) -> None:
        super().__init__()
        self.log = log
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        with open(self.log, "a") as log:
            log.write(f"{self.index}\n")
        processor.return_object(Value(processor, self.index))


class Stop_once(Slave_command):
    """Stops its slave with SIGSTOP the first time it runs (noted in ``marker``): the slave
    hangs, silent, until it is killed."""

    def __init__(self, marker: str, index: int = 0) -> None:
        super().__init__()
        self.marker = marker
        self.index = index

    def run(self, processor: Any, completed: bool) -> None:
        import signal

        if not os.path.exists(self.marker):
            with open(self.marker, "w"):
                pass
            os.kill(os.getpid(), signal.SIGSTOP)
        processor.return_object(Value(processor, ("survived", self.index)))


class Poison:
    """Data whose unpickling kills the process that receives it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (3,))
