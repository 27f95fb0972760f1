"""The directive ``fabric-options``: a table of the options of each fabric, read from the
``Option`` declarations in the code, so that the page cannot drift from it."""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from multi.cli import fabric_options, owner

COLUMNS = ("option", "launcher", "environment", "default", "meaning")


def _default(value: Any) -> str:
    return "none" if value is None else str(value)


def _row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += nodes.paragraph("", "", cell)
        row += entry
    return row


def _table(title: str, rows: list[list[nodes.Node]]) -> nodes.table:
    table = nodes.table()
    table += nodes.title(title, title)
    group = nodes.tgroup(cols=len(COLUMNS))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in COLUMNS)
    head = nodes.thead()
    head += _row([nodes.Text(column) for column in COLUMNS])
    body = nodes.tbody()
    body.extend(_row(cells) for cells in rows)
    group.extend([head, body])
    return table


class FabricOptions(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        tables: list[nodes.Node] = []
        for fabric, options in fabric_options().items():
            rows = [
                [
                    nodes.literal(option.name, option.name),
                    nodes.literal(option.flag, option.flag),
                    nodes.literal(env := option.env_name(fabric or "<fabric>"), env),
                    nodes.Text(_default(option.default)),
                    nodes.Text(option.help),
                ]
                for option in options
            ]
            tables.append(_table(owner(fabric).capitalize(), rows))
        return tables


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("fabric-options", FabricOptions)
    return {"parallel_read_safe": True}
