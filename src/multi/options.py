"""Options of a fabric: declared once, set by keyword, environment variable or default.

A fabric lists its options as ``Option`` objects; the launcher turns them into command-line
flags. Each can also come from ``MULTI_<FABRIC>_<OPTION>`` in the environment. Every value,
whatever its source and type, is read by the option's ``parse`` from its text, so one rule
checks it: ``retries=-3``, ``retries="-3"`` and ``MULTI_UNI_RETRIES=-3`` fail alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def boolean(text: str) -> bool:
    """Read a yes/no setting."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}, not {text!r}")


def count(text: str) -> int:
    """Read a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, not {text!r}")
    return value


def seconds_or_none(text: str) -> float | None:
    """Read a number of seconds > 0, or ``none`` for no limit."""
    if text.strip().lower() in ("none", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"expected a number of seconds > 0, or none, not {text!r}")
    return value


def path_or_none(text: str) -> str | None:
    """Read a file's path, or ``none`` (or nothing) for no file."""
    text = str(text).strip()
    return None if text.lower() in ("none", "") else text


def file_to_write(text: str) -> str | None:
    """Read the path of a file that a run will write, or ``none``: checked now, rather than
    once the work is done and only its file is missing."""
    path = path_or_none(text)
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{path!r} is a directory: give the path of a file, such as "
                         f"{str(target / 'trace.json')!r}")  # fmt: skip
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"{path!r} is in no directory that exists ({str(folder)!r}): create it "
                         "first, or give a path in one that exists")  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{path!r} cannot be written: its directory {str(folder)!r} does not "
                         "take new files here; give a path in one that does")  # fmt: skip
    return path


def file_to_read(text: str) -> str | None:
    """Read the path of an existing file, or ``none``."""
    path = path_or_none(text)
    if path is not None and not Path(path).is_file():
        raise ValueError(f"there is no file {path!r}: give the path of one that exists")
    return path


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A reader of a setting that takes one of ``choices``."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, not {text!r}")
        return value

    return parse


@dataclass(frozen=True)
class Option:
    """One setting of a fabric."""

    name: str
    help: str
    default: Any
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None

    def env_name(self, fabric: str) -> str:
        return f"MULTI_{fabric}_{self.name}".upper()

    @property
    def flag(self) -> str:
        """The launcher's flag for it (``multi --name ...``)."""
        return "--" + self.name.replace("_", "-")


def resolve(fabric: str, declared: Iterable[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """The value of every option: the keyword if given, else the environment, else the default."""
    by_name = {option.name: option for option in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        known = ", ".join(sorted(by_name)) or "none"
        raise TypeError(
            f"the {fabric!r} fabric has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {known}"
        )
    values = {}
    for name, option in by_name.items():
        if name in given:
            values[name] = _parse(option, given[name], f"option {name!r}")
            continue
        env_name = option.env_name(fabric)
        env = os.environ.get(env_name)
        values[name] = option.default if env is None else _parse(option, env, env_name)
    return values


#: The rules that read a path, whose keyword is a path or None: another object (``True``, a
#: number) would be taken for the name of a file.
PATH_RULES = (path_or_none, file_to_write, file_to_read)


def _parse(option: Option, value: Any, where: str) -> Any:
    """The value of an option given as ``value``, read from its text by the option's rule."""
    if option.parse in PATH_RULES and not isinstance(value, (str, os.PathLike, type(None))):
        raise TypeError(
            f"{where} takes the path of a file (a str or pathlib.Path), or None, not {value!r}"
        )
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    else:
        text = str(value)
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
