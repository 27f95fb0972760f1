"""A progress bar while ``run_queue`` works, drawn by tqdm on a terminal."""

from __future__ import annotations

import sys
import warnings
from typing import Any

from multi.errors import MultiWarning

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
    """Counts delivered commands on a bar; clears it while output is written."""

    def __init__(self, wanted: str, total: int) -> None:
        self.bar: Any = None
        if wanted == "no" or (wanted == "auto" and not _on_terminal()):
            return
        try:
            from tqdm import tqdm
        except ImportError:
            if wanted == "yes":
                warnings.warn(
                    "no progress bar: install tqdm (pip install 'multi-fabric[progress]')",
                    MultiWarning,
                    stacklevel=3,
                )
            return
        self.bar = tqdm(
            total=total,
            unit="cmd",
            delay=DELAY_SECONDS,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def clear(self) -> None:
        """Take the bar off the screen before other output."""
        if self.bar is not None:
            self.bar.clear()

    def advance(self, count: int, redraw: bool) -> None:
        """Count delivered commands; draw the bar again if output took its place."""
        if self.bar is not None:
            self.bar.update(count)
            if redraw:
                self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _on_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
