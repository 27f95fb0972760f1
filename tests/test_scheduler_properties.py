"""Properties of the scheduler over random shapes of work (hypothesis), on the fake transport:
1 to 64 slaves, 0 to 500 commands of random lengths, failures, deaths, replacements, hangs.

Whatever the shape: every command is delivered exactly once and in queue order or counted as
not run (only when the run stopped); a command's outcome is what the script made it; the first
failure in queue order is the one raised, with the others accounted for; no slave holds
nothing while a command waits to be sent (checked by the fake transport at every wait).
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multi.errors import BrokenProcessorError, CommandTimeoutError, SlaveDiedError
from multi.scheduler import ON_FAILURE
from tests.fake_transport import Script
from tests.scheduler_harness import simulate

#: Cases per property; MULTI_HYPOTHESIS_EXAMPLES=5000 for a longer hunt.
EXAMPLES = int(os.environ.get("MULTI_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
LENGTHS = {
    "tiny": st.floats(1e-6, 1e-3),
    "long": st.floats(0.05, 2.0),
    "mixed": st.one_of(st.floats(1e-6, 1e-3), st.floats(0.05, 2.0)),
}


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    slaves = draw(st.integers(1, 64))
    count = draw(st.integers(0, 500))
    kind = draw(st.sampled_from(sorted(LENGTHS)))
    lengths = draw(st.lists(LENGTHS[kind], min_size=count, max_size=count))
    indices = st.integers(0, max(0, count - 1))
    fails = draw(st.sets(indices, max_size=count // 3)) if count else set()
    deaths = draw(st.dictionaries(indices, st.integers(1, 4), max_size=6)) if count else {}
    hangs = draw(st.sets(indices, max_size=2)) if count and draw(st.booleans()) else set()
    frozen = draw(st.sets(indices, max_size=2)) - hangs if count and draw(st.booleans()) else set()
    kills = draw(st.sets(indices, max_size=2)) - hangs - frozen if count else set()
    timeout = max(lengths, default=1.0) * 2 + 1.0 if hangs else None
    liveness = None
    if frozen:  # strictly before or after the timeout, never tied with it
        liveness = timeout * draw(st.sampled_from([0.5, 2.0])) if timeout else 5.0
    return {
        "script": Script(
            lengths, fails=fails, deaths=deaths, hangs=hangs, frozen=frozen, kills_unpickling=kills
        ),
        "liveness": liveness,
        "slaves": slaves,
        "retries": draw(st.integers(0, 3)),
        "replaceable": draw(st.booleans()) or bool(hangs),
        "on_failure": draw(st.sampled_from(ON_FAILURE)),
        "timeout": timeout,
    }


def expected_error(scenario: dict, index: int) -> type[BaseException] | None:
    """The failure a command must end in, or None (a slave may also be lost for good)."""
    script = scenario["script"]
    if index in script.kills_unpickling:  # it never runs: its slave dies as it unpickles it
        return SlaveDiedError
    if index in script.hangs:
        return CommandTimeoutError
    if index in script.frozen:  # whichever bound comes first: its timeout, or liveness
        timeout = scenario["timeout"]
        if timeout is not None and timeout < scenario["liveness"]:
            return CommandTimeoutError
        return SlaveDiedError
    if script.deaths.get(index, 0) > scenario["retries"]:
        return SlaveDiedError
    if index in script.fails:
        return ValueError
    return None


@SETTINGS
@given(scenarios())
def test_every_command_is_delivered_once_in_order_or_counted_as_not_run(scenario: dict) -> None:
    outcome = simulate(**scenario)
    count = len(scenario["script"])
    run = outcome.run
    assert outcome.delivered == sorted(set(outcome.delivered))  # once each, in queue order
    assert sorted(outcome.delivered + run.unrun) == list(range(count))  # nothing lost
    if run.unrun:
        assert run.stopped is not None and scenario["on_failure"] != "run-all"
    broken = outcome.scheduler.broken is not None
    failed = dict(run.failures)
    for index in outcome.delivered:
        wanted = expected_error(scenario, index)
        if isinstance(failed.get(index), BrokenProcessorError | SlaveDiedError) and broken:
            continue  # every slave was lost: what waited could not run
        if wanted is None:
            assert index not in failed, failed.get(index)
            assert outcome.results[index] == [("result", index)]
        else:
            assert isinstance(failed[index], wanted), (index, failed[index])


@SETTINGS
@given(scenarios())
def test_the_first_failure_is_raised_with_the_others_accounted_for(scenario: dict) -> None:
    outcome = simulate(**scenario)
    failures = outcome.run.failures
    if not failures:
        assert outcome.raised is None
        return
    assert outcome.raised is failures[0][1]
    assert [index for index, _ in failures] == sorted(index for index, _ in failures)
    if len(failures) > 1:
        assert f"{len(failures) - 1} more failure(s) in this run" in outcome.notes()
    if outcome.run.unrun:
        assert f"{len(outcome.run.unrun)} command(s) were not run" in outcome.notes()


@SETTINGS
@given(
    st.integers(1, 500),
    st.integers(1, 64),
    st.floats(0.05, 2.0),
)
def test_equal_long_commands_keep_every_slave_busy(count: int, slaves: int, length: float) -> None:
    outcome = simulate(Script([length] * count), slaves)
    ideal = math.ceil(count / slaves) * length
    assert ideal / outcome.seconds >= 0.95


@SETTINGS
@given(st.integers(1, 64), st.lists(st.floats(0.05, 2.0), min_size=1, max_size=300))
def test_unequal_long_commands_meet_the_bound_of_list_scheduling(
    slaves: int, lengths: list[float]
) -> None:
    outcome = simulate(Script(lengths), slaves)
    rounds = math.ceil(len(lengths) / slaves) + 2
    assert outcome.seconds <= sum(lengths) / slaves + max(lengths) + rounds * 1e-3
