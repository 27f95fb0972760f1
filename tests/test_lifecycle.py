"""The program around the processor: exit status, shutdown, Ctrl-C, the runtime line, and an
application written against the seed's API alone, run on every fabric."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import FABRICS, interrupt, slaves_for, survivors

APP = Path(__file__).parent / "apps" / "seed_app.py"
ROOT = Path(__file__).parent.parent
SECONDS = 30


def run_script(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=SECONDS, cwd=ROOT, check=False
    )


def seed_app(fabric: str, verbosity: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script(str(APP), fabric, str(slaves_for(fabric)), str(verbosity), *extra)


def test_the_seed_application_gives_the_same_output_on_every_fabric() -> None:
    outputs = {fabric: seed_app(fabric, 0) for fabric in FABRICS}
    reference = outputs["uni"]
    assert reference.returncode == 0, reference.stderr
    assert "Averaged vector length: 3.000000" in reference.stdout
    assert "The slave said: a negative number of rotations: -1" in reference.stdout
    for fabric, result in outputs.items():
        got = (result.returncode, result.stdout, result.stderr)
        assert got == (0, reference.stdout, ""), fabric


@pytest.mark.parametrize("status", [0, 3])
def test_sys_exit_on_the_master_is_the_program_status(fabric: str, status: int) -> None:
    result = seed_app(fabric, 1, str(status))
    assert result.returncode == status, result.stderr
    assert "Overall runtime: 0:00:0" in result.stdout


def test_the_runtime_line_is_silent_at_verbosity_zero(fabric: str) -> None:
    result = seed_app(fabric, 0)
    assert "Overall runtime" not in result.stdout


UNHANDLED = textwrap.dedent(
    """
    import sys
    from multi import Application_callback, load_multiprocessor

    class Main:
        def run(self):
            raise LookupError("nothing here")

    load_multiprocessor(sys.argv[1], Application_callback(Main()), processor_size=-1).run()
    print("not reached")
    """
)


def test_an_unhandled_exception_ends_the_program_with_a_failure(fabric: str) -> None:
    result = run_script(fabric, code=UNHANDLED)
    assert result.returncode == 1
    assert "LookupError: nothing here" in result.stderr
    assert "not reached" not in result.stdout


INTERRUPTED = textwrap.dedent(
    """
    import sys, time
    from multi import Application_callback, Processor_box, Slave_command, load_multiprocessor

    class Forever(Slave_command):
        def run(self, processor, completed):
            time.sleep(600)

    class Main:
        def run(self):
            processor = Processor_box().processor
            for _ in range(4):
                processor.add_to_queue(Forever())
            print("queued", flush=True)
            processor.run_queue()

    if __name__ == "__main__":
        size = -1 if sys.argv[1] == "uni" else 2
        load_multiprocessor(sys.argv[1], Application_callback(Main()), processor_size=size).run()
    """
)


def test_ctrl_c_stops_the_master_and_every_slave(fabric: str, tmp_path: Path) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    status, stderr, processes = interrupt([sys.executable, str(script), fabric])
    assert status != 0
    assert "KeyboardInterrupt" in stderr
    assert survivors(processes) == []
