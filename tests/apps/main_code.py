"""A program without an ``if __name__ == "__main__":`` guard: its classes and its whole program
live at the top level of the main module, as in a notebook's cells.

    python tests/apps/main_code.py FABRIC [STATUS]
    python - FABRIC [STATUS] < tests/apps/main_code.py
    multi -m FABRIC -n 2 tests/apps/main_code.py FABRIC [STATUS]

Every process that runs this top level notes its pid in the file named by $MAIN_CODE_RAN: the
master alone should. A slave that ran it would start a processor of its own.
"""

import os
import sys
import threading

from multi import (
    Application_callback,
    Memo,
    Result_command,
    Slave_command,
    UnpicklableError,
    load_multiprocessor,
)

print("the top level ran", flush=True)
with open(os.environ["MAIN_CODE_RAN"], "a") as ran:
    ran.write(f"{os.getpid()}\n")

LOCK = threading.Lock()
#: Filled by the results on the master: their code must see the master's globals.
SEEN_ON_THE_MASTER = []
#: Read on the slaves by a function that the commands call: a new value must reach them.
FACTOR = 1


def scaled(value):
    return FACTOR * value


class Point:
    """A plain class of the main module, which results carry."""

    def __init__(self, x):
        self.x = x


class Odd_error(Exception):
    """An exception class of the main module, raised on the slaves."""


class Cube(Slave_command):
    def __init__(self, x):
        super().__init__()
        self.x = x

    def run(self, processor, completed):
        if self.x == 5:
            raise Odd_error("5 is not wanted")
        processor.return_object(Cubed(processor, completed, Point(self.x**3)))


class Cubed(Result_command):
    def __init__(self, processor, completed, point):
        super().__init__(processor=processor, completed=completed)
        self.point = point

    def run(self, processor, memo):
        memo.points.append(self.point)
        memo.own_classes.append(type(self) is Cubed and isinstance(self.point, Point))
        SEEN_ON_THE_MASTER.append(self.point.x)


class Square(Slave_command):
    """A command whose code, and its result's, uses no global that changes."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def run(self, processor, completed):
        processor.return_object(Squared(processor, completed, self.x * self.x))


class Squared(Result_command):
    def __init__(self, processor, completed, value):
        super().__init__(processor=processor, completed=completed)
        self.value = value

    def run(self, processor, memo):
        memo.points.append(self.value)


class Scale(Slave_command):
    """Its own code never changes; the function it calls reads a global that does."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def run(self, processor, completed):
        processor.return_object(Squared(processor, completed, scaled(self.x)))


#: Read on the slaves through a cycle of functions: the master appends to it between runs.
OFFSETS = [1]


def hops(n):
    return hop(n - 1) if n else OFFSETS[-1]


def hop(n):
    return hops(n)


class Hop(Slave_command):
    """Its code never changes; a list that it reads and an attribute of its class do."""

    step = 1

    def run(self, processor, completed):
        processor.return_object(Squared(processor, completed, hops(2) * Hop.step))


class Collect(Memo):
    def __init__(self):
        self.points = []
        self.own_classes = []


class Uses_the_lock(Slave_command):
    """Its code uses a global of the main module that cannot travel."""

    def run(self, processor, completed):
        with LOCK:
            pass


processor = load_multiprocessor(
    sys.argv[1], Application_callback(master=None), processor_size=2, verbosity=0
)
memo = Collect()
for x in range(6):
    processor.add_to_queue(Cube(x), memo)
try:
    processor.run_queue()
except Odd_error as error:
    print(f"Odd_error from a slave: {type(error) is Odd_error}: {error}")
print(f"cubes: {[point.x for point in memo.points]}, own classes: {all(memo.own_classes)}")
print(f"the master's globals: {SEEN_ON_THE_MASTER}")


def sent(run):
    return sum(slave.bytes_sent for slave in run.slaves.values())


sizes = []
for _ in range(2):
    for x in range(6):
        processor.add_to_queue(Square(x), Collect())
    processor.run_queue()
    sizes.append(sent(processor.last_run))
# The script's classes went to each slave with the first run; the second names them.
first, second = sizes
print(f"the second run sent a third of the first's bytes or less: {3 * second <= first}")
scales = Collect()
for factor in (1, 2):
    FACTOR = factor
    processor.add_to_queue(Scale(3), scales)
    processor.run_queue()
print(f"a global changed on the master reaches the slaves: {scales.points == [3, 6]}")
hopped = Collect()
for change in ("none", "a list", "a class attribute"):
    if change == "a list":
        OFFSETS.append(2)
    elif change == "a class attribute":
        Hop.step = 3
    processor.add_to_queue(Hop(), hopped)
    processor.run_queue()
print(f"code changed in place reaches the slaves: {hopped.points == [1, 2, 6]}")

processor.add_to_queue(Uses_the_lock())
try:
    processor.run_queue()
except UnpicklableError as error:
    print(f"UnpicklableError: {error}")
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
