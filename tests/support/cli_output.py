"""Parse what the CLI prints (CSV, markdown, rich tables, HTML) back into rows to compare with JSON.

Every parser returns the first table of the output as a list of ``{column: cell}`` dicts, with
column names normalised the way the JSON names them (``"model calls"`` -> ``"model_calls"``), and
:func:`value` turns a cell into something comparable with a JSON value: exact ``Decimal`` for
numbers (thousands separators, ``$`` and trailing zeros do not matter), ``None`` for an empty or
"-" or "(none)" cell, the text otherwise.
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import Any

Rows = list[dict[str, str]]

_NUMBER_RE = re.compile(r"^\$?-?[\d,]*\.?\d+$")


def column(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip().lower())


def value(cell: Any) -> Any:
    """A cell or JSON value in a comparable form (see the module docstring)."""
    if cell is None or isinstance(cell, bool):
        return cell
    if isinstance(cell, int):
        return Decimal(cell)
    text = str(cell).strip()
    if text in ("", "-", "(none)"):
        return None
    if _NUMBER_RE.match(text):
        try:
            return Decimal(text.replace(",", "").lstrip("$"))
        except InvalidOperation:
            return text
    return text


def parse_csv(text: str) -> Rows:
    return [{column(k): v for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def parse_markdown(text: str) -> Rows:
    lines = text.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("|"))
    table: list[list[str]] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rule, *body = table
    assert all(set(cell) <= set("-:") for cell in rule), rule
    return [dict(zip(map(column, header), row, strict=True)) for row in body]


def parse_rich(text: str) -> Rows:
    """The first box-drawn table rich printed: header lines between ┏ and ┡, rows until └."""
    lines = text.splitlines()
    top = next(n for n, line in enumerate(lines) if line.lstrip().startswith("┏"))
    header_lines: list[list[str]] = []
    rows: list[list[str]] = []
    section = "header"
    for line in lines[top + 1 :]:
        stripped = line.strip()
        if stripped.startswith("┡"):
            section = "body"
            continue
        if stripped.startswith("└"):
            break
        if stripped.startswith(("├", "┣")):
            continue
        cells = [cell.strip() for cell in re.split(r"[┃│]", stripped)[1:-1]]
        (header_lines if section == "header" else rows).append(cells)
    # rich wraps a long header over several lines: a column's name is its fragments joined
    header = [" ".join(part for part in parts if part) for parts in zip(*header_lines, strict=True)]
    return [dict(zip(map(column, header), row, strict=True)) for row in rows]


class _HTMLTables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list[list[str]]]] = []
        self._section: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._title: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"thead": [], "tbody": [], "tfoot": []})
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = tag
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
            # money cells show a rounded figure and carry the exact one in their title
            self._title = dict(attrs).get("title")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(self._title if self._title is not None else "".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section is not None and self.tables:
            self.tables[-1][self._section].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse_html(text: str) -> tuple[Rows, dict[str, str]]:
    """The first HTML table's body rows and its footer (totals) row."""
    parser = _HTMLTables()
    parser.feed(text)
    table = parser.tables[0]
    header = [column(name) for name in table["thead"][0]]
    body = [dict(zip(header, row, strict=True)) for row in table["tbody"]]
    (footer,) = table["tfoot"] or [[]]
    return body, dict(zip(header, footer, strict=False))
