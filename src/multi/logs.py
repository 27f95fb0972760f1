"""Logging records of commands on slave processes, handed to the master's logging.

While a slave process runs a batch, the root logger's handlers give way to one that keeps each
record (its message formatted, its traceback as text, and ``slave`` and ``command`` attributes
added) with the command's output. On the master the record goes to the logger of its name, in
its place among what the command wrote, where the application's own handlers and formats apply
(``%(slave)s`` and ``%(command)s`` can appear in them); the master's levels decide what shows.
Slaves that are threads of the master log there directly.

A slave process logs what the master would show: each batch carries the levels set on the
master's loggers (``master_levels``), which the slave's loggers take before it runs
(``Log_forwarding``). A record that the master would drop then costs nothing on the slave: a
library's debug records, forwarded to be dropped, took 22 µs each. And levels the master sets
once its slaves run (most programs configure logging in their main) hold there at once.
"""

from __future__ import annotations

import logging
from typing import Any

#: The stream number of a record among a command's chunks of output.
LOG = 2
_PLAIN = (str, int, float, bool, type(None))

#: The levels set on loggers, by name ("" for the root), the root's first.
Levels = tuple[tuple[str, int], ...]

#: A key that the root logger's cache holds while ``master_levels`` is up to date: setting any
#: logger's level (``setLevel``, ``basicConfig``, ``logging.disable``) empties every cache.
_FRESH = object()
_levels: Levels = ()
#: The levels that the master sent with the last batch, on a slave process.
wanted: Levels = (("", logging.WARNING),)


def master_levels() -> Levels:
    """The levels set on this process's loggers, for its slaves: looked for again only once
    some level was set since, so that a batch pays a lookup in a dict."""
    global _levels
    root = logging.getLogger()
    cache = getattr(root, "_cache", None)
    if isinstance(cache, dict) and _FRESH in cache:
        return _levels
    loggers = list(root.manager.loggerDict.items())
    _levels = (("", root.level), *(
        (name, logger.level) for name, logger in loggers
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
    ))  # fmt: skip
    if isinstance(cache, dict):
        cache[_FRESH] = True
    return _levels


def want(levels: Levels) -> None:
    """Note the levels that the master sent with a batch (``master_levels``)."""
    global wanted
    wanted = levels


class Forwarding_handler(logging.Handler):
    """Keeps the records of the command that runs, ready to travel to the master."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.records: list[tuple[int, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg = record.getMessage()
            record.args = None
            if record.exc_info:
                if not record.exc_text:
                    record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            for name, value in record.__dict__.items():
                if not isinstance(value, _PLAIN):
                    record.__dict__[name] = repr(value)  # extras that might not pickle
            record.slave = self.rank
            self.records.append((LOG, record))
        except Exception:
            self.handleError(record)


class Log_forwarding:
    """The root logger's handlers replaced by the forwarding one while a batch runs.

    When a batch begins, the loggers take the levels the master sent (``wanted``), where they
    changed, and the root logger its level again if a command set another. Levels are not put
    back when it ends (a level a command sets lasts until the next batch begins): ``setLevel``
    empties the cache of every logger there is, which cost a batch 6 µs with 20 loggers and
    30 µs with 180 when the level was set and put back each time.
    """

    def __init__(self, rank: int) -> None:
        self.handler = Forwarding_handler(rank)
        self._applied: Levels = ()
        self._saved: list[logging.Handler] | None = None
        self._root = logging.getLogger()  # (made once by logging, for the life of the process)

    def begin(self) -> None:
        root = self._root
        levels = wanted
        if levels != self._applied:
            self._apply(levels)
        elif root.level != levels[0][1]:  # (a command may change it)
            root.setLevel(levels[0][1])
        # (the list itself is kept: the commands change the one put in its place, if any)
        self._saved = root.handlers
        root.handlers = [self.handler]

    def _apply(self, levels: Levels) -> None:
        """Give the loggers the master's levels; those it no longer sets inherit theirs."""
        now = dict(levels)
        for name in dict(self._applied).keys() - now.keys():
            logging.getLogger(name).setLevel(logging.NOTSET)
        for name, level in levels:
            logger = logging.getLogger(name)
            if logger.level != level:
                logger.setLevel(level)
        self._applied = levels

    def end(self) -> None:
        if self._saved is not None:
            self._root.handlers = self._saved
            self._saved = None

    def take(self) -> list[tuple[int, Any]]:
        """The records of the command that just ran."""
        records, self.handler.records = self.handler.records, []
        return records


def give_records_their_slave() -> None:
    """Give every record ``slave`` (the rank of the slave it was logged on, 0 on the master)
    and ``command`` (the class and id of the command that logged it, "" outside commands) so
    that formats may name them anywhere."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "multi", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        from multi.application import Processor_box

        processor = Processor_box().processor
        record.slave = processor.rank() if processor is not None else 0
        record.command = processor.current_command() if processor is not None else ""
        return record

    factory.multi = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def replay(record: logging.LogRecord) -> None:
    """Hand a slave's record to the master's logger of its name, if its level is wanted."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
