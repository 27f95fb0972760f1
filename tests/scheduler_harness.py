"""Runs the scheduler alone on the fake transport, in virtual time, and records what it did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from multi import run as run_module
from multi import scheduler as scheduler_module
from multi.run import Run
from multi.scheduler import Scheduler
from multi.slave import Report
from tests.fake_transport import Clock, Fake_command, Fake_transport, Script


@dataclass
class Outcome:
    """What a simulated run did."""

    delivered: list[int] = field(default_factory=list)  # indices, in the order delivered
    results: dict[int, list[Any]] = field(default_factory=dict)
    raised: BaseException | None = None
    run: Run | None = None
    transport: Fake_transport | None = None
    scheduler: Scheduler | None = None
    seconds: float = 0.0  # virtual wall time of the run
    told: list[str] = field(default_factory=list)  # the engine's news, in order

    def notes(self) -> str:
        return "\n".join(getattr(self.raised, "__notes__", []))


def simulate(
    script: Script,
    slaves: int,
    *,
    retries: int = 2,
    timeout: float | None = None,
    on_failure: str = "continue",
    replaceable: bool = True,
    window: int = 2,
    setup: list[Any] | None = None,
    pinned: bool = False,
    payloads: list[bytes] | None = None,
    liveness: float | None = None,
    answered: bool = False,
    largest_message: int | None = None,
) -> Outcome:
    """Run the script's commands on ``slaves`` fake slaves; record and return what happened.
    With ``answered``, every slave has answered in an earlier run (its first round trip is
    timed)."""
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scheduler_module, "time", clock)
        patch.setattr(run_module, "time", clock)
        transport = Fake_transport(
            script,
            slaves,
            clock,
            replaceable=replaceable,
            window=window,
            pickled=bool(payloads),
            largest_message=largest_message,
        )
        outcome = Outcome(transport=transport)

        def deliver(run: Run, start: int, stop: int, got: Report | BaseException) -> list:
            errors = []
            for index in range(start, stop):
                outcome.delivered.append(index)
                if isinstance(got, BaseException):
                    errors.append((index, got))
                    continue
                position = run.positions[index]
                outcome.results[index] = got.results_of(position)
                failures = got.failures or {}
                if position in failures:
                    errors.append((index, failures[position]))
            return errors

        scheduler = Scheduler(
            transport,
            deliver,
            lambda: list(setup or []),
            retries=retries,
            timeout=timeout,
            on_failure=on_failure,
            liveness=liveness,
            tell=outcome.told.append,
        )
        if answered:
            scheduler._answered.update(transport.ranks)
        commands = [
            Fake_command(index, payloads[index] if payloads else b"")
            for index in range(len(script))
        ]
        ranks = transport.ranks
        if pinned:
            commands = [Fake_command(index) for index in range(len(ranks))]
        run = scheduler.new_run(commands, [None] * len(commands), ranks if pinned else None)
        transport.run = run
        outcome.run, outcome.scheduler = run, scheduler
        try:
            scheduler.run(run)
        except AssertionError:
            raise  # a promise the fake transport checks was broken
        except Exception as exc:
            outcome.raised = exc
        outcome.seconds = clock.now
    return outcome
