"""The launcher: ``multi [options] script.py [arguments]`` and ``python -m multi``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FABRICS, MISSING, slaves_for

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "tests" / "apps" / "launched.py"
SECONDS = 60


def launch(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multi", *arguments],
        capture_output=True,
        text=True,
        timeout=SECONDS,
        cwd=ROOT,
        check=False,
        env={**os.environ, **environment},
    )


def test_a_script_runs_as_master_with_its_own_classes_and_status(fabric: str) -> None:
    result = launch("-m", fabric, "-n", str(slaves_for(fabric)), str(SCRIPT), "5")
    assert result.returncode == 5, result.stderr
    assert "cubes: [0, 1, 8, 27, 64, 125]" in result.stdout
    assert "Parallel efficiency:" in result.stdout and "Overall runtime:" in result.stdout
    cubing = [line for line in result.stdout.splitlines() if "cubing" in line]
    assert len(cubing) == 6


def test_a_program_that_loads_its_own_processor_gets_the_launchers() -> None:
    result = launch(
        "-m", "uni", "-v", "0", str(ROOT / "examples" / "pi.py"), "--fabric", "thread",
        "--batches", "3", "--darts", "1000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Uni-processor.\n3000 darts: pi = ")


def test_list_shows_every_fabric_and_why_one_cannot_run() -> None:
    result = launch("--list")
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    for fabric in FABRICS:
        assert lines[fabric].endswith("available")
    # Where PVM's daemon cannot be found, the line says why and how to install it.
    result = launch("--list", PATH=os.path.dirname(sys.executable), PVM_ROOT="/nowhere")
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "not available: " in lines["pvm"] and "apt-get install pvm" in lines["pvm"]


def test_help_shows_the_options_of_every_fabric() -> None:
    result = launch("--help")
    assert result.returncode == 0
    for text in ("options of every fabric", "--retries", "--progress", "--pickle-check",
                 "options of the multiprocessing fabric", "--start-method"):  # fmt: skip
        assert text in result.stdout


def test_a_fabric_option_reaches_the_fabric() -> None:
    result = launch("-m", "multiprocessing", "-n", "1", "--start-method", "spawn", str(SCRIPT))
    assert result.returncode == 0, result.stderr
    assert "started by spawn" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-m", "uni", "--start-method", "fork", str(SCRIPT)], "option of the multiprocessing"),
        (["-m", "nonesuch", str(SCRIPT)], "there is no fabric called 'nonesuch'"),
        (["-m", "thread", "-n", "0", str(SCRIPT)], "processor_size must be"),
        (["-m", "uni", "missing.py"], "no script at missing.py"),
        (["-m", "uni"], "a script to run is needed"),
        (["--on-failure", "bogus", str(SCRIPT)], "expected one of continue, stop, run-all"),
        (["--timeout", "-1", str(SCRIPT)], "expected a number of seconds > 0, or none"),
        (["--start-method", "bogus", str(SCRIPT)], "expected one of forkserver, spawn, fork"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(arguments: list[str], message: str) -> None:
    result = launch(*arguments)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.skipif("pvm" in MISSING, reason="needs PVM")
def test_a_fabric_that_cannot_start_as_asked_is_refused_without_a_traceback(
    tmp_path: Path,
) -> None:
    result = launch("-m", "pvm", "--daemon", "running", str(SCRIPT), PVM_TMP=str(tmp_path))
    assert result.returncode == 2
    assert "error: no PVM daemon runs for this user" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_the_script_keeps_its_traceback(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("from multi import MultiError\nraise MultiError('of the script')\n")
    result = launch("-m", "uni", str(script))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "MultiError: of the script" in result.stderr
