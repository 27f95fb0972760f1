"""Rules of the contract checked under ``mpiexec -n 3``, where the launcher starts the slaves:

    mpiexec -n 3 python tests/apps/mpi_checks.py

Every rank runs this program; the master runs the checks and prints "all checks passed".
"""

import contextlib
import io
import re
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy

from multi import (
    Application_callback,
    MultiError,
    Processor_box,
    RemoteTraceback,
    UnpicklableError,
    load_multiprocessor,
)
from tests import workloads as w


def values(memo):
    return [value for _, value in memo.values]


def run(processor, commands):
    memo = w.Record()
    for command in commands:
        processor.add_to_queue(command, memo)
    processor.run_queue()
    return memo


class Checks:
    def run(self):
        processor = Processor_box().processor
        assert processor.processor_size() == 2, processor.processor_size()
        assert processor.rank() == 0 and processor.on_master()
        print(processor.get_intro_string())

        # Dynamic scheduling and batching: every result comes back, in queue order.
        memo = run(processor, [w.Square(x) for x in range(2000)])
        assert values(memo) == [x * x for x in range(2000)]
        assert {rank for rank, _ in memo.values} == {1, 2}

        # Exceptions keep their type and the slave's traceback; nothing before is lost.
        memo = w.Record()
        for i in range(5):
            processor.add_to_queue(w.Square(i), memo)
        processor.add_to_queue(w.Fail(ValueError("bad value"), index=5), memo)
        try:
            processor.run_queue()
        except ValueError as error:
            cause = error.__cause__
            assert isinstance(cause, RemoteTraceback), cause
            assert re.search(r"Traceback of slave \d of 2 \(host .+, pid \d+\)", str(cause))
        else:
            raise AssertionError("the ValueError did not reach the master")
        assert values(memo)[:6] == [0, 1, 4, 9, 16, ("before failing", 5)]
        assert not processor.is_queued() and processor.memo_map == {}

        # sys.exit in a command is an error, not the end of a slave.
        try:
            run(processor, [w.Fail(SystemExit(4))])
        except MultiError as error:
            assert "sys.exit(4)" in str(error), error
        else:
            raise AssertionError("sys.exit on a slave was not reported")

        # A command that does not pickle is named, and the others run.
        try:
            run(processor, [w.Square(3), w.Carries(threading.Lock())])
        except UnpicklableError as error:
            assert "does not pickle" in str(error), error
        else:
            raise AssertionError("an unpicklable command was sent")

        # Data reaches every slave once; a global command runs once on each.
        processor.send_data_to_slaves("vector", [1.0, 2.0])
        assert values(run(processor, [w.Fetch("vector")] * 8)) == [[1.0, 2.0]] * 8
        processor.run_command_globally(w.Whoami())
        assert sorted(processor.data_store.unclaimed) == [(1, (1, 1)), (2, (2, 1))]

        # Large arrays travel out of band, intact and writable.
        arrays = [numpy.random.default_rng(seed).random(2**20) for seed in range(4)]
        received = values(run(processor, [w.Carries(a) for a in arrays]))
        for sent, got in zip(arrays, received, strict=True):
            assert numpy.array_equal(sent, got)
            got[0] = -1.0

        # Output is replayed per command, as one block, with the rank prefix at verbosity 1.
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            memo = run(processor, [w.Talk(i) for i in range(2)])
        for block, (rank, _) in enumerate(memo.values):
            lines = [f"command {block} line {n}" for n in range(3)]
            lines += [f"command {block} in pieces", f"command {block} unfinished"]
            expected = [f"{rank}  | {line}" for line in lines]
            assert out.getvalue().splitlines()[5 * block : 5 * block + 5] == expected, out
            assert err.getvalue().splitlines()[block] == f"{rank} E| command {block} to stderr"
        print("all checks passed")


if __name__ == "__main__":
    processor = load_multiprocessor("mpi4py", Application_callback(Checks()), -1, verbosity=1)
    processor.run()
    print(f"after run() on rank {processor.rank()}")
