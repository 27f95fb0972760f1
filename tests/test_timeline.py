"""The timeline of runs (option ``timeline``) and the statistics per command class."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multi import CommandTimeoutError, load_multiprocessor
from multi.timeline import draw
from tests import workloads as w
from tests.conftest import run_master


def events(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["traceEvents"]  # type: ignore[no-any-return]


def test_a_timeline_has_a_span_per_command_on_its_slave_track(fabric: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"

    def body(processor: Any) -> int:
        memo = w.Record()
        for i in range(30):
            processor.add_to_queue(w.Square(i), memo)
        processor.add_to_queue(w.Sleep(0.01, 30), memo)
        processor.run_queue()
        return processor.processor_size()

    slaves = run_master(fabric, body, timeline=str(trace))
    found = events(trace)
    spans = [e for e in found if e.get("cat") == "command"]
    assert sorted(e["name"] for e in spans) == sorted(
        [f"Square {i}" for i in range(30)] + ["Sleep 30"]
    )
    assert all(e["ph"] == "X" and e["dur"] >= 0 and e["tid"] >= 1 for e in spans)
    tracks = {e["tid"]: e["args"]["name"] for e in found if e.get("name") == "thread_name"}
    assert {e["tid"] for e in spans} <= set(range(1, slaves + 1))
    assert tracks[0] == "master" and all(tracks[e["tid"]] == f"slave {e['tid']}" for e in spans)
    assert any(e.get("cat") == "deliver" for e in found)
    assert any(e.get("cat") == "dispatch" for e in found)


def test_each_run_adds_its_events_and_the_processors_of_a_program_share_the_file(
    tmp_path: Path,
) -> None:
    # (each run wrote the whole trace again, the cost growing with the square of the runs;
    # and a second processor of the program, one that joblib makes after a failure, say,
    # wrote over the first one's trace)
    trace = tmp_path / "trace.json"
    seen = []

    def body(processor: Any) -> None:
        for run in range(3):
            processor.add_to_queue(w.Square(run), w.Record())
            processor.run_queue()
            seen.append(sorted({e.get("args", {}).get("run") for e in events(trace)} - {None}))

    run_master("thread", body, timeline=str(trace))
    run_master("uni", body, timeline=str(trace))
    spans = [e for e in events(trace) if e.get("cat") == "command"]
    assert [(e["args"]["run"], e["name"]) for e in spans] == [
        (run + 1, "Square 0") for run in range(6)
    ]
    assert seen[:3] == [[1], [1, 2], [1, 2, 3]]  # (whole JSON after each run)
    assert seen[3:] == [[1, 2, 3, 4], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]]


def test_processors_of_two_threads_write_one_timeline_whole(tmp_path: Path) -> None:
    # (a nested Parallel's: events noted as another thread wrote were lost, and the file was
    # left invalid)
    trace = tmp_path / "trace.json"

    def work() -> None:
        processor = load_multiprocessor("thread", None, 2, verbosity=0, timeline=str(trace))  # type: ignore[arg-type]
        for _ in range(50):
            for i in range(5):
                processor.add_to_queue(w.Square(i), w.Record())
            processor.run_queue()
        processor.stop_slaves()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len([e for e in events(trace) if e.get("cat") == "command"]) == 2 * 50 * 5
    assert sorted(path.name for path in tmp_path.iterdir()) == ["trace.json"]


def test_a_timeline_that_cannot_be_written_is_news_and_the_slaves_stop(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # (the run raised the OSError, and as the program ended the slaves were left running)
    folder = tmp_path / "removed"
    folder.mkdir()

    def body(processor: Any) -> list[Any]:
        folder.rmdir()
        memo = w.Record()
        processor.add_to_queue(w.Square(2), memo)
        processor.run_queue()
        return [value for _, value in memo.values]

    assert run_master("multiprocessing", body, timeline=str(folder / "t.json")) == [4]
    told = capfd.readouterr().err
    assert told.count(f"multi: the timeline could not be written to {folder / 't.json'}") == 2


def test_a_program_that_runs_no_command_leaves_an_empty_trace(tmp_path: Path) -> None:
    # (an older program's trace stayed, as this program's)
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": [{"name": "older", "ph": "X", "ts": 0}]}))
    run_master("thread", lambda processor: processor.run_queue(), timeline=str(trace))
    assert [e["name"] for e in events(trace)] == ["process_name"]


def test_a_death_and_its_retry_are_instants_of_the_timeline(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"

    def body(processor: Any) -> None:
        memo = w.Record()
        processor.add_to_queue(w.Die_once(str(tmp_path / "died"), signal.SIGKILL), memo)
        processor.run_queue()

    run_master("multiprocessing", body, timeline=str(trace))
    found = events(trace)
    kinds = [e["cat"] for e in found if e.get("ph") == "i" and e["cat"] in ("death", "retry")]
    assert kinds == ["death", "retry"]
    assert [e["name"] for e in found if e.get("cat") == "command"] == ["Die_once 0"]


def test_a_command_past_its_timeout_is_a_failed_span_and_its_slave_a_stop_not_a_death(
    replacing_fabric: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The slave that the engine stopped was noted and drawn as a death.
    trace = tmp_path / "trace.json"

    def body(processor: Any) -> None:
        memo = w.Record()
        for i in range(5):
            processor.add_to_queue(w.Sleep(60.0 if i == 3 else 0.05, i), memo)
        with pytest.raises(CommandTimeoutError):
            processor.run_queue()

    run_master(replacing_fabric, body, verbosity=2, timeout=1.0, timeline=str(trace))
    found = events(trace)
    spans = {e["name"]: e for e in found if e.get("ph") == "X" and e["name"].startswith("Sleep")}
    assert sorted(spans) == [f"Sleep {i}" for i in range(5)]
    stopped = spans["Sleep 3"]
    assert stopped["cat"] == "failed" and stopped["dur"] >= 1e6
    instants = [(e["cat"], e["name"], e["tid"]) for e in found if e.get("ph") == "i"]
    rank = stopped["tid"]
    assert [i for i in instants if i[0] != "dispatch"] == [
        ("timeout", f"slave {rank} stopped by the timeout", rank)
    ]
    assert "run_queue: 5 commands in " in capfd.readouterr().err
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    drawn: list[Any] = []  # (the chart's figure, kept open to be read)
    close = plt.close
    monkeypatch.setattr(plt, "close", drawn.append)
    draw(trace, tmp_path / "trace.png")
    legend = drawn[0].axes[0].get_legend()
    close(drawn[0])
    assert [text.get_text() for text in legend.get_texts()] == ["a slave stopped by the timeout"]


def test_a_slave_stopped_for_its_silence_is_a_stop_not_a_death(
    replacing_fabric: str, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.json"

    def body(processor: Any) -> None:
        for i in range(4):
            command = w.Stop_once(str(tmp_path / "stopped"), i) if i == 2 else w.Square(i)
            processor.add_to_queue(command, w.Record())
        processor.run_queue()

    run_master(replacing_fabric, body, liveness=1.5, timeline=str(trace))
    instants = [(e["cat"], e["name"]) for e in events(trace) if e.get("ph") == "i"]
    kinds = [kind for kind, _ in instants if kind != "dispatch"]
    assert kinds == ["silent", "retry"]
    assert instants[[kind for kind, _ in instants].index("silent")][1].endswith(
        "stopped for its silence"
    )


def test_a_timeline_is_drawn_as_a_gantt_chart(tmp_path: Path) -> None:
    trace, png = tmp_path / "trace.json", tmp_path / "trace.png"

    def body(processor: Any) -> None:
        for i in range(8):
            processor.add_to_queue(w.Sleep(0.01, i))
        processor.run_queue()

    run_master("thread", body, timeline=str(trace))
    drawn = subprocess.run(
        [sys.executable, "-m", "multi.timeline", str(trace), "--png", str(png)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = subprocess.run(
        [sys.executable, "-m", "multi.timeline", str(tmp_path / "none.json"), "--png", str(png)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "cannot draw" in missing.stderr


def test_the_statistics_have_a_table_per_command_class(fabric: str) -> None:
    def body(processor: Any) -> str:
        memo = w.Record()
        for i in range(20):
            processor.add_to_queue(w.Square(i), memo)
        for i in range(3):
            processor.add_to_queue(w.Sleep(0.02, i), memo)
        processor.run_queue()
        return processor.last_run.class_table()

    table = run_master(fabric, body).splitlines()
    assert table[0].split() == ["class", "count", "mean", "95th", "percentile"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["Square"][1] == "20" and rows["Sleep"][1] == "3"
    assert seconds(*rows["Sleep"][2:4]) >= 0.02  # the mean of commands that sleep 20 ms
    assert seconds(*rows["Square"][2:4]) < seconds(*rows["Sleep"][2:4])


class Sorted(w.Square):
    """A command with an attribute of its own named ``kind``, as many an application has."""

    def __init__(self, index: int, kind: Any) -> None:
        super().__init__(index)
        self.kind = kind


@pytest.mark.parametrize("kind", [["a", "b"], 7, "fast"])
def test_an_attribute_kind_of_a_command_is_its_own(kind: Any) -> None:
    def body(processor: Any) -> str:
        for i in range(6):
            processor.add_to_queue(Sorted(i, kind))
        processor.run_queue()
        return processor.last_run.class_table()

    rows = [line.split()[:2] for line in run_master("uni", body).splitlines()[1:]]
    assert rows == [["Sorted", "6"]]


def test_calls_of_an_executor_are_counted_by_function_in_a_batch() -> None:
    from multi.executor import _Call
    from multi.statistics import Run_statistics

    calls = [_Call(i, abs if i % 3 else round, (i,), {}) for i in range(9)]
    statistics = Run_statistics()
    statistics.timed(calls, range(9), [0.001] * 9)  # one batch, one class, two functions
    assert statistics.counts == {"round": 3, "abs": 6}

    class Named:  # (its instances name themselves)
        def __init__(self, name: str) -> None:
            self.multi_kind = name

    statistics.timed([Named("a"), Named("b"), Named("a")], range(3), [0.001] * 3)
    assert statistics.counts == {"round": 3, "abs": 6, "a": 2, "b": 1}


def seconds(value: str, unit: str) -> float:
    return float(value) * {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[unit]


@pytest.mark.parametrize("text", ["none", ""])
def test_no_timeline_is_written_without_a_path(text: str, tmp_path: Path) -> None:
    def body(processor: Any) -> Any:
        processor.add_to_queue(w.Square(2))
        processor.run_queue()
        return processor.settings["timeline"]

    assert run_master("uni", body, timeline=text) is None


def test_a_timeline_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "locked").mkdir(mode=0o500)
    refused = {
        str(tmp_path): "is a directory: give the path of a file",
        str(tmp_path / "missing" / "t.json"): "is in no directory that exists",
    }
    if os.geteuid() != 0:  # (root writes anywhere)
        refused[str(tmp_path / "locked" / "t.json")] = "cannot be written"
    for path, reason in refused.items():
        with pytest.raises(ValueError, match=f"option 'timeline': .*{reason}"):
            load_multiprocessor("uni", None, timeline=path)  # type: ignore[arg-type]
    assert not (tmp_path / "missing").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]


@pytest.mark.parametrize("value", [True, 5])
def test_a_timeline_that_is_not_a_path_is_refused(
    value: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (it was read as the name of a file: "True", "5")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=r"option 'timeline' takes the path of a file .* not "):
        load_multiprocessor("uni", None, timeline=value)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    processor = load_multiprocessor("uni", None, timeline=tmp_path / "t.json")  # type: ignore
    assert processor.settings["timeline"] == str(tmp_path / "t.json")


def test_the_class_table_of_a_long_program_holds_a_bounded_sample() -> None:
    from multi.statistics import SAMPLE, Run_statistics

    class Fit:
        pass

    commands = [Fit() for _ in range(1000)]
    run, program = Run_statistics(), Run_statistics()
    run.timed(commands, range(1000), [0.001 * (i % 10 + 1) for i in range(1000)])
    for _ in range(3 * SAMPLE // 1000):
        program.add(run)
    assert program.counts["Fit"] == 3 * SAMPLE
    assert len(program.times["Fit"]) <= SAMPLE
    assert program.totals["Fit"] == pytest.approx(3 * SAMPLE * 0.0055)
    assert program.class_table().splitlines()[1].split()[:4] == [
        "Fit",
        str(3 * SAMPLE),
        "5.5",
        "ms",
    ]


@pytest.mark.parametrize("shape", ["runs of 1,000", "runs of one", "batches of one run"])
def test_the_sample_of_a_long_program_stands_for_early_and_late_commands_alike(
    shape: str,
) -> None:
    from multi.statistics import SAMPLE, Run_statistics

    class Fit:
        pass

    def run_of(seconds: float, size: int) -> Run_statistics:
        run = Run_statistics()
        run.timed([Fit()] * size, range(size), [seconds] * size)
        return run

    program = Run_statistics()
    size = {"runs of 1,000": 1000, "runs of one": 1, "batches of one run": 1000}[shape]
    runs = 5 * SAMPLE // size  # a tenth of them late, which take three times as long
    early, late = run_of(0.001, size), run_of(0.003, size)
    for number in range(runs):
        if shape == "batches of one run":
            seconds = 0.003 if number >= 0.9 * runs else 0.001
            program.timed([Fit()] * size, range(size), [seconds] * size)
        else:
            program.add(late if number >= 0.9 * runs else early)
    times = program.times["Fit"]
    assert program.counts["Fit"] == runs * size and len(times) <= SAMPLE
    assert abs(list(times).count(0.003) / len(times) - 0.1) < 0.01
    assert program.class_table().splitlines()[1].split()[-2:] == ["3.0", "ms"]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50_000), min_size=1, max_size=10),
    already=st.sampled_from([0, 1, 30_000, 70_000]),
)
def test_runs_counted_in_together_keep_the_times_they_keep_counted_in_one_by_one(
    sizes: list[int], already: int
) -> None:
    """The totals count many runs at once; a program already past its first sample, and runs
    large enough to keep a sample of their own, keep the same times in the same order."""
    from multi.statistics import Run_statistics

    class Fit:
        pass

    made = 0

    def run_of(size: int) -> Run_statistics:
        nonlocal made
        run = Run_statistics({1})
        seconds = [float(made + i) for i in range(size)]
        made += size
        if size == 1:  # a run of one command, as the scheduler notes its report
            run.slave(1).batches += 1
            run.ran(1, [Fit()], range(1), seconds)
        else:
            run.timed([Fit()] * size, range(size), seconds)
        return run

    before = run_of(already) if already else None
    runs = [run_of(size) for size in sizes]
    one_by_one, together = Run_statistics(), Run_statistics()
    if before is not None:
        one_by_one.add(before)
        together.add(before)
    for run in runs:
        one_by_one.add(run)
    together.add(*runs)
    expected, got = one_by_one.classes["Fit"], together.classes["Fit"]
    assert (got.count, got.stride, got.total) == (expected.count, expected.stride, expected.total)
    assert list(together.times["Fit"]) == list(one_by_one.times["Fit"])
    assert together.slaves[1].commands == [*sizes, already].count(1)  # (ran counts, timed not)


def test_the_times_of_runs_of_one_command_add_up_in_the_run_and_the_program() -> None:
    from multi.statistics import Run_statistics

    class Fit:
        pass

    run = Run_statistics({1})
    for taken in (0.001, 0.003):  # two reports of one command each
        run.ran(1, [Fit()], range(1), [taken])
    assert (run.counts, run.totals) == ({"Fit": 2}, {"Fit": pytest.approx(0.004)})
    assert list(run.times["Fit"]) == [0.001, 0.003]
    program = Run_statistics()
    program.add(run, run)
    assert list(program.times["Fit"]) == [0.001, 0.003, 0.001, 0.003]
    assert run.slaves[1].commands == 2


def test_the_run_times_a_program_reads_are_its_own_to_change() -> None:
    from multi.statistics import Run_statistics

    class Fit:
        pass

    statistics = Run_statistics()
    statistics.timed([Fit(), Fit()], range(2), [0.001, 0.002])
    statistics.times["Fit"][0] = 99.0
    statistics.times["Fit"].append(99.0)
    assert list(statistics.times["Fit"]) == [0.001, 0.002]
    assert statistics.class_table().splitlines()[1].split()[-2:] == ["2.0", "ms"]
