"""Estimate pi by throwing darts at a square, in batches spread over every core.

A small master program in the seed's style: a command per batch of darts, a result per
command, and a memo on the master that adds the hits up.

    python examples/pi.py [--fabric NAME] [--slaves N] [--batches B] [--darts D]
"""

from __future__ import annotations

import argparse
import math
import random

from multi import (
    Application_callback,
    Memo,
    Processor_box,
    Result_command,
    Slave_command,
    load_multiprocessor,
)


class Throw_darts(Slave_command):
    """Throw darts at the unit square and count those inside the quarter circle."""

    def __init__(self, seed: int, darts: int) -> None:
        super().__init__()
        self.seed = seed
        self.darts = darts

    def run(self, processor, completed):
        generator = random.Random(self.seed)
        hits = 0
        for _ in range(self.darts):
            x, y = generator.random(), generator.random()
            hits += x * x + y * y <= 1.0
        processor.return_object(Hits(processor, completed, hits=hits, darts=self.darts))


class Hits(Result_command):
    def __init__(self, processor, completed, hits, darts):
        super().__init__(processor=processor, completed=completed)
        self.hits = hits
        self.darts = darts

    def run(self, processor, memo):
        memo.hits += self.hits
        memo.darts += self.darts


class Tally(Memo):
    def __init__(self) -> None:
        self.hits = 0
        self.darts = 0


class Estimate_pi:
    def __init__(self, batches: int, darts: int) -> None:
        self.batches = batches
        self.darts = darts

    def run(self) -> None:
        processor = Processor_box().processor
        print(processor.get_intro_string())
        tally = Tally()
        for seed in range(self.batches):
            processor.add_to_queue(Throw_darts(seed, self.darts), tally)
        processor.run_queue()
        estimate = 4.0 * tally.hits / tally.darts
        error = 4.0 * math.sqrt(tally.hits * (tally.darts - tally.hits) / tally.darts) / tally.darts
        print(f"{tally.darts} darts: pi = {estimate:.6f} +/- {error:.6f} (true {math.pi:.6f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fabric", default="thread", help="fabric to run on (default: thread)")
    parser.add_argument("--slaves", type=int, default=-1, help="slaves (default: every core)")
    parser.add_argument("--batches", type=int, default=64, help="commands to queue")
    parser.add_argument("--darts", type=int, default=200_000, help="darts per command")
    args = parser.parse_args()
    for name in ("batches", "darts"):  # (none would divide by zero, fewer than none by less)
        if getattr(args, name) < 1:
            parser.error(f"argument --{name}: must be a whole number >= 1")
    if args.slaves < 1 and args.slaves != -1:
        parser.error("argument --slaves: must be a whole number >= 1, or -1 for every core")
    master = Estimate_pi(args.batches, args.darts)
    callback = Application_callback(master=master)
    load_multiprocessor(args.fabric, callback, processor_size=args.slaves, verbosity=1).run()


if __name__ == "__main__":
    main()
