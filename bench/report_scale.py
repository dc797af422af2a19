"""How fast are usage reports on a big ledger? pandas (costguard.reports) vs a plain Python loop.

Builds a ledger with 1,000,000 model_calls rows and 25,000 requests rows (bulk executemany in one
transaction, not record()), then times each aggregation and reports rows/s and peak memory.

The DynamoDB case fills a table on moto's ThreadedMotoServer (real HTTP) through the ledger's own
reserve + record path, then runs every report on it and prints the requests each report sends,
counted on the client with a botocore ``before-call`` hook, and the Query pages per workflow-day.
Target: at most one Query page per workflow-day for the by-workflow and by-day reports, no Scan.

    python bench/report_scale.py [--calls 1000000] [--requests 25000] [--db PATH]
                                 [--dynamodb-workflows 4] [--dynamodb-days 7] [--dynamodb-requests 10]
                                 [--only sqlite|dynamodb]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
import resource
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto_server import moto_dynamodb_client  # noqa: E402

from costguard.ledger import SQLiteLedger  # noqa: E402
from costguard.ledger.dynamodb import DynamoDBLedger, create_table  # noqa: E402
from costguard.reports import GROUP_BYS, ReportQuery, usage_report  # noqa: E402
from costguard.usage import PeriodLimit, day_key, month_key, nanos_to_usd  # noqa: E402
from tests.support.ledger_data import segment  # noqa: E402

DAY_MS = 86_400_000
START_MS = 1_761_955_200_000  # 2025-11-01T00:00:00Z
WORKFLOWS = [f"wf-{i}" for i in range(8)]
MODELS = ["anthropic.claude-3-5-sonnet", "anthropic.claude-3-haiku", "amazon.nova-pro", "amazon.nova-lite", "meta.llama3-70b", "mistral.large"]
AGENTS = [None, None, "researcher", "writer"]


def build(path: Path, n_calls: int, n_requests: int, seed: int = 7) -> float:
    ledger = SQLiteLedger(path)  # creates the schema
    ledger.close()
    rng = random.Random(seed)
    per_request = n_calls // n_requests
    extra = n_calls - per_request * n_requests
    requests: list[tuple[Any, ...]] = []

    def calls() -> Iterator[tuple[Any, ...]]:
        for r in range(n_requests):
            rid = f"req-{r:07d}"
            wf = WORKFLOWS[r % len(WORKFLOWS)]
            session = f"sess-{r // 5:06d}"
            user = f"user-{r % 200:03d}"
            started = START_MS + rng.randrange(30 * DAY_MS)
            k = per_request + (1 if r < extra else 0)
            tot = [0, 0, 0, 0, 0]
            for i in range(k):
                inp, out = rng.randrange(200, 4000), rng.randrange(10, 800)
                cr, cw = rng.randrange(0, 1000), rng.randrange(0, 200)
                cost = inp * 3_000 + out * 15_000 + cr * 300 + cw * 3_750
                tot[0] += inp; tot[1] += out; tot[2] += cr; tot[3] += cw; tot[4] += cost  # noqa: E702
                model = MODELS[rng.randrange(len(MODELS))]
                yield (rid, wf, session, user, started + i * 50, "us." + model, model, "ORCHESTRATION",
                       AGENTS[rng.randrange(len(AGENTS))], inp, out, cr, cw, cost, 1, 120)
            requests.append((rid, wf, session, user, "InvokeAgent", "A1", "AL1", started, started + k * 50, "ok", 1,
                             k, k // 4, *tot, 0, 0, k * 50, k * 40, k * 5, 0, 0, None))

    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO model_calls (request_id, workflow, session_id, user_id, ts_ms, model_id, base_model_id, "
        "step_type, agent, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, "
        "priced, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        calls(),
    )
    conn.executemany(
        "INSERT INTO requests (request_id, workflow, session_id, user_id, operation, agent_id, agent_alias_id, "
        "started_ms, ended_ms, status, segments, model_calls, tool_calls, input_tokens, output_tokens, "
        "cache_read_tokens, cache_write_tokens, cost_nanos, tool_response_bytes, max_tool_response_bytes, "
        "latency_ms, model_latency_ms, tool_latency_ms, unknown_events, unpriced_calls, return_control_id) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        requests,
    )
    conn.executemany(
        "INSERT INTO violations (ts_ms, workflow, session_id, request_id, kind, rule, limit_value, observed, "
        "enforced, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [(r[7] + 1, r[1], r[2], r[0], "max_model_calls", "per_request.max_model_calls", "40", "41", i % 3 == 0, "{}")
         for i, r in enumerate(requests[:: max(1, len(requests) // 500)])],
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0


# -- plain Python baselines ---------------------------------------------------------------------


def loop_requests_by(conn: sqlite3.Connection, key: str) -> dict[Any, list[int]]:
    expr = "started_ms / 86400000" if key == "day" else key
    out: dict[Any, list[int]] = {}
    sessions: dict[Any, set[str]] = {}
    for k, sess, mc, tc, i, o, cr, cw, cost in conn.execute(
        f"SELECT {expr}, session_id, model_calls, tool_calls, input_tokens, output_tokens, cache_read_tokens, "
        "cache_write_tokens, cost_nanos FROM requests"
    ):
        acc = out.get(k)
        if acc is None:
            acc = out[k] = [0] * 8
            sessions[k] = set()
        sessions[k].add(sess)
        acc[0] += 1; acc[1] += mc; acc[2] += tc; acc[3] += i; acc[4] += o; acc[5] += cr; acc[6] += cw; acc[7] += cost  # noqa: E702
    for k, s in sessions.items():
        out[k].append(len(s))
    return out


def loop_calls_by(conn: sqlite3.Connection, key: str) -> dict[Any, list[int]]:
    expr = "ts_ms / 86400000" if key == "day" else key
    out: dict[Any, list[int]] = {}
    reqs: dict[Any, set[str]] = {}
    for k, rid, i, o, cr, cw, cost in conn.execute(
        f"SELECT {expr}, request_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
        "cost_nanos FROM model_calls"
    ):
        acc = out.get(k)
        if acc is None:
            acc = out[k] = [0] * 6
            reqs[k] = set()
        reqs[k].add(rid)
        acc[0] += 1; acc[1] += i; acc[2] += o; acc[3] += cr; acc[4] += cw; acc[5] += cost  # noqa: E702
    return {k: [*v, len(reqs[k])] for k, v in out.items()}


def pandas_calls_by_day(conn: sqlite3.Connection) -> dict[int, Decimal]:
    """The model_calls-based day aggregation, done the way costguard.reports does it."""
    frame = pd.read_sql_query(
        "SELECT ts_ms, request_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos "
        "FROM model_calls", conn,
        dtype={"ts_ms": "int64", "input_tokens": "int64", "output_tokens": "int64", "cache_read_tokens": "int64",
               "cache_write_tokens": "int64", "cost_nanos": "int64"},
    )
    frame["day"] = frame["ts_ms"] // DAY_MS
    grouped = frame.groupby("day")
    agg = grouped[["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos"]].sum()
    agg["requests"] = grouped["request_id"].nunique()
    return {int(d): nanos_to_usd(int(n)) for d, n in agg["cost_nanos"].items()}


def pandas_calls_by_day_partials(conn: sqlite3.Connection) -> dict[int, Decimal]:
    """Same, the way reports.py does model/agent: SQLite folds to (day, request) partials, pandas finishes."""
    frame = pd.read_sql_query(
        "SELECT ts_ms / 86400000 AS day, request_id, COUNT(*) AS calls, SUM(input_tokens) AS input_tokens, "
        "SUM(output_tokens) AS output_tokens, SUM(cache_read_tokens) AS cache_read_tokens, "
        "SUM(cache_write_tokens) AS cache_write_tokens, SUM(cost_nanos) AS cost_nanos "
        "FROM model_calls GROUP BY request_id, day", conn,
        dtype={"day": "int64", "calls": "int64", "input_tokens": "int64", "output_tokens": "int64",
               "cache_read_tokens": "int64", "cache_write_tokens": "int64", "cost_nanos": "int64"},
    )
    grouped = frame.groupby("day")
    agg = grouped[["calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos"]].sum()
    agg["requests"] = grouped["request_id"].nunique()
    return {int(d): nanos_to_usd(int(n)) for d, n in agg["cost_nanos"].items()}


# -- harness ------------------------------------------------------------------------------------


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak traced MiB, result): timed without tracemalloc, then re-run under it for memory."""
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, result


def dynamodb_case(workflows: int, days: int, per_day: int) -> bool:
    """Fill a moto table through reserve + record; print requests and Query pages per report."""
    counts: Counter[str] = Counter()
    pages: Counter[str] = Counter()
    with moto_dynamodb_client() as client:
        create_table("costguard-report-bench", client=client)
        ledger = DynamoDBLedger("costguard-report-bench", client=client)
        rng = random.Random(7)
        t0 = time.perf_counter()
        for d in range(days):
            for w in range(workflows):
                wf = WORKFLOWS[w % len(WORKFLOWS)]
                for r in range(per_day):
                    ts = START_MS + d * DAY_MS + r * (DAY_MS // per_day) + 1_000
                    periods = [PeriodLimit(f"day:{day_key(ts - 500)}", None), PeriodLimit(f"month:{month_key(ts - 500)}", None)]
                    held = ledger.reserve(wf, periods, 1_000)
                    ledger.record(segment(f"req-{d}-{w}-{r}", rng.randint(1_000, 900_000), session=f"sess-{d}-{w}-{r // 3}",
                                          workflow=wf, reservation=held.reservation, model_calls=3, ts_ms=ts,
                                          model=MODELS[r % len(MODELS)]))
        built = time.perf_counter() - t0
        total = workflows * days * per_day
        print(f"dynamodb (moto server): {total:,} requests in {workflows} workflows x {days} days, recorded in {built:.1f} s")

        def count(model: Any, **_: Any) -> None:
            counts.update([model.name])

        def classify(params: dict[str, Any], **_: Any) -> None:
            # Day partitions (RD#, D#) against the fixed reads (budget counters, registry, violations).
            key = params.get("ExpressionAttributeValues", {}).get(":pk", {}).get("S", "")
            pages.update(["day" if key.startswith(("RD#", "D#")) else "other"])

        client.meta.events.register("before-call.dynamodb", count)
        client.meta.events.register("before-parameter-build.dynamodb.Query", classify)
        workflow_days = sum(1 for c in ledger.budget_counters() if c.period.startswith("day:"))
        print(f"{workflow_days} workflow-days with usage; a Query page is one request (botocore follows no pages itself)")
        print(f"{'report':<10}{'requests':>9}{'day-partition pages':>20}{'per workflow-day':>18}{'other reads':>12}  by operation")
        met = True
        for group_by in GROUP_BYS:
            counts.clear()
            pages.clear()
            t0 = time.perf_counter()
            report = ledger.usage_report(ReportQuery(group_by))
            elapsed = time.perf_counter() - t0
            per_wd = pages["day"] / workflow_days
            if group_by in ("workflow", "day"):
                met = met and per_wd <= 1 and "Scan" not in counts
            detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            cost = sum((r.get("cost_usd", Decimal(0)) for r in report.rows), Decimal(0))
            print(f"{group_by:<10}{sum(counts.values()):>9}{pages['day']:>20}{per_wd:>18.2f}{pages['other']:>12}  {detail}  "
                  f"({len(report.rows)} rows, ${cost:f}, {elapsed:.2f} s)")
        ledger.close()
    print(f"target (<= 1 Query page per workflow-day for by-workflow and by-day, no Scan): {'MET' if met else 'NOT MET'}")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=25_000)
    parser.add_argument("--db", type=Path, default=None, help="reuse/keep this ledger file")
    parser.add_argument("--dynamodb-workflows", type=int, default=4)
    parser.add_argument("--dynamodb-days", type=int, default=7)
    # moto parses every update expression in Python (~150 ms a request over HTTP): keep it small;
    # the request count per report depends on days and workflows, not on the requests in a day.
    parser.add_argument("--dynamodb-requests", type=int, default=10, help="requests per workflow-day")
    parser.add_argument("--only", choices=("sqlite", "dynamodb"), default=None)
    args = parser.parse_args(argv)
    if args.only == "dynamodb":
        return 0 if dynamodb_case(args.dynamodb_workflows, args.dynamodb_days, args.dynamodb_requests) else 1

    tmp = tempfile.TemporaryDirectory() if args.db is None else None
    path = args.db or Path(tmp.name) / "ledger.db"  # type: ignore[union-attr]
    if not path.exists():
        secs = build(path, args.calls, args.requests)
        print(f"built {args.calls:,} model_calls + {args.requests:,} requests in {secs:.2f} s ({args.calls / secs:,.0f} rows/s)")
    conn = sqlite3.connect(path)
    n_calls = conn.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0]
    n_reqs = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    print(f"ledger {path}: {n_calls:,} model_calls, {n_reqs:,} requests, python {sys.version.split()[0]}, pandas {pd.__version__}")

    cases: list[tuple[str, int, Callable[[], Any], Callable[[], Any]]] = [
        ("workflow (requests)", n_reqs,
         lambda: usage_report(conn, since_ms=None, until_ms=None, workflow=None, group_by="workflow"),
         lambda: loop_requests_by(conn, "workflow")),
        ("day (requests)", n_reqs,
         lambda: usage_report(conn, since_ms=None, until_ms=None, workflow=None, group_by="day"),
         lambda: loop_requests_by(conn, "day")),
        ("day (model_calls)", n_calls, lambda: pandas_calls_by_day(conn), lambda: loop_calls_by(conn, "day")),
        ("day (calls, partials)", n_calls, lambda: pandas_calls_by_day_partials(conn), lambda: loop_calls_by(conn, "day")),
        ("model (model_calls)", n_calls,
         lambda: usage_report(conn, since_ms=None, until_ms=None, workflow=None, group_by="model"),
         lambda: loop_calls_by(conn, "base_model_id")),
        ("agent (model_calls)", n_calls,
         lambda: usage_report(conn, since_ms=None, until_ms=None, workflow=None, group_by="agent"),
         lambda: loop_calls_by(conn, "agent")),
    ]
    print()
    print(f"{'aggregation':<22}{'rows':>11}  {'pandas s':>9}{'rows/s':>13}{'peak MiB':>9}   {'loop s':>8}{'rows/s':>13}{'peak MiB':>9}  {'speedup':>7}  totals")
    for name, rows, fast, slow in cases:
        ft, fm, fres = measure(fast)
        st, sm, sres = measure(slow)
        # Cross-check: the grand total cost agrees to the nano between both ways.
        if isinstance(fres, dict):
            fast_total = sum(fres.values(), Decimal(0))
        else:
            fast_total = sum((r["cost_usd"] for r in fres.rows), Decimal(0))
        cost_idx = 7 if "(requests)" in name else 5
        slow_total = nanos_to_usd(sum(v[cost_idx] for v in sres.values()))
        check = "match" if fast_total == slow_total else f"MISMATCH {fast_total} != {slow_total}"
        print(f"{name:<22}{rows:>11,}  {ft:>9.3f}{rows / ft:>13,.0f}{fm:>9.1f}   {st:>8.3f}{rows / st:>13,.0f}{sm:>9.1f}  {st / ft:>6.2f}x  {check} (${fast_total:f})")
    print()
    print(f"process peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    conn.close()
    if tmp is not None:
        tmp.cleanup()
    if args.only == "sqlite":
        return 0
    print()
    return 0 if dynamodb_case(args.dynamodb_workflows, args.dynamodb_days, args.dynamodb_requests) else 1


if __name__ == "__main__":
    raise SystemExit(main())
