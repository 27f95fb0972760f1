"""The cyclic garbage collector's young generation, sized for batches.

Commands and results travel a batch at a time: a report of 1,000 tiny results makes some 3,000
objects at once. Under Python's default threshold (a young collection whenever 700 objects
more were made than freed), every report set off collections that could free nothing, since
those objects live until they are delivered; they took a fifth of the master's CPU time on tiny
commands. While a run goes on, and for the whole life of a slave process, the young generation
holds ``YOUNG_OBJECTS`` instead: cyclic garbage is still collected, only later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Objects made beyond those freed before a young collection (a few MB of small objects).
YOUNG_OBJECTS = 100_000


def _sized(threshold: tuple[int, ...]) -> tuple[int, ...] | None:
    """The threshold for batches, or None where it is large enough, or collection is off."""
    young = threshold[0]
    if young == 0 or young >= YOUNG_OBJECTS:
        return None
    return (YOUNG_OBJECTS, *threshold[1:])


@contextmanager
def sized_for_batches() -> Iterator[None]:
    """Hold batches in the young generation while this lasts; then restore the threshold,
    unless the application set one of its own meanwhile."""
    before = gc.get_threshold()
    ours = _sized(before)
    if ours is None:
        yield
        return
    gc.set_threshold(*ours)
    try:
        yield
    finally:
        if gc.get_threshold() == ours:
            gc.set_threshold(*before)


def size_for_batches() -> None:
    """Hold batches in the young generation for the rest of this process (a slave's)."""
    ours = _sized(gc.get_threshold())
    if ours is not None:
        gc.set_threshold(*ours)
