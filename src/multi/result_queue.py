"""Queues of result commands waiting to run on the master.

The engine delivers results itself, on the master's main thread; these queues remain for
applications that collect results and run them later.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multi.processor import Processor


class Result_queue:
    """Results to run with ``processor.process_result``."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def put(self, job: Any) -> None:
        """Add a result."""
        raise NotImplementedError

    def run_all(self) -> None:
        """Run every result put so far; raise the first exception one of them raised."""


class Immediate_result_queue(Result_queue):
    """Runs each result as it is put, in the caller's thread."""

    def put(self, job: Any) -> None:
        self.processor.process_result(job)


class Threaded_result_queue(Result_queue):
    """Runs results in order on a thread of its own, so that the caller never waits for them.

    After a result raises, later ones are skipped; ``run_all`` raises that exception.
    """

    _DONE = object()

    def __init__(self, processor: Processor) -> None:
        super().__init__(processor)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="multi-results", daemon=True)
        self._thread.start()

    def put(self, job: Any) -> None:
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not self._DONE:
            if self._error is None:
                try:
                    self.processor.process_result(job)
                except BaseException as exc:
                    self._error = exc

    def run_all(self) -> None:
        self._jobs.put(self._DONE)
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
