"""The joblib backend ``"multi"`` on every fabric."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multi import MultiError
from tests.conftest import slaves_for

joblib = pytest.importorskip("joblib")


@pytest.fixture(autouse=True)
def _shared_executor_shut_down() -> Iterator[None]:
    """The executor that Parallel calls share outlives them: it goes with each test."""
    yield
    from multi import joblib_backend

    joblib_backend.shutdown()


def square(x: int) -> int:
    return x * x


def fails_on_five(x: int) -> int:
    if x == 5:
        raise ValueError("no data for 5")
    return x


def n_jobs(fabric: str) -> int:
    size = slaves_for(fabric)
    return 1 if size == -1 else size


def test_parallel_runs_every_call_on_the_fabric(fabric: str) -> None:
    with joblib.parallel_config(backend="multi", fabric=fabric, n_jobs=n_jobs(fabric)):
        values = joblib.Parallel()(joblib.delayed(square)(i) for i in range(500))
        generated = joblib.Parallel(return_as="generator")(
            joblib.delayed(square)(i) for i in range(20)
        )
        assert list(generated) == [i * i for i in range(20)]
    assert values == [i * i for i in range(500)]


def test_a_failing_call_raises_its_exception_and_the_backend_goes_on(fabric: str) -> None:
    with joblib.parallel_config(backend="multi", fabric=fabric, n_jobs=n_jobs(fabric)):
        with pytest.raises(ValueError, match="no data for 5"):
            joblib.Parallel()(joblib.delayed(fails_on_five)(i) for i in range(50))
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(5)) == [
            0, 1, 4, 9, 16,
        ]  # fmt: skip


def nested(fabric: str, x: int) -> int:
    with joblib.parallel_config(backend="multi", fabric=fabric, n_jobs=2):
        return sum(joblib.Parallel()(joblib.delayed(square)(x + j) for j in range(3)))


def test_a_nested_parallel_runs_or_is_refused_on_a_slave_of_an_mpi_job_or_pvm(
    fabric: str,
) -> None:
    # (on thread it took the executor whose slaves ran the outer calls: a deadlock; on a
    # slave of an MPI job it waited to serve for ever, on one of PVM it took its messages)
    calls = (joblib.delayed(nested)(fabric, x) for x in range(4))
    with joblib.parallel_config(backend="multi", fabric=fabric, n_jobs=2):
        if fabric in ("mpi4py", "pvm"):
            refused = f"cannot make a processor or executor of the {fabric} fabric .* on a slave"
            with pytest.raises(MultiError, match=refused):
                joblib.Parallel()(calls)
        else:
            sums = [sum((x + j) ** 2 for j in range(3)) for x in range(4)]
            assert joblib.Parallel()(calls) == sums


def nested_in(options: dict[str, Any], x: int, depth: int) -> int:
    """The sum of squares of ``x`` and the next two, taken by Parallel calls ``depth`` deep."""
    with joblib.parallel_config(backend="multi", n_jobs=2, **options):
        calls = (
            joblib.delayed(square)(x + j)
            if depth == 1
            else joblib.delayed(nested_in)(options, x + j, depth - 1)
            for j in range(3)
        )
        return sum(joblib.Parallel()(calls))


@pytest.mark.parametrize(
    "options",
    [{"fabric": "thread"}, {"fabric": "multiprocessing", "start_method": "fork"}],
    ids=["thread", "forked"],
)
def test_parallel_calls_nested_twice_run(options: dict[str, Any]) -> None:
    # (on thread, a Parallel two deep took the shared executor, all of whose slaves waited;
    # a forked slave took its master's shared executor, whose engine stayed in the master, and
    # then its own slaves were taken for forks of a command)
    def expected(x: int, depth: int) -> int:
        if depth == 1:
            return sum((x + j) ** 2 for j in range(3))
        return sum(expected(x + j, depth - 1) for j in range(3))

    with joblib.parallel_config(backend="multi", n_jobs=2, **options):
        values = joblib.Parallel()(joblib.delayed(nested_in)(options, x, 2) for x in range(2))
    assert values == [expected(x, 2) for x in range(2)]


def pid(_: int) -> int:
    time.sleep(0.01)
    return os.getpid()


def test_parallel_calls_take_the_same_slaves_again(replacing_fabric: str) -> None:
    with joblib.parallel_config(backend="multi", fabric=replacing_fabric, n_jobs=2):
        first, second = (
            set(joblib.Parallel()(joblib.delayed(pid)(i) for i in range(20))) for _ in range(2)
        )
    assert os.getpid() not in first
    assert second <= first


def test_a_parallel_call_with_other_n_jobs_takes_an_executor_of_that_size() -> None:
    # (n_jobs=-1 after n_jobs=3 took the executor of 3 slaves, not one per core)
    from multi import joblib_backend
    from multi.processor import usable_cores

    if usable_cores() < 2:
        pytest.skip("one core: n_jobs=-1 runs the calls in the caller")
    sizes = []
    for n_jobs in (3, -1, 3):
        with joblib.parallel_config(backend="multi", fabric="thread", n_jobs=n_jobs):
            assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]
        shared = joblib_backend._executors.shared
        assert shared is not None
        sizes.append(shared[1].processor.processor_size())
    assert sizes == [3, usable_cores(), 3]


def test_a_parallel_call_keeps_its_executor_while_other_settings_take_another() -> None:
    with joblib.parallel_config(backend="multi", fabric="thread", n_jobs=2):
        ongoing = joblib.Parallel(return_as="generator", pre_dispatch="2*n_jobs", batch_size=1)(
            joblib.delayed(pid)(i) for i in range(40)
        )
        first = next(ongoing)
    with joblib.parallel_config(backend="multi", fabric="thread", n_jobs=3):
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(5)) == [
            0, 1, 4, 9, 16,
        ]  # fmt: skip
    assert [first, *ongoing] == [os.getpid()] * 40  # (threads of this process)


def naps_or_fails(x: int) -> int:
    if x == 0:
        raise ValueError("no data for 0")
    time.sleep(600 if x == 1 else 0.01)
    return x


@pytest.mark.parametrize("how", ["timeout", "failure"])
def test_a_timeout_or_a_failure_drops_the_calls_under_way(replacing_fabric: str, how: str) -> None:
    # joblib aborts everything: a call that runs for ten minutes must not hold the error back.
    error = multiprocessing.TimeoutError if how == "timeout" else ValueError  # (joblib's)
    first = 1 if how == "timeout" else 0
    with joblib.parallel_config(backend="multi", fabric=replacing_fabric, n_jobs=2):
        with pytest.raises(error):
            joblib.Parallel(timeout=1.0 if how == "timeout" else None)(
                joblib.delayed(naps_or_fails)(i) for i in range(first, 8)
            )
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(5)) == [
            0, 1, 4, 9, 16,
        ]  # fmt: skip


def test_the_backend_is_registered_whichever_is_imported_first() -> None:
    for imports in ("import joblib, multi", "import multi, joblib"):
        check = f"{imports}; from joblib.parallel import BACKENDS; print('multi' in BACKENDS)"
        result = subprocess.run(
            [sys.executable, "-c", check], capture_output=True, text=True, timeout=60
        )
        assert result.stdout.strip() == "True", result.stderr


def test_importing_multi_does_not_import_joblib() -> None:
    check = "import sys, multi; print('joblib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


LAUNCHED = """
import sys
from joblib import Parallel, delayed
import multi

def square(x):
    return x * x

print(Parallel(n_jobs=int(sys.argv[1]), backend="multi")(delayed(square)(i) for i in range(8)))
"""


@pytest.mark.parametrize("n_jobs", [-1, 2, 4])
def test_parallel_runs_on_the_launchers_slaves_whatever_its_n_jobs(
    n_jobs: int, tmp_path: Path
) -> None:
    # (the backend's own settings, verbosity 0 and n_jobs as max_workers, were refused as the
    # program's: "leave out verbosity=0 here")
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    result = subprocess.run(
        [sys.executable, "-m", "multi", "-m", "thread", "-n", "2", str(script), str(n_jobs)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str([i * i for i in range(8)])
