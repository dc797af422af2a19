"""How figures look on a terminal: one money format, and tables that fit the terminal.

Money is shown one way everywhere a person reads it (terminal tables, Markdown, HTML):
``$`` then fixed decimals chosen by magnitude, with thousands separators. Machine formats (JSON,
CSV) keep the exact decimal string instead.

A table that does not fit the width drops whole columns in the order its caller states, and
says which; the key column (the first) and money columns are never dropped nor cut.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

__all__ = ["Column", "console", "fit_columns", "print_table", "terminal_width", "usd"]

# Piped output with no $COLUMNS gets a page wide enough for CI logs; a terminal uses its width.
PIPED_WIDTH = 160


def usd(value: Decimal | int | None, *, dash: str = "-") -> str:
    """``$1,234.57`` at or above $100, ``$0.0123`` at or above a cent, else ``$0.000004``.

    Rounded half-even to the decimals shown; ``None`` is ``dash``.
    """
    if value is None:
        return dash
    amount = Decimal(value)
    magnitude = abs(amount)
    places = 2 if magnitude >= 100 or magnitude == 0 else 4 if magnitude >= Decimal("0.01") else 6
    shown = amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
    sign = "-" if shown < 0 else ""
    return f"{sign}${abs(shown):,.{places}f}"


def pct(value: Decimal | None, *, dash: str = "-") -> str:
    """A percentage with one decimal: ``50.2%``."""
    return dash if value is None else f"{Decimal(value).quantize(Decimal('0.1'), ROUND_HALF_EVEN)}%"


def terminal_width() -> int:
    """``$COLUMNS`` when set (piped or not), else the terminal's width, else ``PIPED_WIDTH``."""
    configured = os.environ.get("COLUMNS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return PIPED_WIDTH


def console(*, stderr: bool = False) -> Console:
    return Console(highlight=False, width=terminal_width(), stderr=stderr, soft_wrap=False)


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: ``key`` into the records, a header, and how to show a value."""

    key: str
    header: str | None = None
    money: bool = False
    left: bool = False

    @property
    def title(self) -> str:
        return self.header if self.header is not None else self.key.replace("_", " ")

    def show(self, value: Any) -> str:
        if value is None:
            return "-"
        if self.money:
            return usd(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)


# box.SIMPLE without edges: one space of padding each side plus a one-space divider.
_PADDING = 3


def _header_width(title: str) -> int:
    # Headers wrap at spaces, so a header needs only its longest word.
    return max((len(word) for word in title.split()), default=0)


def _content_widths(columns: Sequence[Column], cells: Sequence[Sequence[str]]) -> list[int]:
    # Wide enough for every cell and the header's longest word: cells never wrap, headers wrap
    # at spaces.
    return [max([_header_width(col.title), *(len(row[i]) for row in cells)]) for i, col in enumerate(columns)]


def fit_columns(
    columns: Sequence[Column], cells: Sequence[Sequence[str]], width: int, drop_order: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Indexes of the columns to show within ``width``, and the keys dropped (in ``drop_order``,
    then any other column from the right: a column left out of ``drop_order`` must not squeeze the
    others until rich cuts them).

    The first column and money columns are never dropped, even if they alone overflow.
    """
    natural = [w + _PADDING for w in _content_widths(columns, cells)]
    kept = list(range(len(columns)))
    dropped: list[str] = []
    by_key = {col.key: i for i, col in enumerate(columns)}
    unlisted = [col.key for col in reversed(columns) if col.key not in drop_order]
    for key in (*drop_order, *unlisted):
        if sum(natural[i] for i in kept) - 1 <= width:
            break
        index = by_key.get(key)
        if index is None or index == 0 or columns[index].money or index not in kept:
            continue
        kept.remove(index)
        dropped.append(key)
    return kept, dropped


def print_table(
    records: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    title: str,
    *,
    drop_order: Sequence[str] = (),
    empty: str = "nothing to show for this selection",
    footer: dict[str, Any] | None = None,
    out: Console | None = None,
) -> list[str]:
    """Print ``records`` as a table that fits the terminal; returns the keys of dropped columns."""
    out = out or console()
    rows = [[col.show(record.get(col.key)) for col in columns] for record in records]
    foot = [col.show(footer.get(col.key)) if col.key in footer else "" for col in columns] if footer else None
    every = rows + ([foot] if foot else [])
    kept, dropped = fit_columns(columns, every, out.width, drop_order)
    table = Table(title=title, box=box.SIMPLE, show_footer=foot is not None, title_justify="left",
                  show_edge=False, pad_edge=False)
    widths = _content_widths(columns, every)
    for i in kept:
        col = columns[i]
        first = i == 0
        table.add_column(
            col.title,
            justify="left" if first or col.left else "right",
            width=widths[i],
            footer=foot[i] if foot else "",
        )
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    if not records:
        table.caption = empty
    elif dropped:
        titles = {col.key: col.title for col in columns}
        table.caption = f"not shown at {out.width} columns: {', '.join(titles[k] for k in dropped)} (widen COLUMNS or use --format csv/json)"
    # When the key and money columns alone are wider than the terminal, print them whole and let
    # the terminal wrap the lines: rich would otherwise cut them to "$1…".
    needed = sum(widths[i] + _PADDING for i in kept) - 1
    width = out.width
    out.width = max(width, needed)
    try:
        out.print(table)
    finally:
        out.width = width
    out.print()
    return dropped
