"""One measured process: ``python -m benchmarks.child BACKEND JOBS`` (JOBS as JSON).

The harness starts one of these per cell (or per backend in quick mode), under ``mpiexec`` for
the MPI backends, so that no measurement inherits another's processes, caches or heap. It prints
one line, ``BENCH-RESULT <json>``, from rank 0 only; whatever else the tools print is ignored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.backends import BY_NAME, Runner
from benchmarks.workloads import BY_KEY

MARKER = "BENCH-RESULT "
SLAVES = 2


def job(key: str, params: dict[str, Any]) -> Callable[[Runner], dict[str, Any]]:
    """A measurement of workload ``key`` with ``params``, tagged with the workload's key."""
    measure = BY_KEY[key].measure
    if measure is None:
        raise ValueError(f"the workload {key!r} is not measured in a child process")

    def run(runner: Runner) -> dict[str, Any]:
        return {"workload": key, **measure(runner, params)}

    return run


def main(argv: list[str]) -> None:
    backend_name, jobs_json = argv
    backend = BY_NAME[backend_name]
    jobs = json.loads(jobs_json)
    runner = backend.make(BY_KEY[jobs[0]["workload"]].slaves(SLAVES))
    results = runner.run([job(item["workload"], item["params"]) for item in jobs])
    for item, result in zip(jobs, results, strict=False):
        result.setdefault("workload", item["workload"])
    if results:  # empty on an MPI rank that served as a worker
        print(MARKER + json.dumps(results), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
