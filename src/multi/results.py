"""Result commands: what a slave hands back, run on the master's main thread."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multi.memo import Memo
    from multi.processor import Processor


class Result:
    """Base of everything a slave returns: where it comes from and whether it is the last.

    ``completed`` and ``memo_id`` are the class's while they hold their usual values: an
    instance holds only what differs. A result that holds nothing but its ``rank`` travels in
    its slave's report as its class alone, and the master gives it the report's rank: it
    unpickles in a quarter of the time.
    """

    completed: bool = True
    memo_id: int | None = None

    def __init__(self, processor: Processor, completed: bool) -> None:
        if completed is not True:
            self.completed = completed
        self.rank = processor.rank()


class Result_command(Result):
    """A result whose ``run`` is called on the master with the memo of its command.

    Without a ``memo_id`` of its own, a result gets the memo of the command that returned it.
    """

    def __init__(self, processor: Processor, completed: bool = True, memo_id: int | None = None):
        super().__init__(processor, completed)
        if memo_id is not None:
            self.memo_id = memo_id

    def run(self, processor: Processor, memo: Memo | None) -> None:
        """Act on the result, on the master; the default does nothing."""


class Null_result_command(Result_command):
    """A result that carries nothing, for commands that only need to say they are done."""

    def __init__(self, processor: Processor, completed: bool = True) -> None:
        super().__init__(processor, completed=completed)


class Result_string(Result_command):
    """A piece of text that the master writes on its standard output."""

    def __init__(self, processor: Processor, string: str, completed: bool = True) -> None:
        super().__init__(processor, completed=completed)
        self.string = string

    def run(self, processor: Processor, memo: Memo | None) -> None:
        sys.stdout.write(self.string)


class Result_exception(Result_command):
    """An exception handed back as a result: running it on the master raises it."""

    def __init__(self, processor: Processor, exception: BaseException, completed: bool = True):
        super().__init__(processor, completed=completed)
        self.exception = exception

    def run(self, processor: Processor, memo: Memo | None) -> None:
        raise self.exception


class Batched_result_command(Result_command):
    """Several results with the output printed while they were made, delivered as one.

    Each runs with the memo it names, or else with the one this result runs with: that of
    the command that returned it, as if the command had returned them one by one.
    """

    def __init__(
        self,
        processor: Processor,
        result_commands: Sequence[Result_command],
        io_data: Sequence[Sequence[Any]] | None = None,
        completed: bool = True,
    ) -> None:
        super().__init__(processor, completed=completed)
        self.result_commands = list(result_commands)
        self.io_data = [(stream, text) for text, stream in io_data or ()]

    def run(self, processor: Processor, memo: Memo | None) -> None:
        from multi.capture import replay

        replay(self.io_data, None)
        for result in self.result_commands:
            processor.process_result(result, memo)
