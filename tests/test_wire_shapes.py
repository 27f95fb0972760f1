"""What a batch and a report become on the wire: everything comes back, in a lean form."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from multi import wire
from multi.errors import Failure
from multi.slave import SETUP_ID, Report, batch_for_wire, rebuilt_batch, rebuilt_report, seal
from tests import workloads as w


@pytest.mark.parametrize(
    "ids", [range(5, 9), range(0, 1), [7, 2, 4, 3], [SETUP_ID, SETUP_ID, SETUP_ID, SETUP_ID]]
)
def test_a_batch_comes_back_with_the_ids_of_its_commands(ids: Sequence[int]) -> None:
    commands = [w.Square(i) for i in range(len(ids))]
    frames = wire.dumps(batch_for_wire((ids, commands)))

    batch = rebuilt_batch(frames)

    assert not isinstance(batch, Exception)
    assert list(batch[0]) == list(ids)
    assert [command.x for command in batch[1]] == [0, 1, 2, 3][: len(ids)]
    if isinstance(ids, range):  # a stretch names its first index, not a range object
        assert b"range" not in bytes(frames[0])


def test_a_report_comes_back_whole() -> None:
    failure = Failure(ValueError("bad"), "While running:", 3)
    report = Report(3, [1, 2, 3], [2, 0, 1], [0.5, 0.25, 0.125], {1: [(1, "out\n")]},
                    {1: failure}, started=12.5, lost="was ended by KeyboardInterrupt")  # fmt: skip

    back = rebuilt_report(3, seal(report, []))

    assert type(back) is Report
    assert back.fields()[:5] == report.fields()[:5]
    assert back.started == 12.5 and back.lost == report.lost
    assert back.failures is not None and str(back.failures[1].exception()) == "bad"
    assert back.unreadable is None
