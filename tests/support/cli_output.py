"""Parse what the CLI prints (CSV, markdown, rich tables, HTML) back into rows to compare with JSON.

Every parser returns rows as ``{column: cell}`` dicts, with column names normalised the way the
JSON names them (``"model calls"`` -> ``"model_calls"``), and :func:`value` turns a cell into
something comparable with a JSON value: exact ``Decimal`` for numbers (thousands separators,
``$``, ``%`` and trailing zeros do not matter), ``None`` for an empty or "-" or "(none)" cell,
the text otherwise. :func:`shown_usd` is a JSON money value rounded the way people-facing formats
show it, so a rounded cell can be compared exactly.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import Any

from costguard.display import usd

Rows = list[dict[str, str]]

_NUMBER_RE = re.compile(r"^-?\$?-?[\d,]*\.?\d+%?$")


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
            return Decimal(text.replace(",", "").replace("$", "").rstrip("%"))
        except InvalidOperation:
            return text
    return text


def shown_usd(exact: Any) -> Any:
    """A JSON money value as a terminal, Markdown or HTML cell shows it (``costguard.display.usd``:
    half-even to 2, 4 or 6 decimals by magnitude), in :func:`value` form."""
    return None if exact is None else value(usd(Decimal(exact)))


# -- CSV and Markdown ---------------------------------------------------------------------------


def parse_csv(text: str) -> Rows:
    return [{column(k): v for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def parse_markdown_tables(text: str) -> list[Rows]:
    """Every pipe table in a Markdown document, in order."""
    tables: list[Rows] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            # a literal pipe inside a cell is escaped as \|
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            block.append([cell.strip().replace("\\|", "|").replace("\\\\", "\\") for cell in cells])
            continue
        if block:
            header, rule, *body = block
            assert all(set(cell) <= set("-:") and cell for cell in rule), rule
            tables.append([dict(zip(map(column, header), row, strict=True)) for row in body])
            block = []
    return tables


def parse_markdown(text: str) -> Rows:
    return parse_markdown_tables(text)[0]


# -- rich tables --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RichTable:
    """One table as rich printed it: title, header names, body rows, footer row, caption."""

    title: str
    columns: list[str]
    rows: Rows
    footer: dict[str, str] | None
    caption: str | None


_RUN_RE = re.compile(r"\S+(?: \S+)*")
_BOX_TOP = "┏"


def rich_tables(text: str) -> list[RichTable]:
    """Every table in the output: costguard's simple tables (``display.print_table``: title,
    headers wrapped over lines above a ─ rule, rows, a ─ rule before the footer, a caption) and
    rich's default box-drawn tables (┏ ┡ └)."""
    lines = text.splitlines()
    tables: list[RichTable] = []
    n = 0
    while n < len(lines):
        if lines[n].lstrip().startswith(_BOX_TOP):
            n, table = _box_table(lines, n)
            tables.append(table)
            continue
        if _is_rule(lines[n]):
            n, table = _simple_table(lines, n)
            tables.append(table)
            continue
        n += 1
    return tables


def parse_rich(text: str) -> Rows:
    """The first rich table's body rows."""
    return rich_tables(text)[0].rows


def _is_rule(line: str) -> bool:
    return bool(line.strip()) and set(line.strip()) == {"─"}


def _block_start(lines: list[str], rule: int) -> int:
    start = rule
    while start > 0 and lines[start - 1].strip():
        start -= 1
    return start


def _simple_table(lines: list[str], rule: int) -> tuple[int, RichTable]:
    start = _block_start(lines, rule)
    end = rule + 1
    while end < len(lines) and lines[end].strip():
        end += 1
    above, below = lines[start:rule], lines[rule + 1 : end]
    # The key column is left-aligned and its one-word header sits on the line just above the
    # rule (headers are bottom-aligned); upper header lines start blank; title lines do not.
    head = len(above) - 1
    while head > 0 and above[head - 1][:1] == " ":
        head -= 1
    title, header_lines = above[:head], above[head:]
    footer_line: str | None = None
    if any(_is_rule(line) for line in below):
        second = next(i for i, line in enumerate(below) if _is_rule(line))
        body, tail = below[:second], below[second + 1 :]
        footer_line, caption_lines = (tail[0], tail[1:]) if tail else (None, [])
    else:
        body, caption_lines = below, []
    # A caption (centred, one run of text per line) closes the block when it is there.
    multi = [i for i, line in enumerate(body) if len(_RUN_RE.findall(line)) > 1]
    if not footer_line:
        cut = multi[-1] + 1 if multi else 0
        body, caption_lines = body[:cut], body[cut:] + caption_lines
    measured = header_lines + body + ([footer_line] if footer_line else [])
    spans = _spans(measured)
    names = [column(" ".join(filter(None, (line[a:b].strip() for line in header_lines)))) for a, b in spans]
    rows = [dict(zip(names, (line[a:b].strip() for a, b in spans), strict=True)) for line in body]
    footer = dict(zip(names, (footer_line[a:b].strip() for a, b in spans), strict=True)) if footer_line else None
    caption = " ".join(line.strip() for line in caption_lines) or None
    return end, RichTable(" ".join(t.strip() for t in title), names, rows, footer, caption)


def _spans(lines: list[str]) -> list[tuple[int, int]]:
    """Column extents: runs of positions where some line has text, split at gaps of 2 or more
    blank positions (cells are 3 apart; text inside a cell has single spaces)."""
    width = max((len(line) for line in lines), default=0)
    used = [any(i < len(line) and line[i] != " " for line in lines) for i in range(width)]
    spans: list[tuple[int, int]] = []
    i = 0
    while i < width:
        if not used[i]:
            i += 1
            continue
        j = i
        while j < width and (used[j] or (j + 1 < width and used[j + 1] and used[j - 1])):
            j += 1
        spans.append((i, j))
        i = j
    return spans


def _box_table(lines: list[str], top: int) -> tuple[int, RichTable]:
    title = " ".join(line.strip() for line in lines[_block_start(lines, top) : top])
    header_lines: list[list[str]] = []
    rows: list[list[str]] = []
    section = "header"
    n = top + 1
    for n in range(top + 1, len(lines)):
        stripped = lines[n].strip()
        if stripped.startswith("┡"):
            section = "body"
            continue
        if stripped.startswith("└"):
            break
        if stripped.startswith(("├", "┣")):
            continue
        cells = [cell.strip() for cell in re.split(r"[┃│]", stripped)[1:-1]]
        if section == "header":
            header_lines.append(cells)
        elif rows and not cells[0]:
            # a wrapped row continues on lines whose first cell is blank
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    # rich wraps a long header over several lines: a column's name is its fragments joined
    names = [column(" ".join(part for part in parts if part)) for parts in zip(*header_lines, strict=True)]
    end = n + 1
    caption = []
    while end < len(lines) and lines[end].strip():
        caption.append(lines[end].strip())
        end += 1
    return end, RichTable(title, names, [dict(zip(names, row, strict=True)) for row in rows], None,
                          " ".join(caption) or None)


# -- HTML ---------------------------------------------------------------------------------------


class _HTMLTables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list[list[tuple[str, str | None]]]]] = []
        self._section: str | None = None
        self._row: list[tuple[str, str | None]] | None = None
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
            self._row.append(("".join(self._cell).strip(), self._title))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section is not None and self.tables:
            self.tables[-1][self._section].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@dataclass(frozen=True, slots=True)
class HTMLTable:
    """One HTML table: header names, and per row the shown text and the exact ``title`` value."""

    columns: list[str]
    rows: Rows
    exact: list[dict[str, str | None]]
    footer: dict[str, str] | None
    footer_exact: dict[str, str | None] | None


def html_tables(text: str) -> list[HTMLTable]:
    parser = _HTMLTables()
    parser.feed(text)
    tables = []
    for table in parser.tables:
        names = [column(text) for text, _ in table["thead"][0]]
        body = [row for row in table["tbody"] if len(row) == len(names)]  # not the "empty" row
        (footer,) = table["tfoot"] or [None]
        tables.append(HTMLTable(
            names,
            [dict(zip(names, (shown for shown, _ in row), strict=True)) for row in body],
            [dict(zip(names, (exact for _, exact in row), strict=True)) for row in body],
            dict(zip(names, (shown for shown, _ in footer), strict=True)) if footer else None,
            dict(zip(names, (exact for _, exact in footer), strict=True)) if footer else None,
        ))
    return tables


def parse_html(text: str) -> tuple[Rows, dict[str, str]]:
    """The first HTML table's body rows and its footer (totals) row, exact values where a cell
    carries one (money cells' ``title``)."""
    table = html_tables(text)[0]
    body = [{k: (exact[k] if exact[k] is not None else shown[k]) for k in shown} for shown, exact in zip(table.rows, table.exact, strict=True)]
    footer = {} if table.footer is None or table.footer_exact is None else {
        k: (table.footer_exact[k] if table.footer_exact[k] is not None else table.footer[k]) for k in table.footer
    }
    return body, footer
