"""Rollups in the SQLite ledger: the tables, the upserts in the writer's transaction, the one-time
build from the rows of a ledger written before rollups existed, and the check that they are there.

``user`` and ``session`` are stored as references that are never NULL (so an upsert finds its
row): ``''`` for none, else ``'='`` followed by the id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from costguard.ledger.rollups import (
    CALL_COUNTERS,
    DAY_MS,
    REQUEST_COUNTERS,
    Prior,
    RollupDeltas,
    add_violations,
    deltas_of,
)
from costguard.usage import RequestSegment, ViolationRecord

#: Set in ``meta`` when the rollups hold every row of the ledger (new ledgers, and old ones once
#: :func:`build_rollups` ran): reports read rollups only then.
READY_KEY = "rollups"
READY_VALUE = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup_calls (
    dimension TEXT NOT NULL,
    day INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    key TEXT NOT NULL,
    variant TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    model_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    unpriced_calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, day, workflow, key, variant)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_requests (
    day INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    user_ref TEXT NOT NULL,
    session_ref TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    model_calls INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    tool_response_bytes INTEGER NOT NULL DEFAULT 0,
    violations INTEGER NOT NULL DEFAULT 0,
    shadow_violations INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, workflow, user_ref, session_ref)
) WITHOUT ROWID
"""

#: SQL turning a stored reference back into the id (NULL for none).
def unref(column: str) -> str:
    return f"CASE WHEN {column} = '' THEN NULL ELSE substr({column}, 2) END"


def ref(value: str | None) -> str:
    return "" if value is None else "=" + value


_CALL_KEY = ("dimension", "day", "workflow", "key", "variant")
_REQUEST_KEY = ("day", "workflow", "user_ref", "session_ref")


def _upsert(table: str, key: Sequence[str], counters: Sequence[str]) -> str:
    columns = (*key, *counters)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in counters)
    )


_CALL_UPSERT = _upsert("rollup_calls", _CALL_KEY, CALL_COUNTERS)
_REQUEST_UPSERT = _upsert("rollup_requests", _REQUEST_KEY, REQUEST_COUNTERS)


def apply_rollups(conn: sqlite3.Connection, deltas: RollupDeltas) -> None:
    """Add ``deltas`` to the rollup tables (inside the caller's transaction)."""
    if deltas.calls:
        conn.executemany(_CALL_UPSERT, [(*key, *sums) for key, sums in deltas.calls.items()])
    if deltas.requests:
        conn.executemany(
            _REQUEST_UPSERT,
            [(day, wf, ref(user), ref(session), *sums) for (day, wf, user, session), sums in deltas.requests.items()],
        )


def prior_of(conn: sqlite3.Connection) -> Callable[[RequestSegment], Prior]:
    """What ``conn``'s ledger holds of a segment's request, read before the segment's rows go in:
    its row (start, user) and, for a continuation, the call keys its earlier calls counted."""

    def prior(segment: RequestSegment) -> Prior:
        row = conn.execute(
            "SELECT started_ms, user_id, agent_id FROM requests WHERE request_id = ?", (segment.request_id,)
        ).fetchone()
        if row is None:
            return Prior(known=False)
        started_ms, user_id, agent_id = row
        seen: set[tuple[str, str, str]] = set()
        for model, price_key, agent in conn.execute(
            "SELECT DISTINCT base_model_id, COALESCE(price_key, ''), COALESCE(agent, ?, '') FROM model_calls "
            "WHERE request_id = ?",
            (agent_id, segment.request_id),
        ):
            seen.update((("model", model, ""), ("price", model, price_key), ("agent", agent, "")))
        return Prior(known=True, started_ms=started_ms, user_id=user_id, seen=seen)

    return prior


def record_rollups(conn: sqlite3.Connection, segments: Sequence[RequestSegment]) -> None:
    """The writer's hook: add ``segments`` to the rollups. Call it in the transaction that writes
    the segments, before their rows are inserted (it reads what the ledger held before them)."""
    apply_rollups(conn, deltas_of(segments, prior_of(conn)))


def record_violation_rollups(conn: sqlite3.Connection, violations: Sequence[ViolationRecord]) -> None:
    """Violations written on their own (blocked before any usage): counted under the user of
    their request when the ledger has it."""

    def user_of(request_id: str) -> str | None:
        row = conn.execute("SELECT user_id FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return row[0] if row else None

    apply_rollups(conn, add_violations(RollupDeltas(), violations, user_of))


def rollups_ready(conn: sqlite3.Connection) -> bool:
    """True when the rollups hold the whole ledger (reports may read them)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (READY_KEY,)).fetchone()
    except sqlite3.OperationalError:  # no meta table: not a ledger this version wrote
        return False
    return row is not None and row[0] == READY_VALUE


def daily_rows(conn: sqlite3.Connection, dimension: str, since_ms: int, until_ms: int) -> list[tuple[Any, ...]]:
    """Call rollups of ``dimension`` per (UTC day, workflow, key, variant), for days in
    ``[since_ms, until_ms)``: day text, workflow, key, calls, four token counts, cost, unpriced
    calls, variant (``DailyUsage``'s field order)."""
    return conn.execute(
        "SELECT strftime('%Y-%m-%d', day * 86400, 'unixepoch'), workflow, key, SUM(model_calls), SUM(input_tokens), "
        "SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_nanos), SUM(unpriced_calls), "
        "variant FROM rollup_calls WHERE dimension = ? AND day >= ? AND day < ? GROUP BY day, workflow, key, variant "
        "ORDER BY day, workflow, key, variant",
        (dimension, since_ms // DAY_MS, until_ms // DAY_MS),
    ).fetchall()


Progress = Callable[[str, int, int], None]

_D = DAY_MS
_BUILD_STEPS: tuple[tuple[str, str], ...] = (
    (
        "model calls by model",
        f"INSERT INTO rollup_calls (dimension, day, workflow, key, variant, model_calls, input_tokens, output_tokens, "
        f"cache_read_tokens, cache_write_tokens, cost_nanos, unpriced_calls) "
        f"SELECT 'model', ts_ms / {_D}, workflow, base_model_id, '', COUNT(*), SUM(input_tokens), SUM(output_tokens), "
        f"SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_nanos), SUM(1 - priced) FROM model_calls "
        f"GROUP BY 2, 3, 4",
    ),
    (
        "model calls by price key",
        f"INSERT INTO rollup_calls (dimension, day, workflow, key, variant, model_calls, input_tokens, output_tokens, "
        f"cache_read_tokens, cache_write_tokens, cost_nanos, unpriced_calls) "
        f"SELECT 'price', ts_ms / {_D}, workflow, base_model_id, COALESCE(price_key, ''), COUNT(*), SUM(input_tokens), "
        f"SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_nanos), SUM(1 - priced) "
        f"FROM model_calls GROUP BY 2, 3, 4, 5",
    ),
    (
        "model calls by agent",
        f"INSERT INTO rollup_calls (dimension, day, workflow, key, variant, model_calls, input_tokens, output_tokens, "
        f"cache_read_tokens, cache_write_tokens, cost_nanos, unpriced_calls) "
        f"SELECT 'agent', m.ts_ms / {_D}, m.workflow, COALESCE(m.agent, r.agent_id, ''), '', COUNT(*), "
        f"SUM(m.input_tokens), SUM(m.output_tokens), SUM(m.cache_read_tokens), SUM(m.cache_write_tokens), "
        f"SUM(m.cost_nanos), SUM(1 - m.priced) FROM model_calls m LEFT JOIN requests r ON r.request_id = m.request_id "
        f"GROUP BY 2, 3, 4",
    ),
    (
        "requests per model, price key and agent",
        # A request counts once per key, on the day of its first call with that key.
        f"WITH firsts AS ("
        f"SELECT 'model' AS dimension, m.workflow, m.base_model_id AS key, '' AS variant, MIN(m.ts_ms) AS ts "
        f"FROM model_calls m GROUP BY m.request_id, m.base_model_id "
        f"UNION ALL SELECT 'price', m.workflow, m.base_model_id, COALESCE(m.price_key, ''), MIN(m.ts_ms) "
        f"FROM model_calls m GROUP BY m.request_id, m.base_model_id, COALESCE(m.price_key, '') "
        f"UNION ALL SELECT 'agent', m.workflow, COALESCE(m.agent, r.agent_id, ''), '', MIN(m.ts_ms) "
        f"FROM model_calls m LEFT JOIN requests r ON r.request_id = m.request_id "
        f"GROUP BY m.request_id, COALESCE(m.agent, r.agent_id, '')) "
        f"INSERT INTO rollup_calls (dimension, day, workflow, key, variant, requests) "
        f"SELECT dimension, ts / {_D}, workflow, key, variant, COUNT(*) FROM firsts WHERE true GROUP BY 1, 2, 3, 4, 5 "
        f"ON CONFLICT (dimension, day, workflow, key, variant) DO UPDATE SET requests = requests + excluded.requests",
    ),
    (
        "requests",
        f"INSERT INTO rollup_requests (day, workflow, user_ref, session_ref, requests, model_calls, tool_calls, "
        f"input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, tool_response_bytes) "
        f"SELECT started_ms / {_D}, workflow, COALESCE('=' || user_id, ''), COALESCE('=' || session_id, ''), COUNT(*), "
        f"SUM(model_calls), SUM(tool_calls), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), "
        f"SUM(cache_write_tokens), SUM(cost_nanos), SUM(tool_response_bytes) FROM requests GROUP BY 1, 2, 3, 4",
    ),
    (
        "violations",
        f"INSERT INTO rollup_requests (day, workflow, user_ref, session_ref, violations, shadow_violations) "
        f"SELECT v.ts_ms / {_D}, v.workflow, COALESCE('=' || r.user_id, ''), COALESCE('=' || v.session_id, ''), "
        f"SUM(v.enforced != 0), SUM(v.enforced = 0) FROM violations v "
        f"LEFT JOIN requests r ON r.request_id = v.request_id WHERE true GROUP BY 1, 2, 3, 4 "
        f"ON CONFLICT (day, workflow, user_ref, session_ref) DO UPDATE SET violations = violations + excluded.violations, "
        f"shadow_violations = shadow_violations + excluded.shadow_violations",
    ),
)


def build_rollups(conn: sqlite3.Connection, progress: Progress | None = None) -> None:
    """Rebuild the rollups from the rows, inside the caller's write transaction, and mark them
    ready. ``progress(step, done, steps)`` is called before each step and once at the end."""
    conn.execute("DELETE FROM rollup_calls")
    conn.execute("DELETE FROM rollup_requests")
    for done, (step, sql) in enumerate(_BUILD_STEPS):
        if progress is not None:
            progress(step, done, len(_BUILD_STEPS))
        conn.execute(sql)
    if progress is not None:
        progress("done", len(_BUILD_STEPS), len(_BUILD_STEPS))
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (READY_KEY, READY_VALUE),
    )
