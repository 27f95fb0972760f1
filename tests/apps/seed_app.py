"""An application written against the seed's API alone, as an application of the original
framework would be: run it with a fabric name, a number of slaves and a verbosity.

    python seed_app.py FABRIC SLAVES VERBOSITY
"""

import math
import random
import sys

from multi import (
    Application_callback,
    Memo,
    Processor_box,
    Result_command,
    Slave_command,
    fetch_data,
    load_multiprocessor,
    send_data_to_slaves,
)


class Length_memo(Memo):
    def __init__(self, name, totals):
        self.name = name
        self.totals = totals


class Rotate_command(Slave_command):
    """Rotates the vector sent to the slaves at random N times and sums its lengths."""

    def __init__(self, seed, n):
        super().__init__()
        self.seed = seed
        self.n = n

    def run(self, processor, completed):
        if self.n < 0:
            raise ValueError("a negative number of rotations: %d" % self.n)
        vector = fetch_data("vector")
        generator = random.Random(self.seed)
        total = 0.0
        for _ in range(self.n):
            angle = generator.uniform(0.0, 2.0 * math.pi)
            x = vector[0] * math.cos(angle) - vector[1] * math.sin(angle)
            y = vector[0] * math.sin(angle) + vector[1] * math.cos(angle)
            total += math.sqrt(x * x + y * y + vector[2] * vector[2])
        print("seed %d: %d rotations" % (self.seed, self.n))
        processor.return_object(Length_result(processor, completed, total=total, n=self.n))


class Length_result(Result_command):
    def __init__(self, processor, completed, total, n):
        super().__init__(processor=processor, completed=completed)
        self.total = total
        self.n = n

    def run(self, processor, memo):
        memo.totals.append((self.total, self.n))
        print("%s: average length %.6f" % (memo.name, self.total / self.n))


class Main:
    def __init__(self):
        self.totals = []

    def run(self):
        processor = Processor_box().processor
        send_data_to_slaves("vector", [1.0, 2.0, 2.0])
        for seed in range(12):
            processor.add_to_queue(
                Rotate_command(seed, 200 + 10 * seed), Length_memo("memo %d" % seed, self.totals)
            )
        processor.run_queue()
        total = sum(t for t, _ in self.totals)
        count = sum(n for _, n in self.totals)
        print("Total number of rotations: %d" % count)
        print("Averaged vector length: %.6f" % (total / count))

        processor.add_to_queue(Rotate_command(99, -1), Length_memo("bad", self.totals))
        try:
            processor.run_queue()
        except ValueError as error:
            print("The slave said: %s" % error)
        if len(sys.argv) > 4:
            sys.exit(int(sys.argv[4]))


if __name__ == "__main__":
    fabric, slaves, verbosity = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    processor = load_multiprocessor(
        fabric, Application_callback(master=Main()), processor_size=slaves, verbosity=verbosity
    )
    processor.run()
