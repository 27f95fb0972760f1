"""A slave dies mid-command (SIGKILL or a segfault), under each launch of the mpi4py fabric:

    python tests/apps/mpi_death.py MARKER SIGNAL SLAVES                 # spawned, singleton
    mpiexec -n 1 python tests/apps/mpi_death.py MARKER SIGNAL SLAVES                  # spawned
    mpiexec [-disable-auto-cleanup] -n 3 python tests/apps/mpi_death.py MARKER SIGNAL -1

The seventh of twelve commands kills its slave the first time it runs (noted in MARKER, with
its pid). The master prints what every command returned and how many were retried; then, from
a second run with a command for each slave, the ranks that serve and whether the dead slave's
rank has a new one.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multi import Application_callback, Processor_box, load_multiprocessor
from tests import workloads as w


class Main:
    def run(self):
        processor = Processor_box().processor
        memo = w.Record()
        for i in range(12):
            command = w.Die_once(sys.argv[1], int(sys.argv[2]), index=i) if i == 6 else w.Square(i)
            processor.add_to_queue(command, memo)
        processor.run_queue()
        print([value for _, value in memo.values], processor.last_run.retries, flush=True)
        where = w.Record()
        for _ in range(processor.processor_size()):
            processor.add_to_queue(w.Where(0.5), where)
        processor.run_queue()
        ranks = {rank for _, (rank, _) in where.values}
        dead = int(Path(sys.argv[1]).read_text())
        every_rank = ranks == set(range(1, processor.processor_size() + 1))
        replaced = every_rank and dead not in {pid for _, (_, pid) in where.values}
        print("ranks serving:", len(ranks), "replaced:", replaced, flush=True)


if __name__ == "__main__":
    slaves = int(sys.argv[3])
    load_multiprocessor("mpi4py", Application_callback(Main()), slaves, verbosity=0).run()
