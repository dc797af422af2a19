"""Usage reports over the ledger: aggregate with pandas, render as JSON, CSV, Markdown or HTML.

Money stays exact: integer nano-dollars are summed as int64 and each total is converted once
with :func:`costguard.usage.nanos_to_usd` to a ``Decimal``. Floats are only used to place
pixels in the HTML charts, never for a figure that is printed.
"""

from __future__ import annotations

import calendar
import csv
import html
import io
import json
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from costguard._extras import require_reports
from costguard.display import pct, usd
from costguard.ledger.rollups import PRICE_KEY_SEPARATOR
from costguard.usage import nanos_to_usd

if TYPE_CHECKING:
    import pandas as pd
else:  # the report and reconcile paths need the reports extra
    pd = require_reports("pandas")

__all__ = [
    "GROUP_BYS",
    "FORMATS",
    "Report",
    "usage_report",
    "ReportQuery",
    "build_report",
    "render",
    "table_columns",
    "is_money_column",
]

GROUP_BYS = ("workflow", "day", "model", "user", "agent", "action", "price-key")
FORMATS = ("json", "csv", "markdown", "html")
INVOKED_AGENT = "(invoked agent)"

_MS_PER_DAY = 86_400_000
_EPOCH = date(1970, 1, 1)

_REQUEST_KEYS = {"workflow": "workflow", "day": "day", "user": "user"}
_CALL_KEYS = {"model": "model", "agent": "agent", "price-key": "price_key"}
_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
_REQUEST_ROW_COLUMNS = (
    "sessions",
    "requests",
    "model_calls",
    "tool_calls",
    *_TOKEN_COLUMNS,
    "cost_usd",
    "violations",
    "shadow_violations",
)
_CALL_ROW_COLUMNS = ("requests", "model_calls", *_TOKEN_COLUMNS, "cost_usd")
# The by-workflow report's own picture: action group Lambda spend (besides the model spend in
# cost_usd) and the latency split's percentiles over the window's requests.
_PERCENTILE_COLUMNS = ("ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms")
_WORKFLOW_ROW_COLUMNS = (*_REQUEST_ROW_COLUMNS, "lambda_cost_usd", *_PERCENTILE_COLUMNS)
_ACTION_ROW_COLUMNS = (
    "workflow",
    "invocations",
    "bytes_before",
    "bytes_after",
    "bytes_saved",
    "max_bytes_before",
    "trimmed",
    "replaced",
    "replayed",
    "fields_dropped",
    "items_dropped",
    "est_tokens_saved",
    "est_input_usd_saved",
    "lambda_cost_usd",
)
# Not summable across rows: a name, a maximum, percentiles.
_UNSUMMED = frozenset({"sessions", "workflow", "model", "max_bytes_before", *_PERCENTILE_COLUMNS})
_DECIMAL_SUMS = frozenset({"cost_usd", "est_input_usd_saved", "lambda_cost_usd"})
# Bedrock tokenisers average roughly 4 bytes of English/JSON per token; the saving is an estimate.
BYTES_PER_TOKEN = 4


@dataclass(slots=True)
class Report:
    """An aggregated usage report. ``since``/``until`` are epoch ms (``until`` exclusive)."""

    group_by: str
    rows: list[dict[str, Any]]
    top_sessions: list[dict[str, Any]]
    daily: list[dict[str, Any]]
    cost_per_request: list[Decimal]
    since: int | None
    until: int | None
    workflow: str | None = None
    generated_ms: int = field(default_factory=lambda: int(datetime.now(UTC).timestamp() * 1000))
    extra_columns: list[str] = field(default_factory=list)  # e.g. budget use, not summable

    def totals(self) -> dict[str, Any]:
        """Column totals over ``rows`` (distinct counts such as sessions are not summable: omitted)."""
        out: dict[str, Any] = {}
        for col in table_columns(self)[1:]:
            if col in self.extra_columns or col in _UNSUMMED:
                continue
            if col == "sessions" or (col == "requests" and self.group_by in _CALL_KEYS):
                continue
            if col in _DECIMAL_SUMS:
                out[col] = sum((r[col] for r in self.rows), Decimal(0))
            else:
                out[col] = sum(int(r[col]) for r in self.rows)
        return out

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "workflow": self.workflow,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "since_ms": self.since,
            "until_ms": self.until,
            "columns": table_columns(self),
            "rows": [_jsonable(r) for r in self.rows],
            "totals": _jsonable(self.totals()),
            "top_sessions": [_jsonable(r) for r in self.top_sessions],
            "daily": [_jsonable(r) for r in self.daily],
            "cost_per_request": [_exact(c) for c in self.cost_per_request],
        }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _exact(value: Decimal) -> str:
    """An exact plain-notation string: ``Decimal("3E-9")`` -> ``"0.000000003"``, ``1E+1`` -> ``"10"``."""
    return f"{value:f}"


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (_exact(v) if isinstance(v, Decimal) else v) for k, v in row.items()}


def _day_label(day_number: int) -> str:
    return (_EPOCH + timedelta(days=int(day_number))).isoformat()


#: Money columns whose names do not end in ``_usd``.
_OTHER_MONEY_COLUMNS = frozenset({"est_input_usd_saved"})


def is_money_column(key: str) -> bool:
    """Money columns end in ``_usd`` (or are listed above): never dropped from a table, always
    shown as dollars."""
    return key.endswith("_usd") or key in _OTHER_MONEY_COLUMNS


def table_columns(report: Report) -> list[str]:
    """Row keys in display order: the group key first, then the measures."""
    if report.group_by == "action":
        return ["action", *_ACTION_ROW_COLUMNS, *report.extra_columns]
    if report.group_by == "price-key":
        return ["price_key", "model", *_CALL_ROW_COLUMNS, *report.extra_columns]
    if report.group_by in _CALL_KEYS:
        return [_CALL_KEYS[report.group_by], *_CALL_ROW_COLUMNS, *report.extra_columns]
    if report.group_by == "workflow":
        return ["workflow", *_WORKFLOW_ROW_COLUMNS, *report.extra_columns]
    return [_REQUEST_KEYS[report.group_by], *_REQUEST_ROW_COLUMNS, *report.extra_columns]


def attach_budget_use(report: Report, monthly_budgets: dict[str, Decimal], month_spent: dict[str, Decimal]) -> None:
    """Add this month's budget and the share of it spent to a by-workflow report's rows.

    ``month_spent`` comes from the ledger's month counters, not from the report's window: "budget
    used" means the current month whatever dates the report covers.
    """
    if report.group_by != "workflow":
        return
    for row in report.rows:
        budget = monthly_budgets.get(row["workflow"])
        spent = month_spent.get(row["workflow"], Decimal(0))
        row["monthly_budget_usd"] = budget
        row["budget_used_pct"] = (
            (100 * spent / budget).quantize(Decimal("0.1"), ROUND_HALF_EVEN) if budget else None
        )
    report.extra_columns = ["monthly_budget_usd", "budget_used_pct"]


# -- querying -----------------------------------------------------------------------------------


def _where(time_col: str, since_ms: int | None, until_ms: int | None, workflow: str | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if since_ms is not None:
        clauses.append(f"{time_col} >= ?")
        params.append(int(since_ms))
    if until_ms is not None:
        clauses.append(f"{time_col} < ?")
        params.append(int(until_ms))
    if workflow is not None:
        clauses.append("workflow = ?")
        params.append(workflow)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _read(conn: sqlite3.Connection, sql: str, params: list[Any], ints: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_sql_query(sql, conn, params=params)
    for col in ints:
        frame[col] = frame[col].fillna(0).astype("int64") if len(frame) else frame[col].astype("int64")
    return frame


def _usd(nanos: Any) -> Decimal:
    return nanos_to_usd(int(nanos))


def _read_requests(
    conn: sqlite3.Connection, since_ms: int | None, until_ms: int | None, workflow: str | None
) -> pd.DataFrame:
    where, params = _where("started_ms", since_ms, until_ms, workflow)
    ints = ("started_ms", "model_calls", "tool_calls", *_TOKEN_COLUMNS, "cost_nanos", "latency_ms")
    sql = (
        "SELECT request_id, workflow, session_id, user_id, started_ms, model_calls, tool_calls, "
        "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, latency_ms, "
        "ttft_ms FROM requests" + where
    )
    return _read(conn, sql, params, ints)


def _read_violations(
    conn: sqlite3.Connection, since_ms: int | None, until_ms: int | None, workflow: str | None
) -> pd.DataFrame:
    where, params = _where("v.ts_ms", since_ms, until_ms, None)
    if workflow is not None:
        where += (" AND " if where else " WHERE ") + "v.workflow = ?"
        params.append(workflow)
    sql = (
        "SELECT v.workflow AS workflow, v.ts_ms AS ts_ms, v.enforced AS enforced, r.user_id AS user_id "
        "FROM violations v LEFT JOIN requests r ON r.request_id = v.request_id" + where
    )
    return _read(conn, sql, params, ("ts_ms", "enforced"))


def _violation_counts(frame: pd.DataFrame, group_by: str) -> dict[Any, tuple[int, int]]:
    """{key: (enforced, shadow)} for the violations in the window, keyed like the request rows."""
    if frame.empty:
        return {}
    frame = frame.copy()
    if group_by == "day":
        frame["key"] = frame["ts_ms"] // _MS_PER_DAY
    elif group_by == "user":
        frame["key"] = frame["user_id"]
    else:
        frame["key"] = frame["workflow"]
    frame["shadow"] = (frame["enforced"] == 0).astype("int64")
    frame["enforced"] = (frame["enforced"] != 0).astype("int64")
    grouped = frame.groupby("key", dropna=False)[["enforced", "shadow"]].sum()
    return {_key(k): (int(e), int(s)) for k, (e, s) in zip(grouped.index, grouped.to_numpy(), strict=True)}


def _key(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _request_rows(frame: pd.DataFrame, group_by: str, violations: dict[Any, tuple[int, int]]) -> list[dict[str, Any]]:
    source = {"workflow": "workflow", "day": "day", "user": "user_id"}[group_by]
    name = _REQUEST_KEYS[group_by]
    rows: list[dict[str, Any]] = []
    seen: set[Any] = set()
    if not frame.empty:
        sums = ["model_calls", "tool_calls", *_TOKEN_COLUMNS, "cost_nanos"]
        grouped = frame.groupby(source, dropna=False, sort=False)
        agg = grouped[sums].sum()
        agg["sessions"] = grouped["session_id"].nunique()
        agg["requests"] = grouped.size()
        for key, rec in zip(agg.index, agg.to_dict("records"), strict=True):
            k = _key(key)
            seen.add(k)
            enforced, shadow = violations.get(k, (0, 0))
            rows.append(_request_row(name, k, group_by, rec, enforced, shadow))
    # Violations with no request in the window (e.g. refused before any call) still show up.
    for k, (enforced, shadow) in violations.items():
        if k not in seen:
            rows.append(_request_row(name, k, group_by, {}, enforced, shadow))
    return _sort_rows(rows, name, group_by)


def _request_row(
    name: str, key: Any, group_by: str, rec: dict[str, Any], enforced: int, shadow: int
) -> dict[str, Any]:
    row: dict[str, Any] = {name: _day_label(key) if group_by == "day" else key}
    row["sessions"] = int(rec.get("sessions", 0))
    row["requests"] = int(rec.get("requests", 0))
    row["model_calls"] = int(rec.get("model_calls", 0))
    row["tool_calls"] = int(rec.get("tool_calls", 0))
    for col in _TOKEN_COLUMNS:
        row[col] = int(rec.get(col, 0))
    row["cost_usd"] = _usd(rec.get("cost_nanos", 0))
    row["violations"] = enforced
    row["shadow_violations"] = shadow
    row["_nanos"] = int(rec.get("cost_nanos", 0))
    return row


def _sort_rows(rows: list[dict[str, Any]], name: str, group_by: str) -> list[dict[str, Any]]:
    if group_by == "day":
        rows.sort(key=lambda r: r[name])
    else:
        rows.sort(key=lambda r: (-r["_nanos"], "" if r[name] is None else str(r[name])))
    for r in rows:
        del r["_nanos"]
    return rows


def _read_calls(
    conn: sqlite3.Connection,
    group_by: str,
    since_ms: int | None,
    until_ms: int | None,
    workflow: str | None,
) -> pd.DataFrame:
    """One row per model, agent or price key: requests, model calls, tokens and cost (``CALL_COLUMNS``)."""
    where, params = _where("ts_ms", since_ms, until_ms, workflow)
    # A call made by the invoked agent itself names no collaborator: label it with the agent id
    # the request was made to.
    col = {
        "model": "base_model_id",
        "price-key": "base_model_id || char(31) || COALESCE(price_key, '')",
        "agent": "COALESCE(agent, (SELECT r.agent_id FROM requests r WHERE r.request_id = model_calls.request_id))",
    }[group_by]
    # SQLite folds the (up to millions of) calls to one row per (key, request) in C; pandas then
    # aggregates those partials. Integer SUM in SQLite is exact (it errors on int64 overflow).
    sql = (
        f"SELECT {col} AS key, request_id, COUNT(*) AS model_calls, SUM(input_tokens) AS input_tokens, "
        "SUM(output_tokens) AS output_tokens, SUM(cache_read_tokens) AS cache_read_tokens, "
        "SUM(cache_write_tokens) AS cache_write_tokens, SUM(cost_nanos) AS cost_nanos FROM model_calls"
        + where
        + " GROUP BY request_id, key"
    )
    frame = _read(conn, sql, params, ("model_calls", *_TOKEN_COLUMNS, "cost_nanos"))
    if frame.empty:
        return pd.DataFrame(columns=list(CALL_COLUMNS))
    if group_by == "agent":
        # None and "(invoked agent)" are one key; count each request once under it.
        frame["key"] = frame["key"].fillna(INVOKED_AGENT)
    grouped = frame.groupby("key", dropna=False, sort=False)
    agg = grouped[["model_calls", *_TOKEN_COLUMNS, "cost_nanos"]].sum()
    agg["requests"] = grouped["request_id"].nunique()
    return agg.reset_index()


def _call_rows(agg: pd.DataFrame, group_by: str) -> list[dict[str, Any]]:
    name = _CALL_KEYS[group_by]
    rows: list[dict[str, Any]] = []
    for rec in agg.to_dict("records"):
        key = rec["key"]
        row: dict[str, Any] = {name: _key(key)}
        if group_by == "price-key":
            # model + separator + the label ("" for a call priced before price keys were kept)
            model, _, label = str(key).partition(PRICE_KEY_SEPARATOR)
            row = {name: label or None, "model": model}
        row.update(requests=int(rec["requests"]), model_calls=int(rec["model_calls"]))
        for c in _TOKEN_COLUMNS:
            row[c] = int(rec[c])
        row["cost_usd"] = _usd(rec["cost_nanos"])
        row["_nanos"] = int(rec["cost_nanos"])
        rows.append(row)
    if group_by == "price-key":
        rows.sort(key=lambda r: str(r["model"]))  # ties of cost and label: by model (stable below)
    return _sort_rows(rows, name, group_by)


def _top_sessions(frame: pd.DataFrame, limit: int = 10) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    grouped = frame.groupby("session_id", sort=False)
    agg = grouped[["model_calls", "cost_nanos"]].sum()
    agg["requests"] = grouped.size()
    agg["workflow"] = grouped["workflow"].first()
    agg = agg.reset_index().sort_values(["cost_nanos", "session_id"], ascending=[False, True]).head(limit)
    return [
        {
            "session_id": str(r["session_id"]),
            "workflow": str(r["workflow"]),
            "requests": int(r["requests"]),
            "model_calls": int(r["model_calls"]),
            "cost_usd": _usd(r["cost_nanos"]),
        }
        for r in agg.to_dict("records")
    ]


def _daily(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    agg = frame.groupby(["day", "workflow"], sort=True)["cost_nanos"].sum()
    return [
        {"day": _day_label(day), "workflow": str(wf), "cost_usd": _usd(n)}
        for (day, wf), n in agg.items()
    ]


def _read_action_records(
    conn: sqlite3.Connection, since_ms: int | None, until_ms: int | None, workflow: str | None
) -> pd.DataFrame:
    """The action guard's records in the window."""
    where, params = _where("ts_ms", since_ms, until_ms, workflow)
    return _read(
        conn,
        "SELECT workflow, action, bytes_before, bytes_after, fields_dropped, items_dropped, outcome, "
        f"cost_nanos FROM actions{where}",
        params,
        ("bytes_before", "bytes_after", "fields_dropped", "items_dropped", "cost_nanos"),
    )


def _read_actions(
    conn: sqlite3.Connection, since_ms: int | None, until_ms: int | None, workflow: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The action records in the window, and model calls per (workflow, base model)."""
    where, params = _where("ts_ms", since_ms, until_ms, workflow)
    models = _read(
        conn,
        f"SELECT workflow, base_model_id, COUNT(*) AS n FROM model_calls{where} GROUP BY workflow, base_model_id",
        params,
        ("n",),
    )
    return _read_action_records(conn, since_ms, until_ms, workflow), models


def _action_rows(
    frame: pd.DataFrame, models: pd.DataFrame, input_price_per_million: Callable[[str], Decimal] | None
) -> list[dict[str, Any]]:
    """Per (workflow, action): sizes before and after the guard, and what the trim saved.

    The dollar figure prices the saved bytes once, as input tokens of the workflow's most used
    model in the window: the next model call re-reads the response at least once, and every later
    step of the loop again, so it is a floor, not the full saving.
    """
    if frame.empty:
        return []
    frame = frame.copy()
    main_model: dict[str, str] = {}
    for rec in models.sort_values(["n", "base_model_id"], ascending=[False, True]).to_dict("records"):
        main_model.setdefault(str(rec["workflow"]), str(rec["base_model_id"]))
    for outcome in ("trimmed", "replaced", "replayed"):
        frame[outcome] = (frame["outcome"] == outcome).astype("int64")
    grouped = frame.groupby(["workflow", "action"], sort=False)
    if "cost_nanos" not in frame:
        frame["cost_nanos"] = 0
    agg = grouped[["bytes_before", "bytes_after", "fields_dropped", "items_dropped", "trimmed", "replaced", "replayed",
                   "cost_nanos"]].sum()
    agg["invocations"] = grouped.size()
    agg["max_bytes_before"] = grouped["bytes_before"].max()
    rows: list[dict[str, Any]] = []
    for rec in agg.reset_index().to_dict("records"):
        saved = max(0, int(rec["bytes_before"]) - int(rec["bytes_after"]))
        tokens = saved // BYTES_PER_TOKEN
        model = main_model.get(str(rec["workflow"]))
        usd: Decimal | None = None
        if input_price_per_million is not None and model is not None:
            usd = (Decimal(tokens) * input_price_per_million(model) / 1_000_000).quantize(Decimal("0.000001"))
        row: dict[str, Any] = {"action": str(rec["action"]), "workflow": str(rec["workflow"])}
        for column in ("invocations", "bytes_before", "bytes_after", "max_bytes_before", "trimmed", "replaced",
                       "replayed", "fields_dropped", "items_dropped"):
            row[column] = int(rec[column])
        row["bytes_saved"] = saved
        row["est_tokens_saved"] = tokens
        row["est_input_usd_saved"] = usd if usd is not None else Decimal(0)
        row["lambda_cost_usd"] = _usd(rec["cost_nanos"])
        rows.append(row)
    # The verbose tools first: that is the question this report answers.
    rows.sort(key=lambda r: (-r["bytes_before"], r["workflow"], r["action"]))
    return rows


def _lambda_cost_by_workflow(
    conn: sqlite3.Connection, since_ms: int | None, until_ms: int | None, workflow: str | None
) -> dict[str, int]:
    where, params = _where("ts_ms", since_ms, until_ms, workflow)
    sql = f"SELECT workflow, SUM(cost_nanos) FROM actions{where} GROUP BY workflow"
    return {str(name): int(nanos or 0) for name, nanos in conn.execute(sql, params).fetchall()}


def nearest_rank(values: list[int], pct: int) -> int | None:
    """The ``pct``-th percentile by nearest rank: the smallest value with pct% of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct * len(ordered) / 100) - 1)]


Percentiles = tuple[int | None, int | None, int | None, int | None]  # ttft p50, p95, latency p50, p95


def _frame_percentiles(requests: pd.DataFrame) -> dict[str, Percentiles]:
    """Nearest-rank percentiles of each workflow's requests (``_PERCENTILE_COLUMNS``)."""
    out: dict[str, Percentiles] = {}
    for name in requests["workflow"].unique().tolist() if len(requests) else []:
        mine = requests[requests["workflow"] == name]
        ttft = [int(v) for v in mine["ttft_ms"].dropna().tolist()] if "ttft_ms" in mine else []
        latency = [int(v) for v in mine["latency_ms"].dropna().tolist()] if "latency_ms" in mine else []
        out[str(name)] = (nearest_rank(ttft, 50), nearest_rank(ttft, 95), nearest_rank(latency, 50), nearest_rank(latency, 95))
    return out


def _add_workflow_picture(rows: list[dict[str, Any]], percentiles: dict[str, Percentiles], lambda_nanos: dict[str, int]) -> None:
    """Lambda spend and latency percentiles on the by-workflow rows (a row for Lambda-only spend)."""
    by_name = {row["workflow"]: row for row in rows}
    for name in lambda_nanos:
        if name not in by_name:
            by_name[name] = _request_row("workflow", name, "workflow", {}, 0, 0)
            by_name[name].pop("_nanos", None)
            rows.append(by_name[name])
    for name, row in by_name.items():
        row["lambda_cost_usd"] = _usd(lambda_nanos.get(name, 0))
        row["ttft_p50_ms"], row["ttft_p95_ms"], row["latency_p50_ms"], row["latency_p95_ms"] = percentiles.get(
            name, (None, None, None, None)
        )


@dataclass(slots=True)
class UsageFrames:
    """What a ledger hands the report builder: one path from rows to a ``Report`` for every backend.

    ``requests``: one row per request started in the window (``REQUEST_COLUMNS``).
    ``violations``: workflow, ts_ms, enforced (0/1), user_id (of the violating request, if known).
    ``calls``: for model and agent reports, one row per key (``CALL_COLUMNS``).
    ``actions`` / ``models``: for the action report, the action records and model calls per
    (workflow, base_model_id) as ``n``.
    """

    requests: pd.DataFrame
    violations: pd.DataFrame
    calls: pd.DataFrame | None = None
    actions: pd.DataFrame | None = None
    models: pd.DataFrame | None = None
    #: for the workflow report: action group Lambda spend per workflow, in nano-dollars
    lambda_nanos: dict[str, int] | None = None


REQUEST_COLUMNS = (
    "request_id", "workflow", "session_id", "user_id", "started_ms", "model_calls", "tool_calls",
    *_TOKEN_COLUMNS, "cost_nanos",
)
CALL_COLUMNS = ("key", "requests", "model_calls", *_TOKEN_COLUMNS, "cost_nanos")
_REQUEST_INTS = ("started_ms", "model_calls", "tool_calls", *_TOKEN_COLUMNS, "cost_nanos")


def frame_of(records: list[dict[str, Any]], columns: tuple[str, ...], ints: tuple[str, ...] = ()) -> pd.DataFrame:
    """A frame with exactly ``columns`` (int64 where listed) from plain records, empty or not."""
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    for col in ints:
        frame[col] = frame[col].fillna(0).astype("int64")
    return frame


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """What a report covers: ``[since_ms, until_ms)`` (epoch ms, UTC; None: unbounded), one
    workflow or all, the grouping, and (action report) a base model's input price per 1M tokens.

    ``group_by`` is ``workflow``, ``day`` (UTC date of the request start), ``user`` (all three
    over requests), ``model`` (base model id) or ``agent`` (over model calls, filtered on the call
    time; the invoked agent's own steps under its agent id), or ``action`` (the action guard's
    records: which action group responses are verbose and what trimming saved).
    """

    group_by: str = "workflow"
    since_ms: int | None = None
    until_ms: int | None = None
    workflow: str | None = None
    input_price_per_million: Callable[[str], Decimal] | None = None

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BYS:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_BYS)}, not {self.group_by!r}")


def build_report(frames: UsageFrames, query: ReportQuery) -> Report:
    """Aggregate a ledger's rows into a ``Report``: the one path every backend's rows take."""
    group_by = query.group_by
    requests = frames.requests
    for col in _REQUEST_INTS:
        requests[col] = requests[col].astype("int64")
    requests["day"] = requests["started_ms"] // _MS_PER_DAY
    if group_by == "action":
        empty = pd.DataFrame(columns=["workflow", "base_model_id", "n"])
        rows = _action_rows(frames.actions if frames.actions is not None else empty,
                            frames.models if frames.models is not None else empty, query.input_price_per_million)
    elif group_by in _CALL_KEYS:
        rows = _call_rows(frames.calls if frames.calls is not None else frame_of([], CALL_COLUMNS), group_by)
    else:
        rows = _request_rows(requests, group_by, _violation_counts(frames.violations, group_by))
        if group_by == "workflow":
            _add_workflow_picture(rows, _frame_percentiles(requests), frames.lambda_nanos or {})
    return Report(
        group_by=group_by,
        rows=rows,
        top_sessions=_top_sessions(requests),
        daily=_daily(requests),
        cost_per_request=[nanos_to_usd(int(n)) for n in requests["cost_nanos"].tolist()],
        since=query.since_ms,
        until=query.until_ms,
        workflow=query.workflow,
    )


def sqlite_report(conn: sqlite3.Connection, query: ReportQuery) -> Report:
    """The report of the SQLite ledger behind ``conn``: from its rollups when they answer the
    query (``costguard.rollup_report``), else from its rows by SQL."""
    from costguard.ledger.sqlite_rollups import rollups_ready
    from costguard.rollup_report import answers_from_rollups, rollup_report

    if answers_from_rollups(query) and rollups_ready(conn):
        return rollup_report(conn, query)
    return rows_report(conn, query)


def rows_report(conn: sqlite3.Connection, query: ReportQuery) -> Report:
    """The report of the SQLite ledger behind ``conn``, its rows read by SQL (the reference the
    rollups are checked against, and the path for windows that do not end at UTC midnights)."""
    since_ms, until_ms, workflow, group_by = query.since_ms, query.until_ms, query.workflow, query.group_by
    frames = UsageFrames(
        requests=_read_requests(conn, since_ms, until_ms, workflow),
        violations=_read_violations(conn, since_ms, until_ms, workflow) if group_by in _REQUEST_KEYS else pd.DataFrame(),
    )
    if group_by in _CALL_KEYS:
        frames.calls = _read_calls(conn, group_by, since_ms, until_ms, workflow)
    if group_by == "action":
        frames.actions, frames.models = _read_actions(conn, since_ms, until_ms, workflow)
    if group_by == "workflow":
        frames.lambda_nanos = _lambda_cost_by_workflow(conn, since_ms, until_ms, workflow)
    return build_report(frames, query)


def usage_report(conn: sqlite3.Connection, **options: Any) -> Report:
    """``sqlite_report`` with the ``ReportQuery`` fields as keywords."""
    return sqlite_report(conn, ReportQuery(**options))


# -- rendering ----------------------------------------------------------------------------------


def render(report: Report, fmt: str, *, budgets: dict[str, Decimal] | None = None) -> str:
    """The report as ``json``, ``csv``, ``markdown`` or ``html`` text.

    ``budgets`` (workflow -> monthly budget in USD) adds budget burn charts to the HTML page.
    """
    if fmt == "json":
        return json.dumps(report.to_json_dict(), indent=2) + "\n"
    if fmt == "csv":
        return _render_csv(report)
    if fmt == "markdown":
        return _render_markdown(report)
    if fmt == "html":
        return _render_html(report, budgets)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return _exact(value)
    return str(value)


def _render_csv(report: Report) -> str:
    out = io.StringIO()
    cols = table_columns(report)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in report.rows:
        writer.writerow([_cell(row[c]) for c in cols])
    return out.getvalue()


def _md(value: Any) -> str:
    text = "(none)" if value is None else _cell(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_cell(column: str, value: Any) -> str:
    """People read Markdown: money as dollars, shares as percentages (CSV and JSON stay exact)."""
    if value is not None and is_money_column(column):
        return _md(usd(value))
    if value is not None and column.endswith("_pct"):
        return _md(pct(value))
    return _md(value)


def _title(report: Report) -> str:
    span = f"{_iso(report.since) or 'beginning'} to {_iso(report.until) or 'now'}"
    wf = f", workflow {report.workflow}" if report.workflow else ""
    return f"costguard usage by {report.group_by} ({span}{wf})"


def _render_markdown(report: Report) -> str:
    cols = table_columns(report)
    lines = [f"# {_md(_title(report))}", "", "| " + " | ".join(cols) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|")
    for row in report.rows:
        lines.append("| " + " | ".join(_md_cell(c, row[c]) for c in cols) + " |")
    if not report.rows:
        lines.append("| " + " | ".join(["(no usage)"] + [""] * (len(cols) - 1)) + " |")
    if report.top_sessions:
        lines += ["", "## Top sessions by cost", "", "| session_id | workflow | requests | model_calls | cost_usd |"]
        lines.append("|---|---|---:|---:|---:|")
        for s in report.top_sessions:
            lines.append(
                f"| {_md(s['session_id'])} | {_md(s['workflow'])} | {s['requests']} | {s['model_calls']} | {_md(usd(s['cost_usd']))} |"
            )
    return "\n".join(lines) + "\n"


# -- HTML ---------------------------------------------------------------------------------------

_PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#64748b")
_MAX_SERIES = 8
_OTHER = "(other)"
_E = html.escape


def _money(value: Decimal) -> str:
    return usd(value)


def _axis(value: float, *, integer: bool = False) -> list[float]:
    """Round axis ticks from 0 to at least ``value``: a 1/2/5 x 10^k step, at most 5 intervals."""
    if value <= 0:
        return [0.0, 1.0]
    raw = value / 5
    exp = 10.0 ** math.floor(math.log10(raw))
    step = next(m * exp for m in (1, 2, 5, 10) if m * exp >= raw * (1 - 1e-12))
    if integer:
        step = max(1.0, round(step))
    intervals = max(1, math.ceil(value / step - 1e-9))
    return [step * i for i in range(intervals + 1)]


def _tick_label(value: float, step: float, money: bool) -> str:
    if not money:
        return f"{value:,.0f}"
    places = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"${value:,.{places}f}"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
main{max-width:1360px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 10px} h3{font-size:14px;margin:16px 0 6px}
.sub{color:#64748b;font-size:13px;margin-bottom:18px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 16px;min-width:150px}
.card .v{font-size:22px;font-weight:600} .card .l{color:#64748b;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.panel{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:14px;margin-top:10px}
.scroll{overflow-x:auto}
table{border-collapse:separate;border-spacing:0;width:100%;font-size:13px}
th,td{padding:6px 8px;border-bottom:1px solid #e2e8f0;text-align:right}
td{white-space:nowrap;font-variant-numeric:tabular-nums}
th{white-space:normal;vertical-align:bottom;overflow-wrap:normal;word-break:normal;background:#f1f5f9;font-weight:600}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;z-index:1;white-space:normal;overflow-wrap:break-word}
td:first-child{background:#fff} tfoot td{font-weight:600;border-top:2px solid #cbd5e1}
@media (max-width:900px){main{padding:12px}}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin-top:6px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
.empty{color:#64748b;font-style:italic}
svg text{font-family:inherit;font-size:11px;fill:#475569}
"""


def _legend(items: list[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><span class="sw" style="background:{c}"></span>{_E(n)}</span>' for n, c in items)
        + "</div>"
    )


def _frame(width: int, height: int, left: int, bottom: int, top: int, ticks: list[float], y_label: str, x_label: str) -> list[str]:
    """Axes, horizontal grid lines at the round ``ticks`` and axis titles."""
    plot_h = height - bottom - top
    y_max = ticks[-1]
    money = "USD" in y_label
    step = ticks[1] - ticks[0] if len(ticks) > 1 else y_max
    parts = [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#94a3b8"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#94a3b8"/>',
    ]
    for v in ticks:
        y = height - bottom - plot_h * v / y_max
        if v:
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_E(_tick_label(v, step, money))}</text>')
    parts.append(
        f'<text transform="translate(14,{top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">{_E(y_label)}</text>'
    )
    parts.append(f'<text x="{left + (width - left) / 2:.0f}" y="{height - 4}" text-anchor="middle">{_E(x_label)}</text>')
    return parts


def _svg(width: int, height: int, label: str, parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{_E(label)}">' + "".join(parts) + "</svg>"
    )


def _daily_chart(report: Report) -> str:
    if not report.daily:
        return '<p class="empty">No spend in this period.</p>'
    by_wf: dict[str, Decimal] = {}
    for d in report.daily:
        by_wf[d["workflow"]] = by_wf.get(d["workflow"], Decimal(0)) + d["cost_usd"]
    ranked = sorted(by_wf, key=lambda w: (-by_wf[w], w))
    shown = ranked[:_MAX_SERIES]
    series = shown + ([_OTHER] if len(ranked) > _MAX_SERIES else [])
    colors = {w: _PALETTE[i % len(_PALETTE)] for i, w in enumerate(series)}
    first = date.fromisoformat(report.daily[0]["day"])
    last = date.fromisoformat(report.daily[-1]["day"])
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    stack: dict[date, dict[str, Decimal]] = {d: {} for d in days}
    for d in report.daily:
        wf = d["workflow"] if d["workflow"] in colors else _OTHER
        cell = stack[date.fromisoformat(d["day"])]
        cell[wf] = cell.get(wf, Decimal(0)) + d["cost_usd"]
    ticks = _axis(float(max(sum(c.values(), Decimal(0)) for c in stack.values())))
    y_max = ticks[-1]
    width, height, left, bottom, top = 960, 300, 70, 44, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    parts = _frame(width, height, left, bottom, top, ticks, "spend (USD)", "day (UTC)")
    slot = plot_w / len(days)
    bar = max(1.0, slot * 0.75)
    label_every = max(1, len(days) // 12)
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar) / 2
        base = float(height - bottom)
        for wf in series:
            amount = stack[day].get(wf)
            if not amount:
                continue
            h = float(amount) / y_max * plot_h
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colors[wf]}">'
                f"<title>{_E(day.isoformat())} {_E(wf)}: {_E(_money(amount))}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle">{_E(day.strftime("%b %d"))}</text>'
            )
    return _svg(width, height, "spend per day per workflow", parts) + _legend([(w, colors[w]) for w in series])


def _burn_charts(report: Report, budgets: dict[str, Decimal]) -> str:
    """Cumulative spend across the month vs the monthly budget, one chart per budgeted workflow."""
    if report.daily:
        month_day = date.fromisoformat(report.daily[-1]["day"])
    elif report.until is not None:
        month_day = (datetime.fromtimestamp(report.until / 1000, UTC) - timedelta(milliseconds=1)).date()
    else:
        month_day = datetime.now(UTC).date()
    year, month = month_day.year, month_day.month
    n_days = calendar.monthrange(year, month)[1]
    out: list[str] = []
    for wf in sorted(budgets):
        budget = Decimal(budgets[wf])
        per_day = [Decimal(0)] * n_days
        for d in report.daily:
            day = date.fromisoformat(d["day"])
            if d["workflow"] == wf and day.year == year and day.month == month:
                per_day[day.day - 1] += d["cost_usd"]
        last_day = max((i for i, v in enumerate(per_day) if v), default=-1)
        cumulative: list[Decimal] = []
        running = Decimal(0)
        for v in per_day[: max(last_day, month_day.day - 1) + 1]:
            running += v
            cumulative.append(running)
        spent = cumulative[-1] if cumulative else Decimal(0)
        ticks = _axis(float(max(budget, spent)) * 1.05)
        y_max = ticks[-1]
        width, height, left, bottom, top = 960, 240, 70, 44, 12
        plot_w, plot_h = width - left - 10, height - bottom - top
        parts = _frame(width, height, left, bottom, top, ticks, "cumulative spend (USD)", f"day of {month_day:%B %Y} (UTC)")

        def px(i: int, value: Decimal | float, *, pw: int = plot_w, ph: int = plot_h) -> tuple[float, float]:
            return left + pw * (i + 1) / n_days, height - bottom - float(value) / y_max * ph

        by = px(0, budget)[1]
        parts.append(f'<line x1="{left}" y1="{by:.1f}" x2="{width - 10}" y2="{by:.1f}" stroke="#dc2626" stroke-dasharray="6 4" stroke-width="2"/>')
        parts.append(f'<text x="{width - 14}" y="{by - 5:.1f}" text-anchor="end" style="fill:#dc2626">budget {_E(_money(budget))}</text>')
        ideal_end = px(n_days - 1, budget)
        parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{ideal_end[0]:.1f}" y2="{ideal_end[1]:.1f}" stroke="#94a3b8" stroke-dasharray="2 4"/>')
        if cumulative:
            pts = [(float(left), float(height - bottom))] + [px(i, v) for i, v in enumerate(cumulative)]
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            color = "#dc2626" if spent > budget else "#2563eb"
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
            lx, ly = pts[-1]
            parts.append(f'<circle cx="{lx:.1f}" cy="{ly:.1f}" r="4" fill="{color}"><title>{_E(_money(spent))}</title></circle>')
        for i in range(0, n_days, max(1, n_days // 10)):
            x = px(i, 0)[0]
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 14}" text-anchor="middle">{i + 1}</text>')
        share = f"{(spent / budget * 100):.0f}%" if budget > 0 else "n/a"
        out.append(
            f"<h3>{_E(wf)} — {_E(_money(spent))} of {_E(_money(budget))} ({_E(share)})</h3>"
            + _svg(width, height, f"budget burn for {wf}", parts)
            + _legend([("cumulative spend", "#2563eb"), ("monthly budget", "#dc2626"), ("even burn", "#94a3b8")])
        )
    return "".join(out)


def _histogram(report: Report, bins: int = 20) -> str:
    costs = report.cost_per_request
    if not costs:
        return '<p class="empty">No requests in this period.</p>'
    lo, hi = min(costs), max(costs)
    span = hi - lo
    n = bins if span > 0 else 1
    counts = [0] * n
    for c in costs:
        i = int((c - lo) / span * n) if span > 0 else 0
        counts[min(i, n - 1)] += 1
    width, height, left, bottom, top = 960, 260, 70, 44, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    ticks = _axis(float(max(counts)), integer=True)
    y_max = ticks[-1]
    parts = _frame(width, height, left, bottom, top, ticks, "requests", "cost per request (USD)")
    slot = plot_w / n
    for i, count in enumerate(counts):
        b_lo = lo + span * i / n
        b_hi = lo + span * (i + 1) / n
        h = count / y_max * plot_h
        x = left + i * slot
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{max(1.0, slot - 2):.1f}" height="{h:.1f}" fill="#0891b2">'
            f"<title>{_E(_money(b_lo))} – {_E(_money(b_hi))}: {count} requests</title></rect>"
        )
        if i % max(1, n // 5) == 0 or i == n - 1:
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle">{_E(_money(b_lo))}</text>')
    return _svg(width, height, "histogram of cost per request", parts)


# Short headers keep the summary table narrow.
_HEADERS = {"cost_usd": "cost", "monthly_budget_usd": "monthly budget", "budget_used_pct": "budget used",
            "est_input_usd_saved": "est. input saved", "est_tokens_saved": "est. tokens saved"}
# Width estimate of a table laid out on one line per row (13 px system font, bold headers): the
# generous side of an average glyph, plus cell padding; page and panel margins around it.
_PX_PER_CHAR = 8.5
_CELL_PX = 18
_PAGE_PX = 100

Cell = tuple[str, str | None]  # shown text, exact value for the tooltip


def _cell_html(label: str, cell: Cell) -> str:
    text, exact = cell
    title = f' title="{_E(exact)}"' if exact is not None else ""
    return f'<td data-label="{_E(label)}"{title}>{_E(text)}</td>'


def _table(table_id: str, headers: list[str], rows: list[list[Cell]], foot: list[Cell] | None, empty: str) -> str:
    """A table that never hides a column: one line per row while it fits the window; below its
    own width (estimated here), each row wraps into a block of labelled cells instead of scrolling.
    The first column stays put (sticky) if the table ever scrolls sideways."""
    every = rows + ([foot] if foot else [])
    widths = [
        max([len(word) for word in header.split()] + [len(row[i][0]) for row in every]) * _PX_PER_CHAR + _CELL_PX
        for i, header in enumerate(headers)
    ]
    breakpoint_px = int(sum(widths)) + _PAGE_PX
    head = "".join(f"<th>{_E(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell_html(h, c) for h, c in zip(headers, row, strict=True)) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td class="empty" colspan="{len(headers)}">{_E(empty)}</td></tr>'
    tail = ""
    if foot:
        tail = "<tfoot><tr>" + "".join(_cell_html(h, c) for h, c in zip(headers, foot, strict=True)) + "</tr></tfoot>"
    t = f"#{table_id}"
    wrap = (
        f"@media (max-width:{breakpoint_px}px){{{t} thead{{display:none}}"
        f"{t} tr{{display:flex;flex-wrap:wrap;border-bottom:1px solid #cbd5e1;padding:4px 0}}"
        f"{t} td{{display:block;flex:1 0 7.5em;border:0;padding:2px 6px}}"
        f"{t} td::before{{content:attr(data-label);display:block;font-size:10px;color:#64748b;font-weight:400}}"
        f"{t} td:first-child{{flex-basis:100%;font-weight:600}} {t} td:first-child::before,{t} td:empty::before{{content:none}}}}"
    )
    return f"<style>{wrap}</style><table id=\"{table_id}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{tail}</table>"


def _shown(column: str, value: Any) -> Cell:
    if column.endswith("_pct"):
        return pct(value), None
    if isinstance(value, Decimal):
        return _money(value), _exact(value)
    if value is None:
        return "(none)" if column in ("user", "agent") else "", None
    if isinstance(value, int):
        return f"{value:,}", None
    return str(value), None


def _html_table(report: Report) -> str:
    cols = table_columns(report)
    headers = [_HEADERS.get(c, c.replace("_", " ")) for c in cols]
    rows = [[_shown(c, row[c]) for c in cols] for row in report.rows]
    totals = report.totals()
    foot: list[Cell] = [("Total", None)] + [_shown(c, totals.get(c)) for c in cols[1:]]
    return _table("summary", headers, rows, foot, "No usage in this period.")


def _render_html(report: Report, budgets: dict[str, Decimal] | None) -> str:
    total = sum((d["cost_usd"] for d in report.daily), Decimal(0))
    n_req = len(report.cost_per_request)
    avg = (total / n_req) if n_req else Decimal(0)
    cards = [
        ("total spend", _money(total)),
        ("requests", f"{n_req:,}"),
        ("avg cost / request", _money(avg.quantize(Decimal("0.000000001")) if n_req else avg)),
        ("days with spend", f"{len({d['day'] for d in report.daily}):,}"),
    ]
    top = _table(
        "top-sessions",
        ["session", "workflow", "requests", "model calls", "cost"],
        [[(s["session_id"], None), (s["workflow"], None), _shown("requests", s["requests"]),
          _shown("model_calls", s["model_calls"]), _shown("cost_usd", s["cost_usd"])] for s in report.top_sessions],
        None,
        "No sessions in this period.",
    )
    sections = [
        f"<h1>{_E(_title(report))}</h1>",
        f'<div class="sub">Generated {_E(_iso(report.generated_ms) or "")} · money is exact (nano-dollar ledger)</div>',
        '<div class="cards">'
        + "".join(f'<div class="card"><div class="l">{_E(lbl)}</div><div class="v">{_E(v)}</div></div>' for lbl, v in cards)
        + "</div>",
        f"<h2>Summary by {_E(report.group_by)}</h2>",
        f'<div class="panel scroll">{_html_table(report)}</div>',
        "<h2>Spend per day per workflow</h2>",
        f'<div class="panel">{_daily_chart(report)}</div>',
    ]
    if budgets:
        sections += ["<h2>Budget burn (month to date)</h2>", f'<div class="panel">{_burn_charts(report, budgets)}</div>']
    sections += [
        "<h2>Cost per request</h2>",
        f'<div class="panel">{_histogram(report)}</div>',
        "<h2>Top sessions by cost</h2>",
        f'<div class="panel scroll">{top}</div>',
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_E(_title(report))}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
