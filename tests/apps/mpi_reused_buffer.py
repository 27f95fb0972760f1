"""Each command returns the buffer its slave fills anew for every command, started alone:

    python tests/apps/mpi_reused_buffer.py

One slave runs twelve commands; each fills a 32 MiB array of its own process (made once) with
its index, and returns it. The array travels as it lies in memory (out of band), and the
master, which takes a while over each result, comes to a report only after the slave could
have moved on to the next command. The master prints the results that hold another
command's index.
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multi import (
    Application_callback,
    Processor_box,
    Result_command,
    Slave_command,
    load_multiprocessor,
)
from tests import workloads as w

#: The slave's buffer, filled anew by every command.
_buffer = None


class Seen(Result_command):
    """Carries what command ``index`` returned to the master, which keeps what it holds."""

    def __init__(self, processor, index, array):
        super().__init__(processor=processor, completed=True)
        self.index = index
        self.array = array

    def run(self, processor, memo):
        time.sleep(0.05)  # (the master takes the next report once this is done)
        memo.values.append((self.index, int(self.array[0]), int(self.array[-1])))


class Fill(Slave_command):
    def __init__(self, index):
        super().__init__()
        self.index = index

    def run(self, processor, completed):
        global _buffer
        if _buffer is None:
            _buffer = np.zeros(4 << 20, dtype=np.int64)
        time.sleep(0.02)  # (long enough for the master to send the next batch meanwhile)
        _buffer[:] = self.index
        processor.return_object(Seen(processor, self.index, _buffer))


class Main:
    def run(self):
        processor = Processor_box().processor
        memo = w.Record()
        for index in range(12):
            processor.add_to_queue(Fill(index), memo)
        processor.run_queue()
        print([seen for seen in memo.values if seen[1:] != (seen[0], seen[0])], flush=True)


if __name__ == "__main__":
    load_multiprocessor("mpi4py", Application_callback(Main()), 1, verbosity=0).run()
