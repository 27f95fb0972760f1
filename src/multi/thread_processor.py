"""The ``thread`` fabric: slaves are threads of the master.

Commands and results are shared, not copied, so nothing needs to pickle. Pure-Python work
does not run in parallel under the GIL; work that releases it (numpy, I/O, C extensions) does.
Each slave keeps its own data store, as a slave process would.
"""

from __future__ import annotations

import queue
import threading
import time

from multi.processor import Data_store, Processor
from multi.slave import Batch, Slave_context, never_signalled, run_batch
from multi.transport import Message, Payload, Transport


class Thread_transport(Transport):
    """One inbox per slave thread, one outbox for all."""

    replaceable = True
    wakes = True

    def __init__(self, processor: Processor, slaves: int) -> None:
        self.processor = processor
        self.slaves = slaves
        #: Each slave's batches (or why one could not be rebuilt, where they are pickled).
        self._inboxes: dict[int, queue.SimpleQueue[Batch | Exception | None]] = {}
        #: What the slaves report, and None for a ``wake``: one at a time, while it is not
        #: taken (``_waking``), so that a stream of calls does not queue a wake for each.
        self._outbox: queue.SimpleQueue[tuple[int, Message] | None] = queue.SimpleQueue()
        self._waking = False
        self._threads: dict[int, threading.Thread] = {}

    @property
    def ranks(self) -> list[int]:
        return sorted(self._inboxes)

    def start(self) -> None:
        for rank in range(1, self.slaves + 1):
            self.replace(rank)

    def replace(self, rank: int) -> None:
        """Start a slave thread, with a data store of its own (the engine fills it again)."""
        inbox = self._inboxes[rank] = queue.SimpleQueue()
        context = Slave_context(rank, self.slaves, Data_store(), signalled=never_signalled)
        thread = threading.Thread(
            target=self._serve, args=(context, inbox), name=f"multi-slave-{rank}", daemon=True
        )
        self._threads[rank] = thread
        thread.start()

    def _serve(
        self, context: Slave_context, inbox: queue.SimpleQueue[Batch | Exception | None]
    ) -> None:
        while (batch := inbox.get()) is not None:
            report = run_batch(self.processor, context, batch)
            self._outbox.put((context.rank, report))
            if report.lost is not None:  # the slave ends here; the engine decides what next
                return

    def send(self, rank: int, payload: Payload) -> None:
        self._inboxes[rank].put(payload)  # type: ignore[arg-type]

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        try:
            item = self._outbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:  # (woken)
            self._waking = False
            return None
        rank, message = item
        if getattr(message, "lost", None) is not None:
            self._inboxes.pop(rank, None)
        return rank, message

    def wake(self) -> None:
        if not self._waking:  # (a race at worst puts a second wake: one more empty look)
            self._waking = True
            self._outbox.put(None)

    def stop(self, timeout: float, status: int = 0) -> None:
        for inbox in list(self._inboxes.values()):
            inbox.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))


class Thread_processor(Processor):
    """Slaves are ``processor_size`` threads of the master."""

    fabric = "thread"
    slave_kind = "thread"

    def make_transport(self) -> Transport:
        return Thread_transport(self, self._processor_size)

    def get_intro_string(self) -> str:
        return f"Threads: {self._processor_size} slave threads and 1 master, in one process."
