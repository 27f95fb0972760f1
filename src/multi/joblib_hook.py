"""Registers the joblib backend when joblib is imported, without importing joblib (a quarter
of a second) in every program that imports multi, slaves included."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class _Joblib_finder(importlib.abc.MetaPathFinder):
    """Finds joblib as the other finders do, and registers the backend once it has loaded."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "joblib":
            return None
        sys.meta_path.remove(self)  # once, and not for the lookup below
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _register()

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Register the backend now if joblib is there already, else when it gets imported."""
    if "joblib" in sys.modules:
        _register()
    elif importlib.util.find_spec("joblib") is not None:
        sys.meta_path.insert(0, _Joblib_finder())


def _register() -> None:
    from multi.joblib_backend import register

    register()
