"""Under ``mpiexec -n 3``: commands that start a program each and leave it running; the
program ends normally, and prints their pids."""

import subprocess
from typing import Any

from multi import Application_callback, Processor_box, Slave_command, load_multiprocessor
from tests import workloads as w


class Leaves_a_child(Slave_command):
    def run(self, processor: Any, completed: bool) -> None:
        child = subprocess.Popen(["sleep", "300"])
        processor.return_object(w.Value(processor, child.pid))


class Main:
    def run(self) -> None:
        processor = Processor_box().processor
        memo = w.Record()
        for _ in range(4):
            processor.add_to_queue(Leaves_a_child(), memo)
        processor.run_queue()
        print(*(pid for _, pid in memo.values))


if __name__ == "__main__":
    load_multiprocessor("mpi4py", Application_callback(Main()), -1, verbosity=0).run()
