"""A progress bar while ``run_queue`` works, drawn by tqdm on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from multi.errors import warn

SETTINGS = ("auto", "yes", "no")
#: A run shorter than this shows no bar at all.
DELAY_SECONDS = 0.5


def setting(text: str) -> str:
    """Read the progress option: auto (on a terminal), yes or no."""
    value = {"1": "yes", "true": "yes", "on": "yes", "0": "no", "false": "no", "off": "no"}.get(
        text.strip().lower(), text.strip().lower()
    )
    if value not in SETTINGS:
        raise ValueError(f"expected one of {', '.join(SETTINGS)}, not {text!r}")
    return value


class Progress:
    """Counts delivered commands on a bar; clears it while output is written.

    The bar is made once the run has gone on for ``DELAY_SECONDS``, at a delivery: most runs
    are over before then, and making one took 20 µs, more than a whole run of one command.
    ``tqdm`` is the class that draws it; without one, no bar is ever made (``OFF``).
    """

    def __init__(self, total: int, tqdm: Any = None) -> None:
        self.bar: Any = None
        self.total = total
        self.done = 0
        self._tqdm = tqdm
        #: When the bar is due, while one is wanted and not made yet.
        self.due: float | None = None if tqdm is None else time.monotonic() + DELAY_SECONDS
        #: The total as it stands, where it grows as the run goes (an executor's open run).
        self.counted: Callable[[], int] | None = None

    def follow(self, counted: Callable[[], int]) -> None:
        """Have the bar's total follow ``counted()``, read as the bar is drawn."""
        if self._tqdm is not None:  # (``OFF`` is shared, and draws nothing)
            self.counted = counted

    def clear(self) -> None:
        """Take the bar off the screen before other output."""
        if self.bar is not None:
            self.bar.clear()

    def advance(self, count: int, redraw: bool) -> None:
        """Count delivered commands; draw the bar again if output took its place."""
        bar = self.bar
        if bar is not None:
            if self.counted is not None:
                bar.total = self.counted()
            bar.update(count)
        else:
            if self.due is None:
                return
            self.done += count
            if time.monotonic() < self.due:
                return
            bar = self._made()
        if redraw:
            bar.refresh()

    def _made(self) -> Any:
        """The bar, with the commands delivered so far."""
        self.due = None
        self.bar = self._tqdm(
            total=self.total if self.counted is None else self.counted(),
            initial=self.done,
            unit="cmd",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        return self.bar

    def close(self) -> None:
        self.due = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None


#: The progress of a run that shows none.
OFF = Progress(0)


def for_run(wanted: str, total: int) -> Progress:
    """The progress of a run of ``total`` commands, under the option ``progress``: ``OFF``
    unless a bar is wanted (``yes``, or ``auto`` on a terminal) and tqdm is there."""
    if wanted == "no" or (wanted == "auto" and not _on_terminal()):
        return OFF
    try:
        from tqdm import tqdm
    except ImportError:
        if wanted == "yes":
            warn("no progress bar: install tqdm (pip install 'multi-fabric[progress]')")
        return OFF
    return Progress(total, tqdm)


def _on_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
