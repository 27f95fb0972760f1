"""The seed's API: every name importable from ``multi``, with the original signatures."""

from __future__ import annotations

import inspect
import pickle
import sys
from typing import Any

import pytest

import multi
from multi import (
    Application_callback,
    Batched_result_command,
    Capturing_exception,
    Immediate_result_queue,
    Memo,
    Processor,
    Processor_box,
    Redirect_text,
    Result_command,
    Result_exception,
    Result_string,
    Slave_storage_command,
    Threaded_result_queue,
    Verbosity,
    load_multiprocessor,
    raise_unimplemented,
    wire,
)
from multi.slave import Report, report_from_wire, seal
from tests import workloads as w
from tests.conftest import run_master

SEED_NAMES = [
    "load_multiprocessor",
    "Application_callback",
    "Processor_box",
    "Slave_command",
    "Result_command",
    "Memo",
    "Processor",
    "Data_store",
    "fetch_data",
    "fetch_data_store",
    "send_data_to_slaves",
    "Null_result_command",
    "Batched_result_command",
    "Result_exception",
    "Result_string",
    "Exit_command",
    "Slave_storage_command",
    "Capturing_exception",
    "Verbosity",
    "Redirect_text",
    "Threaded_result_queue",
    "Immediate_result_queue",
    "raise_unimplemented",
]

PROCESSOR_METHODS = [
    "run",
    "add_to_queue",
    "run_queue",
    "return_object",
    "processor_size",
    "rank",
    "on_master",
    "on_slave",
    "is_queued",
    "assert_on_master",
    "get_intro_string",
    "get_name",
    "abort",
    "exit",
    "run_command_globally",
    "send_data_to_slaves",
    "fetch_data",
    "load_multiprocessor",
]


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_every_seed_name_is_importable() -> None:
    missing = [name for name in SEED_NAMES if not hasattr(multi, name)]
    assert missing == []
    assert set(SEED_NAMES) <= set(multi.__all__)


def test_the_processor_has_every_seed_method() -> None:
    assert [m for m in PROCESSOR_METHODS if not callable(getattr(Processor, m, None))] == []


def test_the_original_signatures_are_kept() -> None:
    assert parameters(load_multiprocessor)[:4] == [
        "processor_name",
        "callback",
        "processor_size",
        "verbosity",
    ]
    assert parameters(Processor.load_multiprocessor)[:4] == parameters(load_multiprocessor)[:4]
    assert parameters(Result_command.__init__)[1:4] == ["processor", "completed", "memo_id"]
    assert parameters(Processor.add_to_queue)[1:] == ["command", "memo"]
    assert parameters(Processor.exit)[1:] == ["status"]
    assert parameters(Application_callback.__init__)[1:] == ["master"]


def test_a_usual_result_holds_its_rank_alone_and_travels_so() -> None:
    processor = load_multiprocessor("uni", None)  # type: ignore[arg-type]
    usual = Result_command(processor)
    assert (usual.completed, usual.memo_id, vars(usual)) == (True, None, {"rank": 0})
    other = Result_command(processor, completed=False, memo_id=7)
    assert vars(other) == {"completed": False, "memo_id": 7, "rank": 0}
    assert vars(pickle.loads(pickle.dumps(usual))) == {"rank": 0}


def test_a_result_holding_only_its_rank_travels_in_a_report_without_it() -> None:
    processor = load_multiprocessor("uni", None)  # type: ignore[arg-type]
    bare, carrying = Result_command(processor), w.Value(processor, "data")
    bare.rank = carrying.rank = 3  # (as made on slave 3)
    for result, travels in ((bare, {}), (carrying, {"rank": 3, "value": "data"})):
        frames = seal(Report(3, [result], 1, [0.0]), [None])
        assert vars(wire.loads(frames)[1][0]) == travels
        arrived = report_from_wire(wire.loads(frames)).results[0]
        assert (type(arrived), vars(arrived)) == (type(result), {**travels, "rank": 3})
    inner = Result_command(processor)
    inner.rank = 3
    inside = w.Value(processor, inner)  # (not returned itself: it keeps its rank)
    frames = seal(Report(3, [inside], 1, [0.0]), [None])
    assert vars(wire.loads(frames)[1][0].value) == {"rank": 3}


def test_load_multiprocessor_fills_the_processor_box() -> None:
    processor = load_multiprocessor("uni", Application_callback(None), processor_size=-1)
    box = Processor_box()
    assert box is Processor_box()
    assert (box.processor, box.processor_name, box.class_name) == (
        processor,
        "uni_processor",
        "Uni_processor",
    )
    assert processor.rank() == 0 and processor.on_master() and not processor.on_slave()
    assert processor.get_intro_string() == "Uni-processor."


class _Sees_the_box:
    """An application that notes which processor the box holds as it runs, and after an
    application run inside it, if given one."""

    def __init__(self, seen: list[Any], inside: Any = None) -> None:
        self.seen, self.inside = seen, inside

    def run(self) -> None:
        self.seen.append(Processor_box().processor)
        if self.inside is not None:
            inner = load_multiprocessor("thread", Application_callback(self.inside), 1)
            inner.run()
            self.seen.append(inner)
            self.seen.append(Processor_box().processor)


def test_the_box_holds_the_processor_whose_application_runs() -> None:
    # (it held the last one made: a's application got b, and b's slaves ran a's commands; and
    # after a processor ran inside another's application, the box held the finished one)
    seen: list[Any] = []
    a = load_multiprocessor("uni", Application_callback(_Sees_the_box(seen)), 1, verbosity=0)
    b = load_multiprocessor("thread", Application_callback(_Sees_the_box(seen)), 1, verbosity=0)
    a.run()
    b.run()
    assert seen == [a, b]
    seen.clear()
    outer_app = _Sees_the_box(seen, inside=_Sees_the_box(seen))
    outer = load_multiprocessor("uni", Application_callback(outer_app), 1, verbosity=0)
    outer.run()
    inner = seen[2]
    assert seen == [outer, inner, inner, outer]
    seen.clear()
    callback = Application_callback(None)
    callback.init_master = lambda processor: seen.append(1 / 0)  # type: ignore[assignment]
    callback.handle_exception = lambda processor, error: seen.append(Processor_box().processor)  # type: ignore[assignment]
    failing = load_multiprocessor("uni", callback, 1, verbosity=0)
    load_multiprocessor("uni", Application_callback(None), 1)  # (the box holds this one)
    failing.run()
    assert seen[-1] is failing  # (as its handle_exception runs)


def test_an_application_not_wrapped_in_a_callback_is_refused_saying_how() -> None:
    # (it ran, and failed with "'Main' object has no attribute 'init_master'", twice)
    class Main:
        def run(self) -> None:
            pass

    wrap = r"Application_callback\(application\), \.\.\.\), not a Main"
    with pytest.raises(TypeError, match=wrap):
        load_multiprocessor("uni", Main(), 1)  # type: ignore[arg-type]


def test_fabric_names_are_not_case_sensitive() -> None:
    assert type(load_multiprocessor("Thread", None, processor_size=1)).__name__ == (  # type: ignore[arg-type]
        "Thread_processor"
    )


def test_verbosity_is_shared_and_checked() -> None:
    Verbosity().set(2)
    assert Verbosity().level() == 2
    Verbosity().set(None)
    assert Verbosity().level() == 2
    with pytest.raises(ValueError, match="verbosity"):
        Verbosity().set(-1)


def test_memo_ids_are_never_reused() -> None:
    ids = {Memo().memo_id() for _ in range(1000)}
    assert len(ids) == 1000


def test_an_abstract_method_names_itself() -> None:
    def frobnicate() -> None: ...

    with pytest.raises(NotImplementedError, match="frobnicate"):
        raise_unimplemented(frobnicate)


def test_capturing_exception_keeps_the_text_and_pickles() -> None:
    try:
        raise ZeroDivisionError("division by zero here")
    except ZeroDivisionError:
        error = Capturing_exception(sys.exc_info(), rank=3, name="node-pid1")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.rank, copy.name, copy.exception_name) == (3, "node-pid1", "ZeroDivisionError")
    assert "division by zero here" in str(copy)
    assert any("raise ZeroDivisionError" in line for line in copy.traceback)


def test_redirect_text_prefixes_every_line() -> None:
    data: list[list[Any]] = []
    out = Redirect_text(data, token="2  | ", stream=0)
    out.write("first line\npartial-")
    out.write("rest\n\nlast")
    assert (
        "".join(text for text, _ in data) == "2  | first line\n2  | partial-rest\n2  | \n2  | last"
    )
    assert {stream for _, stream in data} == {0}


def test_batched_results_replay_their_output_then_run(capsys: pytest.CaptureFixture[str]) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.memo_map[memo.memo_id()] = memo
        results = [w.Value(processor, i, memo_id=memo.memo_id()) for i in range(3)]
        batch = Batched_result_command(processor, results, io_data=[["said\n", 0], ["err\n", 1]])
        batch.run(processor, None)
        return [v for _, v in memo.values]

    assert run_master("uni", body) == [0, 1, 2]
    assert capsys.readouterr() == ("said\n", "err\n")


def test_result_string_and_exception(capsys: pytest.CaptureFixture[str]) -> None:
    def body(processor: Any) -> None:
        Result_string(processor, "text from a slave\n", True).run(processor, None)
        with pytest.raises(OSError, match="disk"):
            Result_exception(processor, OSError("disk")).run(processor, None)

    run_master("uni", body)
    assert capsys.readouterr().out == "text from a slave\n"


@pytest.mark.parametrize("kind", [Immediate_result_queue, Threaded_result_queue])
def test_result_queues_run_every_result(kind: type) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.memo_map[memo.memo_id()] = memo
        queue = kind(processor)
        for i in range(5):
            queue.put(w.Value(processor, i, memo_id=memo.memo_id()))
        queue.run_all()
        failing = kind(processor)
        with pytest.raises(KeyError):
            failing.put(w.Raising_result(processor, True))
            failing.run_all()
        return [v for _, v in memo.values]

    assert run_master("uni", body) == list(range(5))


def test_storage_commands_carry_named_values() -> None:
    command = Slave_storage_command()
    command.add("a", 1)
    command.add("b", [2])
    assert (command.names, command.values) == (["a", "b"], [1, [2]])
    command.clear()
    assert (command.names, command.values) == ([], [])
    with pytest.raises(ValueError, match="a string that does not start with '__'"):
        command.add("__dict__", {})  # it would wipe the store of the slave that runs it
    assert (command.names, command.values) == ([], [])
    command.add("spin-1", 42)  # (as the original stored it: a name of the store, not code's)
    assert command.names == ["spin-1"]


def test_the_time_delta_is_hours_minutes_seconds() -> None:
    assert Processor.get_time_delta(100.0, 100.0) == "0:00:00"
    assert Processor.get_time_delta(0.0, 3723.4) == "1:02:03"


def test_run_without_a_callback_says_what_to_do() -> None:
    processor = load_multiprocessor("uni", None, processor_size=-1)  # type: ignore[arg-type]
    with pytest.raises(multi.MultiError, match="Application_callback"):
        processor.run()


def test_an_unknown_option_lists_the_fabric_options() -> None:
    with pytest.raises(TypeError, match=r"no option 'colour'.*pickle_check, progress, retries"):
        load_multiprocessor("uni", None, processor_size=-1, colour="blue")  # type: ignore[arg-type]


def test_an_option_read_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTI_THREAD_RETRIES", "many")
    with pytest.raises(ValueError, match="MULTI_THREAD_RETRIES"):
        load_multiprocessor("thread", None, processor_size=1)  # type: ignore[arg-type]


def test_a_bar_made_late_counts_what_was_delivered_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tqdm")
    from types import SimpleNamespace

    from multi import progress

    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(progress, "DELAY_SECONDS", 10.0)
    bar = progress.for_run("yes", 20)
    bar.advance(3, redraw=False)
    assert bar.bar is None  # (not due yet)
    now[0] = 10.0
    bar.advance(2, redraw=True)
    assert bar.bar is not None and bar.bar.n == 5 and bar.bar.total == 20
    bar.advance(4, redraw=False)
    assert bar.bar.n == 9
    bar.close()
    assert bar.bar is None


def test_a_bar_wanted_without_tqdm_is_a_warning_that_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import warnings

    from multi import progress
    from multi.errors import MultiWarning

    monkeypatch.setitem(sys.modules, "tqdm", None)  # (its import fails)
    with pytest.warns(MultiWarning, match=r"pip install 'multi-fabric\[progress\]'"):
        assert progress.for_run("yes", 5) is progress.OFF
    monkeypatch.setattr(progress, "_on_terminal", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert progress.for_run("auto", 5) is progress.OFF  # (asked for nothing: no warning)


def test_a_warning_points_at_the_programs_own_line() -> None:
    """It named a line of this package (``uni_processor.py``, ``executor.py``), which the
    program reaches by several paths."""
    from multi import Executor
    from multi.errors import MultiWarning

    with pytest.warns(MultiWarning, match="not on 2 slaves") as caught:
        load_multiprocessor("uni", None, processor_size=2)  # type: ignore[arg-type]
    with pytest.warns(MultiWarning, match="not on 3 slaves") as more:
        Executor("uni", max_workers=3).shutdown()
    assert [warning.filename for warning in [*caught, *more]] == [__file__, __file__]
