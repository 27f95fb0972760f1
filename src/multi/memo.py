"""Memos: master-side objects that the results of a command find again when they arrive."""

from __future__ import annotations

import itertools
import threading

_ids = itertools.count(1)
_ids_lock = threading.Lock()


class Memo:
    """Data that stays on the master and is handed to the result commands of a command.

    A memo never travels: only its id goes with the command. The id is unique for the life
    of the process (unlike ``id()``, which a collected object hands on to the next one).
    """

    def memo_id(self) -> int:
        """Return the id that the commands of this memo carry."""
        try:
            return self.__dict__["_multi_memo_id"]
        except KeyError:
            with _ids_lock:
                memo_id = self.__dict__.setdefault("_multi_memo_id", next(_ids))
            return memo_id
