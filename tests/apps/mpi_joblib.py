"""Under ``mpiexec -n 3``: joblib ``Parallel`` calls on the "multi" backend, as the
documentation's example makes them, with other n_jobs too, then a second executor of the
program's own, which the ranks that served the first cannot serve: it is refused, saying
why."""

import joblib

import multi
from multi import MultiError


def square(x: int) -> int:
    if x < 0:
        raise ValueError("no square of a negative number here")
    return x * x


with joblib.parallel_config(backend="multi", fabric="mpi4py", n_jobs=2):
    try:  # (a failed call leaves the executor to the next: the ranks serve one)
        joblib.Parallel()(joblib.delayed(square)(x) for x in range(-1, 10))
    except ValueError as error:
        print("failed:", error)
    for call in ("first", "second"):
        print(call, sum(joblib.Parallel()(joblib.delayed(square)(x) for x in range(10))))
for n_jobs in (-1, 4):  # (the job's ranks, whatever is asked: another executor was refused)
    with joblib.parallel_config(backend="multi", fabric="mpi4py", n_jobs=n_jobs):
        print(n_jobs, sum(joblib.Parallel()(joblib.delayed(square)(x) for x in range(10))))
multi.joblib_backend.shutdown()
try:
    multi.Executor("mpi4py")
except MultiError as error:
    print("refused:", error)
