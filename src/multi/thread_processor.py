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
from multi.slave import Batch, Slave_context, execute
from multi.transport import Message, Slave_lost, Transport


class Thread_transport(Transport):
    """One inbox per slave thread, one outbox for all."""

    def __init__(self, processor: Processor, slaves: int) -> None:
        self.processor = processor
        self.slaves = slaves
        self._inboxes: dict[int, queue.SimpleQueue[Batch | None]] = {}
        self._outbox: queue.SimpleQueue[tuple[int, Message]] = queue.SimpleQueue()
        self._threads: dict[int, threading.Thread] = {}

    @property
    def ranks(self) -> range:
        return range(1, self.slaves + 1)

    def start(self) -> None:
        for rank in self.ranks:
            self._start(rank, Data_store())

    def _start(self, rank: int, store: Data_store) -> None:
        inbox = self._inboxes[rank] = queue.SimpleQueue()
        context = Slave_context(rank, self.slaves, store)
        thread = threading.Thread(
            target=self._serve, args=(context, inbox), name=f"multi-slave-{rank}", daemon=True
        )
        self._threads[rank] = thread
        thread.start()

    def _serve(self, context: Slave_context, inbox: queue.SimpleQueue[Batch | None]) -> None:
        while (batch := inbox.get()) is not None:
            try:
                outcomes = execute(self.processor, context, batch)
            except BaseException as exc:  # the thread is ending: a fresh one takes its rank
                self._start(context.rank, context.data_store)
                self._outbox.put(
                    (context.rank, Slave_lost(context.rank, f"ended by {exc!r}", replaced=True))
                )
                return
            self._outbox.put((context.rank, outcomes))

    def send(self, rank: int, batch: Batch) -> None:
        self._inboxes[rank].put(batch)

    def receive(self) -> tuple[int, Message]:
        return self._outbox.get()

    def stop(self, timeout: float) -> None:
        for inbox in self._inboxes.values():
            inbox.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))


class Thread_processor(Processor):
    """Slaves are ``processor_size`` threads of the master."""

    fabric = "thread"

    def make_transport(self) -> Transport:
        return Thread_transport(self, self._processor_size)

    def get_intro_string(self) -> str:
        return f"Threads: {self._processor_size} slave threads and 1 master, in one process."
