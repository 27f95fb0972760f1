"""Finding a fabric by name.

A name is looked up in this order:

1. ``package.module:Class``: that class, from any importable module;
2. a fabric built into ``multi`` (the seed's rule: ``multi.<name>_processor``, class
   ``<Name>_processor``);
3. an installed package's entry point in the group ``multi.processors``;
4. the seed's rule for any other name, for fabric modules placed in the ``multi`` package.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from multi.errors import FabricNotFoundError, FabricUnavailableError

if TYPE_CHECKING:
    from multi.processor import Processor

ENTRY_POINT_GROUP = "multi.processors"
BUILT_IN = ("uni", "thread", "multiprocessing", "mpi4py", "pvm")

#: What to do about a built-in fabric whose module cannot be imported.
INSTALL_HINTS = {
    "mpi4py": "install it with pip install 'multi-fabric[mpi]' (mpi4py with MPICH from PyPI)",
}


@dataclass(frozen=True)
class Fabric_info:
    """A fabric that can be named, and whether it loads here."""

    name: str
    source: str  # "built in" or the distribution that provides it
    available: bool
    reason: str = ""


def seed_path(name: str) -> tuple[str, str]:
    """The module and class that the seed's naming rule gives for a fabric name."""
    return f"multi.{name}_processor", f"{name[:1].upper()}{name[1:]}_processor"


def load(name: str) -> type[Processor]:
    """The processor class of the fabric called ``name``, or a clear error."""
    if not isinstance(name, str) or not name:
        raise FabricNotFoundError(f"a fabric name must be a non-empty string, not {name!r}")
    if ":" in name:
        module, _, attribute = name.partition(":")
        return _import(module, attribute, name)
    lowered = name.lower()
    if lowered in BUILT_IN:
        return _import(*seed_path(lowered), lowered)
    plugins = _entry_points()
    match = plugins.get(name) or plugins.get(lowered)
    if match is not None:
        try:
            return match.load()  # type: ignore[no-any-return]
        except Exception as exc:  # a broken plug-in is its own problem, named, not ours
            raise FabricUnavailableError(
                f"the fabric {name!r} from {match.value} cannot be loaded here: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    module, attribute = seed_path(name)
    if importlib.util.find_spec(module) is not None:
        return _import(module, attribute, name)
    raise FabricNotFoundError(
        f"there is no fabric called {name!r}. Fabrics here: {_listing()}. A fabric from "
        f"another package is named 'package.module:Class', or registered by that package "
        f"under the entry-point group {ENTRY_POINT_GROUP!r} (install it with pip)."
    )


def named() -> list[tuple[str, str]]:
    """Every fabric name known here, with where it comes from: built in, then installed."""
    names = [(name, "built in") for name in BUILT_IN]
    names += [(n, ep.dist.name if ep.dist else ep.value) for n, ep in _entry_points().items()]
    return names


def available() -> list[Fabric_info]:
    """Every fabric that can be named here, and whether it runs here (which may start MPI)."""
    found = []
    for name, source in named():
        try:
            load(name).check_available()
        except Exception as exc:  # whatever a fabric's check raises, it does not run here
            found.append(Fabric_info(name, source, False, str(exc)))
        else:
            found.append(Fabric_info(name, source, True))
    return found


def _listing() -> str:
    """The names there are, without loading them (which would start MPI, or fail for a broken
    plug-in): ``multi --list`` tells which run here."""
    return ", ".join(name for name, _ in named()) + " (multi --list tells which run here)"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _import(module_name: str, attribute: str, name: str) -> type[Processor]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name not in (None, module_name) or module_name.startswith("multi."):
            why = INSTALL_HINTS.get(name) if exc.name == module_name else None
            raise FabricUnavailableError(
                f"the fabric {name!r} cannot be loaded here: {why or exc}"
            ) from exc
        raise FabricNotFoundError(f"no module {module_name!r} for the fabric {name!r}") from exc
    try:
        found: type[Processor] = getattr(module, attribute)
    except AttributeError:
        raise FabricNotFoundError(
            f"the module {module_name!r} has no class {attribute!r} for the fabric {name!r}"
        ) from None
    from multi.processor import Processor  # (which imports this module's users)

    if not (isinstance(found, type) and issubclass(found, Processor)):
        raise FabricNotFoundError(
            f"{module_name}.{attribute} is a {type(found).__name__}, not a subclass of "
            f"multi.Processor: the fabric {name!r} must name a processor class"
        )
    return found
