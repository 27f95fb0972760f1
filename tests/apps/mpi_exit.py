"""A master that ends from a result while another slave is busy, under ``mpiexec -n 3``:

    mpiexec -n 3 python tests/apps/mpi_exit.py STATUS python|deaf HOW

The busy slave sleeps for ten minutes, interruptible or deaf to interrupts (as compiled code
that never returns to Python is), which only the end of the job stops. The result ends the
program with ``processor.exit(STATUS)`` or ``sys.exit(STATUS)`` (HOW), which must end it at
once with STATUS, or is interrupted (Ctrl-C while results run), which must end it at once with
a failure.
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

STATUS = int(sys.argv[1])
WHERE = sys.argv[2]
HOW = sys.argv[3]


class Nap(Slave_command):
    def run(self, processor, completed):
        if WHERE == "deaf":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        time.sleep(600)


class Quits(Result_command):
    def run(self, processor, memo):
        if HOW == "sys.exit":
            sys.exit(STATUS)
        if HOW == "interrupt":
            raise KeyboardInterrupt
        processor.exit(STATUS)


class Quick(Slave_command):
    def run(self, processor, completed):
        processor.return_object(Quits(processor, completed))


class Main:
    def run(self):
        processor = Processor_box().processor
        processor.add_to_queue(Quick())
        processor.add_to_queue(Nap())
        processor.run_queue()
        print("not reached")


if __name__ == "__main__":
    load_multiprocessor("mpi4py", Application_callback(Main()), -1, verbosity=0).run()
