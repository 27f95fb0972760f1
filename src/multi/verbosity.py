"""The framework's verbosity level, shared by every part of the process.

Level 0 is silent; level 1 adds the rank prefixes on slave output and the overall runtime;
level 2 adds a line of statistics for every ``run_queue``.
"""

from __future__ import annotations


class Verbosity:
    """The process-wide verbosity level: every instance reads and sets the same value."""

    _level: int = 0

    @staticmethod
    def level() -> int:
        """Return the current level (``Verbosity.level()`` reads it without an instance)."""
        return Verbosity._level

    def set(self, value: int | None = 0) -> None:
        """Set the level; ``None`` leaves it unchanged."""
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"verbosity must be a whole number >= 0, not {value!r}")
        Verbosity._level = value
