"""A fabric from outside the ``multi`` package, built on its extension API alone.

Slaves are threads, as in the ``thread`` fabric, but every batch and every reply is pickled on
its way, so that sharing by reference cannot hide what would break between processes.
"""

from __future__ import annotations

from multi import wire
from multi.slave import Batch, seal
from multi.thread_processor import Thread_processor, Thread_transport
from multi.transport import Message, Transport


class Pickled_threads_transport(Thread_transport):
    def send(self, rank: int, batch: Batch) -> None:
        frames = wire.dumps(list(batch))
        self.traffic[rank, "sent"] += wire.size(frames)
        super().send(rank, wire.loads(frames))

    def receive(self) -> tuple[int, Message]:
        rank, message = super().receive()
        if isinstance(message, list):
            frames = seal(message, {})
            self.traffic[rank, "received"] += wire.size(frames)
            message = wire.loads(frames)
        return rank, message


class Pickled_threads_processor(Thread_processor):
    fabric = "pickled_threads"

    def make_transport(self) -> Transport:
        return Pickled_threads_transport(self, self.processor_size())

    def get_intro_string(self) -> str:
        return f"Pickled threads: {self.processor_size()} slave threads and 1 master."
