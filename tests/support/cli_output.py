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
    """The first table rich printed: a box-drawn one (┏ ┡ └), or costguard's simple tables
    (headers wrapped over lines above a ─ rule, rows below it, a ─ rule before the footer)."""
    lines = text.splitlines()
    if not any(line.lstrip().startswith("┏") for line in lines):
        return _parse_simple(lines)
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


_CELL_RE = re.compile(r"\S+(?: \S+)*")


def _parse_simple(lines: list[str]) -> Rows:
    """Cells are runs of text separated by two spaces or more; the first column is left-aligned,
    the others right-aligned, so a header word belongs to the column whose cells end where it
    ends (or, for the first column, start where it starts)."""
    rule = next(n for n, line in enumerate(lines) if line.strip() and set(line.strip()) == {"─"})
    body: list[str] = []
    for line in lines[rule + 1 :]:
        if not line.strip() or set(line.strip()) == {"─"}:
            break
        body.append(line)
    spans = [(m.start(), m.end()) for m in _CELL_RE.finditer(body[0])] if body else []
    header_lines = []
    for line in lines[:rule]:
        if not line.strip():
            header_lines = []
            continue
        header_lines.append(line)
    header_lines = header_lines[1:] if header_lines and len(_CELL_RE.findall(header_lines[0])) == 1 and len(spans) > 1 else header_lines
    names: list[list[str]] = [[] for _ in spans]
    for line in header_lines:
        for m in _CELL_RE.finditer(line):
            for i, (start, end) in enumerate(spans):
                if (i == 0 and m.start() == start) or (i > 0 and m.end() == end):
                    names[i].append(m.group())
                    break
    header = ["_".join(" ".join(parts).split()) for parts in names]
    rows = []
    for line in body:
        cells = [m.group() for m in _CELL_RE.finditer(line)]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


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
