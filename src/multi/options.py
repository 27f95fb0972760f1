"""Options of a fabric: declared once, set by keyword, environment variable or default.

A fabric lists its options as ``Option`` objects; the launcher turns them into command-line
flags. Each can also come from ``MULTI_<FABRIC>_<OPTION>`` in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, not {text!r}")
    return value


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


def resolve(fabric: str, declared: Iterable[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """The value of every option: the keyword if given, else the environment, else the default."""
    declared = {option.name: option for option in declared}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise TypeError(
            f"the {fabric!r} fabric has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {known}"
        )
    values = {}
    for name, option in declared.items():
        if name in given:
            value = given[name]
            if isinstance(value, str) and option.parse is not str:
                value = _parse(option, value, f"option {name!r}")
            values[name] = value
            continue
        env_name = option.env_name(fabric)
        env = os.environ.get(env_name)
        values[name] = option.default if env is None else _parse(option, env, env_name)
    return values


def _parse(option: Option, text: str, where: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
