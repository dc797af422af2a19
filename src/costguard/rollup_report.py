"""Usage reports of a SQLite ledger read from its rollups (``costguard.ledger.sqlite_rollups``).

SQL does the grouping over the per-day rollup rows, so the time and memory of a report depend on
the days, workflows, users, sessions and models in the window, not on the number of model calls.
Only what is per request by contract reads the request rows: the cost of every request (the
histogram), and the by-workflow latency percentiles (nearest rank over every request).

Rollups are per UTC day: a window whose ends are not midnights UTC is answered from the rows
(``costguard.reports.sqlite_report`` decides).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from costguard.ledger.rollups import DAY_MS
from costguard.ledger.sqlite_rollups import unref
from costguard.reports import (
    _CALL_KEYS,
    _REQUEST_KEYS,
    _TOKEN_COLUMNS,
    CALL_COLUMNS,
    INVOKED_AGENT,
    PRICE_KEY_SEPARATOR,
    Percentiles,
    Report,
    ReportQuery,
    _action_rows,
    _add_workflow_picture,
    _call_rows,
    _day_label,
    _lambda_cost_by_workflow,
    _read,
    _read_action_records,
    _request_row,
    _sort_rows,
    _usd,
    _where,
    frame_of,
    nearest_rank,
)
from costguard.usage import nanos_to_usd

__all__ = ["answers_from_rollups", "rollup_report"]

_SUMS = ("model_calls", "tool_calls", *_TOKEN_COLUMNS, "cost_nanos")


def answers_from_rollups(query: ReportQuery) -> bool:
    """Rollups answer windows whose ends fall on UTC midnights (or are open)."""
    return all(ms is None or ms % DAY_MS == 0 for ms in (query.since_ms, query.until_ms))


def _day_where(query: ReportQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of a rollup table for the query's days and workflow."""
    clauses, params = [], []
    if query.since_ms is not None:
        clauses.append("day >= ?")
        params.append(query.since_ms // DAY_MS)
    if query.until_ms is not None:
        clauses.append("day < ?")
        params.append(query.until_ms // DAY_MS)
    if query.workflow is not None:
        clauses.append("workflow = ?")
        params.append(query.workflow)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def rollup_report(conn: sqlite3.Connection, query: ReportQuery) -> Report:
    """The report ``query`` asks for, from the rollups of the ledger behind ``conn``."""
    where, params = _day_where(query)
    group_by = query.group_by
    if group_by == "action":
        rows = _action_report_rows(conn, query, where, params)
    elif group_by in _CALL_KEYS:
        rows = _call_report_rows(conn, group_by, where, params)
    else:
        rows = _request_report_rows(conn, group_by, where, params)
        if group_by == "workflow":
            _add_workflow_picture(
                rows, _percentiles(conn, query), _lambda_cost_by_workflow(conn, query.since_ms, query.until_ms, query.workflow)
            )
    return Report(
        group_by=group_by,
        rows=rows,
        top_sessions=_top_sessions(conn, where, params),
        daily=_daily(conn, where, params),
        cost_per_request=_cost_per_request(conn, query),
        since=query.since_ms,
        until=query.until_ms,
        workflow=query.workflow,
    )


def _request_report_rows(conn: sqlite3.Connection, group_by: str, where: str, params: list[Any]) -> list[dict[str, Any]]:
    key = {"workflow": "workflow", "day": "day", "user": unref("user_ref")}[group_by]
    sql = (
        f"SELECT {key} AS key, COUNT(DISTINCT CASE WHEN requests > 0 THEN session_ref END) AS sessions, "
        f"SUM(requests) AS requests, {', '.join(f'SUM({c}) AS {c}' for c in _SUMS)}, "
        f"SUM(violations) AS violations, SUM(shadow_violations) AS shadow FROM rollup_requests{where} GROUP BY 1 "
        # a key shows when it had a request or a violation in the window
        "HAVING SUM(requests) > 0 OR SUM(violations) > 0 OR SUM(shadow_violations) > 0"
    )
    name = _REQUEST_KEYS[group_by]
    rows = []
    for record in _records(conn, sql, params):
        rows.append(_request_row(name, record["key"], group_by, record, int(record["violations"]), int(record["shadow"])))
    return _sort_rows(rows, name, group_by)


def _call_report_rows(conn: sqlite3.Connection, group_by: str, where: str, params: list[Any]) -> list[dict[str, Any]]:
    dimension = {"model": "model", "agent": "agent", "price-key": "price"}[group_by]
    key = "key" if group_by != "price-key" else f"key || char({ord(PRICE_KEY_SEPARATOR)}) || variant"
    dim_where = (where + " AND " if where else " WHERE ") + "dimension = ?"
    sql = (
        f"SELECT {key} AS key, SUM(requests) AS requests, SUM(model_calls) AS model_calls, "
        f"{', '.join(f'SUM({c}) AS {c}' for c in (*_TOKEN_COLUMNS, 'cost_nanos'))} FROM rollup_calls{dim_where} "
        "GROUP BY 1 HAVING SUM(model_calls) > 0"
    )
    frame = _read(conn, sql, [*params, dimension], CALL_COLUMNS[1:])
    if group_by == "agent":
        frame["key"] = frame["key"].replace("", INVOKED_AGENT)
    return _call_rows(frame if len(frame) else frame_of([], CALL_COLUMNS), group_by)


def _action_report_rows(conn: sqlite3.Connection, query: ReportQuery, where: str, params: list[Any]) -> list[dict[str, Any]]:
    """Action records are few (one per action group invocation): read as rows; the workflow's
    most used model comes from the model rollups."""
    actions = _read_action_records(conn, query.since_ms, query.until_ms, query.workflow)
    dim_where = (where + " AND " if where else " WHERE ") + "dimension = 'model'"
    models = _read(
        conn,
        f"SELECT workflow, key AS base_model_id, SUM(model_calls) AS n FROM rollup_calls{dim_where} GROUP BY 1, 2",
        params,
        ("n",),
    )
    return _action_rows(actions, models, query.input_price_per_million)


def _top_sessions(conn: sqlite3.Connection, where: str, params: list[Any], limit: int = 10) -> list[dict[str, Any]]:
    """The costliest sessions in the window; a session is shown under its own workflow (the one
    it was first recorded in), should it ever have run in several."""
    sql = (
        f"SELECT t.session_id, COALESCE(s.workflow, t.workflow), t.requests, t.model_calls, t.cost FROM ("
        f"SELECT {unref('session_ref')} AS session_id, session_ref, MIN(workflow) AS workflow, SUM(requests) AS requests, "
        f"SUM(model_calls) AS model_calls, SUM(cost_nanos) AS cost FROM rollup_requests{where} GROUP BY session_ref "
        f"HAVING SUM(requests) > 0 ORDER BY cost DESC, session_ref LIMIT {int(limit)}) t "
        "LEFT JOIN sessions s ON s.session_id = t.session_id ORDER BY t.cost DESC, t.session_ref"
    )
    return [
        {"session_id": session, "workflow": workflow, "requests": requests, "model_calls": calls, "cost_usd": _usd(cost)}
        for session, workflow, requests, calls, cost in conn.execute(sql, params)
    ]


def _daily(conn: sqlite3.Connection, where: str, params: list[Any]) -> list[dict[str, Any]]:
    sql = (
        f"SELECT day, workflow, SUM(cost_nanos) FROM rollup_requests{where} GROUP BY day, workflow "
        "HAVING SUM(requests) > 0 ORDER BY day, workflow"
    )
    return [{"day": _day_label(day), "workflow": wf, "cost_usd": _usd(n)} for day, wf, n in conn.execute(sql, params)]


def _cost_per_request(conn: sqlite3.Connection, query: ReportQuery) -> list[Any]:
    """Every request's cost (the histogram's input): per request by contract, so from the rows."""
    where, params = _where("started_ms", query.since_ms, query.until_ms, query.workflow)
    return [nanos_to_usd(n) for (n,) in conn.execute("SELECT cost_nanos FROM requests" + where, params)]


def _percentiles(conn: sqlite3.Connection, query: ReportQuery) -> dict[str, Percentiles]:
    """Nearest-rank p50 and p95 of time to first token and latency per workflow. Two integers a
    request: sorting them here is faster than SQLite's window functions."""
    where, params = _where("started_ms", query.since_ms, query.until_ms, query.workflow)
    ttft: dict[str, list[int]] = {}
    latency: dict[str, list[int]] = {}
    for workflow, first, total in conn.execute("SELECT workflow, ttft_ms, latency_ms FROM requests" + where, params):
        if first is not None:
            ttft.setdefault(workflow, []).append(first)
        if total is not None:
            latency.setdefault(workflow, []).append(total)
    return {
        wf: (
            nearest_rank(ttft.get(wf, []), 50),
            nearest_rank(ttft.get(wf, []), 95),
            nearest_rank(latency.get(wf, []), 50),
            nearest_rank(latency.get(wf, []), 95),
        )
        for wf in {*ttft, *latency}
    }


def _records(conn: sqlite3.Connection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]
