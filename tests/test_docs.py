"""The documentation site builds without a warning, and the examples of its pages run and
print what the pages say they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"


def sphinx(builder: str, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder,
         str(DOCS), str(output)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    built = sphinx("html", tmp_path)
    assert built.returncode == 0, built.stderr
    for page in ("getting-started", "tutorial", "executor", "fabrics", "cluster", "contract",
                 "benchmarks", "api"):  # fmt: skip
        assert (tmp_path / f"{page}.html").exists(), page
    fabrics = (tmp_path / "fabrics.html").read_text()
    for generated in ("MULTI_&lt;FABRIC&gt;_RETRIES", "MULTI_MULTIPROCESSING_START_METHOD"):
        assert generated in fabrics


@pytest.mark.timeout(300)
def test_the_examples_of_the_pages_run(tmp_path: Path) -> None:
    tested = sphinx("doctest", tmp_path)
    report = (tmp_path / "output.txt").read_text() if (tmp_path / "output.txt").exists() else ""
    assert tested.returncode == 0, tested.stdout + tested.stderr + report
    assert " 0 failures in tests" in report and " 0 tests" not in report, report
