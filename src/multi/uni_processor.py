"""The ``uni`` fabric: the master runs every command itself, inline.

For debugging and tests: the same application and the same contract, in one process. With
``pickle_check`` (or ``MULTI_UNI_PICKLE_CHECK=1``) every command and result makes a pickle
round trip, so a job is known to be fit for other processes before it is sent to a cluster.
"""

from __future__ import annotations

import threading
from collections import deque

from multi.errors import warn
from multi.options import Option, boolean
from multi.processor import Processor
from multi.slave import (
    Batch,
    Slave_context,
    execute,
    rebuilt_batch,
    rebuilt_report,
    run_batch,
    seal,
)
from multi.transport import Message, Payload, Transport


class Uni_transport(Transport):
    """Runs each batch as it is sent; ``receive`` hands back what it gave."""

    window = 1  # (batches: there is no message to save, but the engine's cost per batch)
    inline = True

    def __init__(self, processor: Processor, pickle_check: bool) -> None:
        self.processor = processor
        self.pickle_check = pickle_check
        self.pickled = pickle_check  # the engine then pickles every batch, as for processes
        # (Ctrl-C reaches the main thread: an executor's engine runs commands on another)
        self.context = Slave_context(1, 1, processor.data_store, signalled=_on_the_main_thread)
        self._replies: deque[tuple[int, Message]] = deque()

    ranks = (1,)  # the master itself, always (an attribute: a property is a call per run)

    def send(self, rank: int, payload: Payload) -> None:
        # The batch itself, unless the engine pickled it (``pickled`` follows ``pickle_check``).
        if not self.pickle_check:
            batch: Batch = payload  # type: ignore[assignment]  # (``cast`` is a call)
            report = execute(self.processor, self.context, batch)
        else:
            rebuilt = rebuilt_batch(payload)  # as a slave process and its master rebuild them
            report = run_batch(self.processor, self.context, rebuilt)
            if report.interruption is None and not isinstance(rebuilt, Exception):
                report = rebuilt_report(rank, seal(report, rebuilt[1]))
        if report.interruption is not None:  # Ctrl-C in a command: it interrupts the master
            raise report.interruption
        self._replies.append((rank, report))

    def receive(self, timeout: float | None = None) -> tuple[int, Message] | None:
        return self._replies.popleft() if self._replies else None

    def stop(self, timeout: float, status: int = 0) -> None:
        self._replies.clear()


class Uni_processor(Processor):
    """The master is its only slave."""

    fabric = "uni"
    options = (
        *Processor.options,
        Option(
            "pickle_check",
            "send every command and result through pickle, as a cluster would",
            False,
            boolean,
        ),
    )

    def slave_count(self, requested: int | None) -> int:
        if requested not in (None, 1):
            warn(f"the uni fabric runs commands in the master alone, not on {requested} slaves")
        return 1

    def make_transport(self) -> Transport:
        return Uni_transport(self, self.settings["pickle_check"])

    def get_intro_string(self) -> str:
        return "Uni-processor."


def _on_the_main_thread(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt in a command may be Ctrl-C: on the main thread, it may."""
    return threading.current_thread() is threading.main_thread()
