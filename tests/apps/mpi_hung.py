"""A slave that stops answering under ``mpiexec -n 3`` (it is SIGSTOPped mid-command):

    MULTI_MPI4PY_LIVENESS=2 mpiexec -n 3 python tests/apps/mpi_hung.py MARKER

After the liveness bound the master gives it up and its command runs on the other slave; the
program ends with status 0, and the job with it.
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
        for i in range(6):
            command = w.Stop_once(sys.argv[1], i) if i == 2 else w.Square(i)
            processor.add_to_queue(command, memo)
        processor.run_queue()
        print([value for _, value in memo.values], processor.last_run.retries)


if __name__ == "__main__":
    load_multiprocessor("mpi4py", Application_callback(Main()), -1, verbosity=0).run()
