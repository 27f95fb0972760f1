"""Finding fabrics: the seed's naming rule, module paths and entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from multi import FabricNotFoundError, FabricUnavailableError, registry
from multi.thread_processor import Thread_processor
from tests import workloads as w
from tests.conftest import run_master

PLUGIN = textwrap.dedent(
    """
    from multi.thread_processor import Thread_processor

    class Plugin_processor(Thread_processor):
        fabric = "plugin"
    """
)


@pytest.fixture
def plugin_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module ``plugin_fabric`` and a distribution that registers it as ``plugin``."""
    (tmp_path / "plugin_fabric.py").write_text(PLUGIN)
    info = tmp_path / "plugin_fabric-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-fabric\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[multi.processors]\nplugin = plugin_fabric:Plugin_processor\n"
        "broken = plugin_fabric_missing:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("plugin_fabric", None)


def test_the_seed_rule_names_module_and_class() -> None:
    assert registry.seed_path("mpi4py") == ("multi.mpi4py_processor", "Mpi4py_processor")
    assert registry.load("thread") is Thread_processor


def test_a_fabric_from_a_module_path_runs_commands(plugin_on_path: Path) -> None:
    def body(processor: Any) -> list[Any]:
        memo = w.Record()
        processor.add_to_queue(w.Square(7), memo)
        processor.run_queue()
        return [v for _, v in memo.values]

    assert run_master("plugin_fabric:Plugin_processor", body, size=2) == [49]


def test_a_fabric_from_an_entry_point_runs_commands(plugin_on_path: Path) -> None:
    def body(processor: Any) -> str:
        processor.add_to_queue(w.Square(1))
        processor.run_queue()
        return type(processor).__name__

    assert run_master("plugin", body, size=2) == "Plugin_processor"
    listed = {info.name: info for info in registry.available()}
    assert listed["plugin"].available and listed["plugin"].source == "plugin-fabric"
    assert not listed["broken"].available


def test_a_broken_plugin_is_unavailable_with_its_reason(plugin_on_path: Path) -> None:
    with pytest.raises(FabricUnavailableError, match="plugin_fabric_missing"):
        registry.load("broken")


def test_a_missing_module_or_class_is_named() -> None:
    with pytest.raises(FabricNotFoundError, match="no module 'no_such_module'"):
        registry.load("no_such_module:Cls")
    with pytest.raises(FabricNotFoundError, match="no class 'Nope'"):
        registry.load("multi.thread_processor:Nope")
    with pytest.raises(FabricNotFoundError, match=r"os\.path is a module, not a subclass of"):
        registry.load("os:path")
    with pytest.raises(FabricNotFoundError, match="Slave_command is a type, not a subclass of"):
        registry.load("multi:Slave_command")
