"""The cyclic garbage collector's young generation, sized for batches.

Commands and results travel a batch at a time: a report of 1,000 tiny results makes some 3,000
objects at once. Under Python's default threshold (a young collection whenever 700 objects
more were made than freed), every report set off collections that could free nothing, since
those objects live until they are delivered; they took a fifth of the master's CPU time on tiny
commands. While a run of more than ``SMALL_RUN`` commands goes on, and for the whole life of a
slave process, the young generation holds ``YOUNG_OBJECTS`` instead: cyclic garbage is still
collected, only later.
"""

from __future__ import annotations

import gc

#: Objects made beyond those freed before a young collection (a few MB of small objects).
YOUNG_OBJECTS = 100_000
#: A run of this many commands or fewer holds nothing: its round trip is timed in microseconds,
#: and its reports make few objects unless its commands return many results each.
SMALL_RUN = 64


def _sized(threshold: tuple[int, ...]) -> tuple[int, ...] | None:
    """The threshold for batches, or None where it is large enough, or collection is off."""
    young = threshold[0]
    if young == 0 or young >= YOUNG_OBJECTS:
        return None
    return (YOUNG_OBJECTS, *threshold[1:])


#: What ``hold_batches`` changed: the threshold before, and the one set for batches.
Held = tuple[tuple[int, ...], tuple[int, ...]]


def hold_batches(commands: int | None) -> Held | None:
    """Hold batches in the young generation until ``restore``, for a run of ``commands``
    (None: not known yet, as in a run that takes them as it goes); None where nothing changed.

    Two calls rather than a context manager: a run of one command is timed in microseconds,
    and a generator-based ``with`` costs more than the two calls to the collector.
    """
    if commands is not None and commands <= SMALL_RUN:
        return None
    before = gc.get_threshold()
    ours = _sized(before)
    if ours is None:
        return None
    gc.set_threshold(*ours)
    return before, ours


def restore(held: Held | None) -> None:
    """Give back the threshold that ``hold_batches`` found, unless the application set one of
    its own meanwhile."""
    if held is not None and gc.get_threshold() == held[1]:
        gc.set_threshold(*held[0])


def size_for_batches() -> None:
    """Hold batches in the young generation for the rest of this process (a slave's)."""
    ours = _sized(gc.get_threshold())
    if ours is not None:
        gc.set_threshold(*ours)
