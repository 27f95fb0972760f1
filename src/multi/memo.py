"""Memos: master-side objects that the results of a command find again when they arrive."""

from __future__ import annotations

import itertools

_ids = itertools.count(1)


class Memo:
    """Data that stays on the master and is handed to the result commands of a command.

    A memo never travels: only its id goes with the command. The id is unique for the life
    of the process (unlike ``id()``, which a collected object hands on to the next one).
    """

    def memo_id(self) -> int:
        """Return the id that the commands of this memo carry (given on first use: taking
        the next number of a counter is atomic, so no lock is needed)."""
        state = self.__dict__
        memo_id = state.get("_multi_memo_id")
        if memo_id is None:
            memo_id = state.setdefault("_multi_memo_id", next(_ids))
        return memo_id  # type: ignore[no-any-return]
