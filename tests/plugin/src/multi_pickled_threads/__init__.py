"""A fabric from outside the ``multi`` package, built on its extension API alone.

Slaves are threads, as in the ``thread`` fabric, but every batch and every report is pickled on
its way, so that sharing by reference cannot hide what would break between processes.
"""

from __future__ import annotations

from multi import wire
from multi.slave import Report, rebuilt_batch, rebuilt_report, seal
from multi.thread_processor import Thread_processor, Thread_transport
from multi.transport import Message, Payload, Transport


class Pickled_threads_transport(Thread_transport):
    pickled = True  # the engine hands over batches as pickled frames

    def send(self, rank: int, payload: Payload) -> None:
        self.traffic[rank, "sent"] += wire.size(payload)  # type: ignore[arg-type]
        super().send(rank, rebuilt_batch(payload))  # type: ignore[arg-type]

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        received = super().receive(timeout)
        if received is not None and isinstance(received[1], Report):
            rank, report = received
            frames = seal(report, ())
            self.traffic[rank, "received"] += wire.size(frames)
            received = rank, rebuilt_report(rank, frames)
        return received


class Pickled_threads_processor(Thread_processor):
    fabric = "pickled_threads"

    def make_transport(self) -> Transport:
        return Pickled_threads_transport(self, self.processor_size())

    def get_intro_string(self) -> str:
        return f"Pickled threads: {self.processor_size()} slave threads and 1 master."
