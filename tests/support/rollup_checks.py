"""Checks that a ledger's rollups equal its rows: what the rollup tests assert after every kind of
write (meter, threads, a kill -9)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from costguard.ledger.sqlite_rollups import build_rollups, rollups_ready
from costguard.reports import GROUP_BYS, ReportQuery, rows_report
from costguard.rollup_report import rollup_report

_TABLES = ("rollup_calls", "rollup_requests")


def _snapshot(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in _TABLES}


def assert_sqlite_rollups_match_rows(path: str | Path, queries: list[ReportQuery] | None = None) -> None:
    """The rollup tables equal a rebuild from the rows (neither ahead nor behind), and every report
    read from the rollups equals the one read from the rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert rollups_ready(conn)
        kept = _snapshot(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            build_rollups(conn)
            rebuilt = _snapshot(conn)
        finally:
            conn.execute("ROLLBACK")
        assert kept == rebuilt
        for query in queries or [ReportQuery(g) for g in GROUP_BYS]:
            assert rollup_report(conn, query).to_json_dict() == rows_report(conn, query).to_json_dict(), query
    finally:
        conn.close()


def rollup_rows(path: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return _snapshot(conn)
    finally:
        conn.close()
