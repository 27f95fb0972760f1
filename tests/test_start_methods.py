"""The multiprocessing fabric under each way of starting its slaves: forkserver (the default),
spawn, and fork, which copies the master as it is."""

from __future__ import annotations

import multiprocessing
import signal
from pathlib import Path
from typing import Any

import pytest

from tests import workloads as w
from tests.conftest import run_master

METHODS = [
    m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()
]


def values(memo: w.Record) -> list[Any]:
    return [value for _, value in memo.values]


@pytest.mark.parametrize("method", METHODS)
def test_every_start_method_runs_replaces_and_delivers_in_order(
    method: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    def body(processor: Any) -> tuple[list[Any], int, str]:
        memo = w.Record()
        for i in range(200):
            command = w.Die_once(str(tmp_path / "died"), signal.SIGKILL, i) if i == 120 else None
            processor.add_to_queue(command or w.Square(i), memo)
        processor.add_to_queue(w.Talk(200, lines=1), memo)
        processor.add_to_queue(w.Fail(ValueError("last"), 201), memo)
        with pytest.raises(ValueError, match="last"):
            processor.run_queue()
        return values(memo), processor.last_run.retries, processor.settings["start_method"]

    delivered, retries, used = run_master("multiprocessing", body, start_method=method)
    squares = [("survived", 120) if i == 120 else i * i for i in range(200)]
    assert delivered == [*squares, 200, ("before failing", 201)]
    assert retries == 1 and used == method
    assert "command 200 line 0" in capfd.readouterr().out
