"""The example application gives the same numbers on every fabric."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FABRICS, slaves_for

pytest.importorskip("scipy")
EXAMPLE = Path(__file__).parent.parent / "examples" / "relaxation.py"


def run_example(fabric: str, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, str(EXAMPLE), "--fabric", fabric, "--slaves", str(slaves_for(fabric)),
        "--residues", "24", "--simulations", "6", "--batch", "4", "--output", str(output),
        "--verbosity", "0", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_the_example_gives_the_same_numbers_on_every_fabric(tmp_path: Path) -> None:
    tables = {}
    for fabric in FABRICS:
        result = run_example(fabric, tmp_path / fabric, "--no-plot")
        assert result.returncode == 0, result.stderr
        tables[fabric] = (tmp_path / fabric / "relaxation_rates.txt").read_text()
        assert tables[fabric] in result.stdout
    reference = tables["uni"]
    assert len(reference.splitlines()) > 20
    assert all(table == reference for table in tables.values()), tables


def test_the_example_makes_its_folders_as_make_demo_asks_in_a_fresh_clone(tmp_path: Path) -> None:
    results = tmp_path / "results"  # (make demo: --output results --timeline results/...)
    result = run_example("thread", results, "--no-plot", "--timeline", str(results / "t.json"))
    assert result.returncode == 0, result.stderr
    assert (results / "relaxation_rates.txt").exists() and (results / "t.json").exists()


def test_the_example_draws_its_figure(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = run_example("thread", tmp_path)
    assert result.returncode == 0, result.stderr
    figure = tmp_path / "relaxation_rates.png"
    assert figure.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--residues", "0", "a whole number >= 1"),
        ("--batch", "0", "a whole number >= 1"),
        ("--batch", "-5", "a whole number >= 1"),
        ("--seed", "-1", "a whole number >= 0"),
        ("--simulations", "1", "a whole number >= 2 (an error is the spread of several)"),
        ("--slaves", "0", "a number >= 1, or -1 for one per usable core"),
        ("--verbosity", "-1", "a whole number >= 0"),
        ("--batch", "two", "a whole number >= 1"),
    ],
)
def test_the_example_refuses_a_bad_number_saying_what_is_allowed(
    tmp_path: Path, option: str, value: str, allowed: str
) -> None:
    # Each of these ended in a traceback deep in the run, or in a table of nan and status 0.
    result = run_example("uni", tmp_path / "out", "--no-plot", option, value)
    assert result.returncode == 2, result.stderr
    assert f"error: argument {option}: must be {allowed}, not '{value}'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--batches", "0", "a whole number >= 1"),
        ("--darts", "0", "a whole number >= 1"),
        ("--darts", "-5", "a whole number >= 1"),
        ("--slaves", "0", "a whole number >= 1, or -1 for every core"),
    ],
)
def test_the_small_example_refuses_a_bad_number_saying_what_is_allowed(
    option: str, value: str, allowed: str
) -> None:
    # --batches 0 and --darts 0 ended with a ZeroDivisionError, --darts -5 with status 0.
    pi = EXAMPLE.parent / "pi.py"
    command = [sys.executable, str(pi), "--fabric", "uni", option, value]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert f"error: argument {option}: must be {allowed}" in result.stderr
    assert "Traceback" not in result.stderr
