"""A master program for the launcher: ``multi [options] launched.py [status]``.

Its command, result and memo classes are defined here, in the script run as ``__main__``.
"""

import sys

from multi import Memo, Processor_box, Result_command, Slave_command


class Cube(Slave_command):
    def __init__(self, x):
        super().__init__()
        self.x = x

    def run(self, processor, completed):
        print(f"cubing {self.x}")
        processor.return_object(Cubed(processor, completed, self.x**3))


class Cubed(Result_command):
    def __init__(self, processor, completed, value):
        super().__init__(processor=processor, completed=completed)
        self.value = value

    def run(self, processor, memo):
        memo.values.append(self.value)


class Collect(Memo):
    def __init__(self):
        self.values = []


if __name__ == "__main__":
    processor = Processor_box().processor
    memo = Collect()
    for x in range(6):
        processor.add_to_queue(Cube(x), memo)
    processor.run_queue()
    print(f"{processor.get_intro_string()} cubes: {memo.values}")
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
