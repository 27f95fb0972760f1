"""A slave dies in the command after one whose report is large, started alone (spawned):

    python tests/apps/mpi_death_after_report.py MARKER

One slave runs twelve commands; each returns 8 MiB (which the master reads from the slave's
own memory, MPI's large-message path), but the ninth, which kills its slave the first time it
runs (noted in MARKER). The slave holds it as a second batch while it runs the eighth; the
master, which takes a while over each result, comes to the eighth's report only after the
slave could have moved on to the ninth. The master prints how many results came back and how
many commands ran again.
"""

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multi import (
    Application_callback,
    Processor_box,
    Result_command,
    Slave_command,
    load_multiprocessor,
)
from tests import workloads as w


class Size(Result_command):
    """Carries ``data`` to the master, which keeps its size."""

    def __init__(self, processor, data):
        super().__init__(processor=processor, completed=True)
        self.data = data

    def run(self, processor, memo):
        time.sleep(0.05)  # (the master takes the next report once this is done)
        memo.values.append(len(self.data))


class Large(Slave_command):
    def run(self, processor, completed):
        time.sleep(0.02)  # (long enough for the master to send the next batch meanwhile)
        processor.return_object(Size(processor, bytes(8 << 20)))


class Main:
    def run(self):
        processor = Processor_box().processor
        memo = w.Record()
        for i in range(12):
            command = w.Die_once(sys.argv[1], signal.SIGKILL, i) if i == 8 else Large()
            processor.add_to_queue(command, memo)
        processor.run_queue()
        print(len(memo.values), processor.last_run.retries, flush=True)


if __name__ == "__main__":
    load_multiprocessor("mpi4py", Application_callback(Main()), 1, verbosity=0).run()
