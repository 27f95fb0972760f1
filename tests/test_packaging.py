"""The package as a user installs it: its distribution, its version, its files, its command."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import multi

DISTRIBUTION = "multi-fabric"
SOURCE = Path(__file__).parent.parent / "src" / "multi"
INSTALLED = Path(multi.__file__).parent


def _files(root: Path) -> set[Path]:
    return {
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _editable() -> bool:
    direct_url = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    return bool(direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"))


def test_the_distribution_has_the_packages_version() -> None:
    assert metadata.version(DISTRIBUTION) == multi.__version__


def test_the_installed_package_has_every_file_of_the_source() -> None:
    missing = _files(SOURCE) - _files(INSTALLED)
    assert not missing, f"not installed: {sorted(map(str, missing))}"
    assert (INSTALLED / "py.typed").exists()


def test_the_distribution_carries_the_text_of_its_license() -> None:
    distribution = metadata.distribution(DISTRIBUTION)
    assert distribution.metadata["License-Expression"] == "GPL-3.0-or-later"
    texts = [file for file in distribution.files or () if file.name == "LICENSE"]
    assert texts, "no LICENSE among the installed files"
    assert texts[0].read_text().split()[:3] == ["GNU", "GENERAL", "PUBLIC"]


def test_the_suite_imports_the_installed_package() -> None:
    if _editable():
        pytest.skip("an editable install: the source is the package")
    assert SOURCE not in INSTALLED.parents and INSTALLED != SOURCE, INSTALLED


def test_the_command_gives_its_version_and_its_fabrics() -> None:
    command = Path(sys.executable).parent / "multi"
    version = subprocess.run(
        [command, "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert version.stdout == f"multi {multi.__version__}\n"
    listed = subprocess.run(
        [command, "--list"], capture_output=True, text=True, timeout=30, check=True
    )
    assert {"uni", "thread", "multiprocessing"} <= {
        line.split()[0] for line in listed.stdout.splitlines()[1:]
    }
