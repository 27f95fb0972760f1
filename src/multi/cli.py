"""The launcher: run a script as the master program on a chosen fabric.

    multi [-m FABRIC] [-n N] [-v LEVEL] [fabric options] script.py [script arguments]
    multi --list

The script runs as ``__main__``, on the master alone: the command classes it defines reach the
slaves by value (see ``multi.wire``), so it needs no ``if __name__ == "__main__":`` guard. It
finds the processor with ``Processor_box().processor``, and its own ``load_multiprocessor``
calls get the same one. The exit status is the script's.
"""

from __future__ import annotations

import argparse
import builtins
import sys
import types
from pathlib import Path
from typing import Any

import multi
from multi import registry
from multi.application import Application_callback, launch, load_multiprocessor
from multi.errors import (
    FabricNotFoundError,
    FabricUnavailableError,
    MultiError,
    ProcessorSizeError,
)
from multi.options import Option, boolean
from multi.processor import Processor


def fabric_options() -> dict[str | None, list[Option]]:
    """The options of the engine (under None: every fabric has them) and those of its own of
    each fabric whose class loads here, by fabric name.

    Only the classes are loaded, not their libraries: the launcher does not start MPI to
    build its parser.
    """
    groups: dict[str | None, list[Option]] = {None: list(Processor.options)}
    common = {option.name for option in Processor.options}
    for name, _ in registry.named():
        try:
            options = list(registry.load(name).options)
        except Exception:  # a fabric that does not load here has no flags; --list says why
            continue
        own = [option for option in options if option.name not in common]
        if own:
            groups[name] = own
    return groups


def owner(fabric: str | None) -> str:
    """Who has the options of a group of ``fabric_options``."""
    return "every fabric" if fabric is None else f"the {fabric} fabric"


def build_parser(groups: dict[str | None, list[Option]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multi",
        description="Run a script as the master program of a multi processor.",
        epilog="Every option can also come from the environment as MULTI_<FABRIC>_<OPTION>.",
    )
    parser.add_argument(
        "-m",
        "--fabric",
        default="multiprocessing",
        help="the fabric (default: multiprocessing); see --list",
    )
    parser.add_argument(
        "-n",
        "--slaves",
        type=int,
        default=-1,
        help="number of slaves (default: one per usable core, or MPI's)",
    )
    parser.add_argument(
        "-v",
        "--verbosity",
        type=int,
        default=1,
        help="0 silent, 1 prefixes and summary (default), 2 statistics per run",
    )
    parser.add_argument("--list", action="store_true", help="list the fabrics and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {multi.__version__}")
    seen: set[str] = set()
    for fabric, options in groups.items():
        group = parser.add_argument_group(f"options of {owner(fabric)}")
        for option in options:
            if option.name in seen:
                continue
            seen.add(option.name)
            help_text = f"{option.help} (default: {option.default})"
            if option.parse is boolean:
                group.add_argument(
                    option.flag,
                    dest=option.name,
                    default=None,
                    action=argparse.BooleanOptionalAction,
                    help=help_text,
                )
            else:
                group.add_argument(
                    option.flag,
                    dest=option.name,
                    default=None,
                    type=_said(option.parse),
                    choices=option.choices,
                    help=help_text,
                )
    parser.add_argument("script", nargs="?", help="the master program to run")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the script's arguments")
    return parser


def list_fabrics() -> str:
    rows = [("fabric", "from", "here")]
    for info in registry.available():
        rows.append(
            (
                info.name,
                info.source,
                "available" if info.available else f"not available: {info.reason}",
            )
        )
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)


def _said(parse: Any) -> Any:
    """An option's reader for argparse, which then says what the reader says is wrong (it
    would say "invalid parse value" of any ValueError)."""

    def read(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return read


def main(argv: list[str] | None = None) -> int:
    groups = fabric_options()
    parser = build_parser(groups)
    args = parser.parse_args(argv)
    if args.list:
        print(list_fabrics())
        return 0
    if args.script is None:
        parser.error("a script to run is needed (or --list)")
    script = Path(args.script)
    if not script.is_file():
        parser.error(f"no script at {script}")
    try:
        declared = {option.name for option in registry.load(args.fabric).options}
    except (FabricNotFoundError, FabricUnavailableError) as exc:
        parser.error(str(exc))
    given = {
        option.name: getattr(args, option.name)
        for options in groups.values()
        for option in options
        if getattr(args, option.name, None) is not None
    }
    for name in given.keys() - declared:
        owners = [owner(f) for f, options in groups.items() if name in {o.name for o in options}]
        parser.error(
            f"{Option(name, '', None).flag} is an option of {', '.join(owners)}, "
            f"not of the {args.fabric} fabric"
        )
    module = as_main(script, args.arguments)
    callback = Application_callback(master=None)
    began = []  # (once the script runs, its errors are its own, with their traceback)

    def begin(processor: Processor) -> Any:
        began.append(True)
        return run_code(script, module)

    callback.init_master = begin
    try:
        processor = load_multiprocessor(
            args.fabric, callback, processor_size=args.slaves, verbosity=args.verbosity, **given
        )
    except (ProcessorSizeError, ValueError, TypeError) as exc:
        parser.error(str(exc))
    launch(processor)
    try:
        processor.run()
    except (MultiError, ValueError) as exc:
        if began:
            raise
        parser.error(str(exc))  # the fabric could not start as asked (no PVM daemon runs)
    return 0


def as_main(script: Path, arguments: list[str]) -> types.ModuleType:
    """Make the script the ``__main__`` module, as ``python script.py`` would: its classes
    are then the main module's, which travel to the slaves by value."""
    module = types.ModuleType("__main__")
    module.__file__ = str(script.resolve())
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    sys.argv = [str(script), *arguments]
    sys.path.insert(0, str(script.resolve().parent))
    return module


def run_code(script: Path, module: types.ModuleType) -> Any:
    code = compile(script.read_bytes(), str(script), "exec")
    exec(code, module.__dict__)
