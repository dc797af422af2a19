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


def assert_dynamodb_rollups_match_rows(ledger: Any) -> int:
    """Every day-partition aggregate (model, agent, price key) equals the sums of the call rows
    stored under the requests of the ledger (read by Query, as a report would); the calls checked."""
    import json

    from costguard.ledger.rollups import agent_label, day_number
    from costguard.usage import day_key

    expected: dict[tuple[str, str, str, str, str], list[int]] = {}
    days = sorted({c.period[len("day:"):] for c in ledger.budget_counters() if c.period.startswith("day:")})
    requests = [i for day in days for i in ledger._query("test", KeyConditionExpression="pk = :pk",
                                                         ExpressionAttributeValues={":pk": {"S": f"RD#{day}"}})]
    calls = 0
    rows: list[tuple[Any, ...]] = []  # (ts, base, agent, agent id, in, out, cache read, cache write, cost, priced, wf, key)
    for request in requests:
        # Rows written one segment at a time (synchronous writes) live under their request.
        request_id = request["request_id"]["S"]
        items = list(ledger._query("test", KeyConditionExpression="pk = :pk",
                                   ExpressionAttributeValues={":pk": {"S": "R#" + _quote(request_id)}}))
        heads = [i for i in items if i["sk"]["S"] == "#R"]
        agent_id = heads[0].get("agent_id", {}).get("S") if heads else None
        for item in items:
            for row in json.loads(item.get("calls", {}).get("S", "[]")):
                ts, _, base, _, agent, _, i, o, cr, cw, cost, priced, _, wf, _, price_key, _ = row
                rows.append((ts, base, agent, agent_id, i, o, cr, cw, cost, priced, wf, price_key))
    for day in days:
        # Rows written by the background writer: packed per batch in the day's chunk shards.
        for shard in range(8):
            for item in ledger._query("test", KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": {"S": f"C#{day}#{shard}"}}):
                for row in json.loads(item["rows"]["S"]):
                    if row[0] == "call":
                        (_, ts, _, base, _, agent, _, i, o, cr, cw, cost, priced, _, wf, _, price_key, _, _, agent_id) = row
                        rows.append((ts, base, agent, agent_id, i, o, cr, cw, cost, priced, wf, price_key))
    for ts, base, agent, agent_id, i, o, cr, cw, cost, priced, wf, price_key in rows:
        calls += 1
        day = day_key(day_number(ts) * 86_400_000)
        for dim, key, variant in (("model", base, ""), ("agent", agent_label(agent, agent_id), ""),
                                  ("price", base, price_key or "")):
            sums = expected.setdefault((dim, day, wf, key, variant), [0] * 7)
            for n, value in enumerate((1, i, o, cr, cw, cost, 0 if priced else 1)):
                sums[n] += value
    actual: dict[tuple[str, str, str, str, str], list[int]] = {}
    for day in sorted({k[1] for k in expected} | set(days)):
        for item in ledger._query("test", KeyConditionExpression="pk = :pk",
                                  ExpressionAttributeValues={":pk": {"S": f"D#{day}"}}):
            sk = item["sk"]["S"]
            dim = "agent" if sk.startswith("#A#") else "price" if sk.startswith("#P#") else "model"
            key = item["agent" if dim == "agent" else "base_model_id"]["S"]
            variant = item["price_key"]["S"] if dim == "price" else ""
            values = [int(item.get(a, {"N": "0"})["N"]) for a in (
                "model_calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos",
                "unpriced_calls")]
            if dim == "agent":
                values[6] = expected.get((dim, day, item["workflow"]["S"], key, variant), [0] * 7)[6]  # not kept
            actual[(dim, day, item["workflow"]["S"], key, variant)] = values
    assert actual == expected
    return calls


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")
