"""How fast are usage reports on a big ledger? The rollups against the rows they summarise.

Builds a ledger with ``--calls`` model_calls rows (default 1,000,000 over 30 days) and
``--requests`` requests rows, bulk inserted with executemany in one transaction (not through the
meter), and its rollups built in the same transaction by the ledger's own one-time build
(``costguard.ledger.sqlite_rollups.build_rollups``). Then, for each grouping, times the real
``costguard report`` code path (``SQLiteLedger(read_only=True).usage_report``, which reads the
rollups) against ``rows_report`` (the same Report from the raw rows by SQL + pandas). Both sides
build the same Report; their JSON must be identical (totals to the nano-dollar). Peak memory is
measured under tracemalloc. The drill-downs that still read rows are timed too: the top sessions
by cost over the request rows, and one session's usage.

Targets: each rollup report <= 0.1 s and <= 50 MiB peak, same output as the rows; the
top-sessions drill-down <= 1 s. Exits 1 when one is missed. ``--calls 10000000 --requests
250000`` gives the 10M figures (the ledger is generated in a temporary folder, not kept).

The DynamoDB case fills a table on moto's ThreadedMotoServer (real HTTP) through the ledger's own
reserve + record path, then runs every report on it and prints the requests each report sends,
counted on the client with a botocore ``before-call`` hook, and the Query pages per workflow-day.
Target: at most one Query page per workflow-day for the by-workflow and by-day reports, no Scan.

    python bench/report_scale.py [--calls 1000000] [--requests 25000] [--db PATH]
                                 [--dynamodb-workflows 4] [--dynamodb-days 7] [--dynamodb-requests 10]
                                 [--only sqlite|dynamodb] [--repeat 3] [--quick]
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
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto_server import moto_dynamodb_client  # noqa: E402

from costguard.ledger import SQLiteLedger  # noqa: E402
from costguard.ledger.dynamodb import DynamoDBLedger, create_table  # noqa: E402
from costguard.ledger.sqlite_rollups import build_rollups  # noqa: E402
from costguard.reports import GROUP_BYS, ReportQuery, rows_report  # noqa: E402
from costguard.usage import PeriodLimit, day_key, month_key  # noqa: E402
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
            wf = WORKFLOWS[(r // 5) % len(WORKFLOWS)]  # a session (5 requests) runs in one workflow
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
                scope = "geo" if i % 3 else "global"
                yield (rid, wf, session, user, started + i * 50, "us." + model, model, "ORCHESTRATION",
                       AGENTS[rng.randrange(len(AGENTS))], inp, out, cr, cw, cost, 1, 120,
                       f"{model}|us-east-1|{scope}|standard|5m|standard|-")
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
        "priced, latency_ms, price_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
    build_rollups(conn)  # the ledger's own one-time build, in the same transaction as the rows
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0


# -- harness ------------------------------------------------------------------------------------


def seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_mib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


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


TARGET_REPORT_S = 0.1
TARGET_REPORT_MIB = 50.0
TARGET_DRILL_DOWN_S = 1.0


def top_sessions_from_rows(conn: sqlite3.Connection, limit: int = 10) -> list[tuple[Any, ...]]:
    """The drill-down that reads rows: the costliest sessions over every request row."""
    return conn.execute(
        "SELECT session_id, COUNT(*), SUM(model_calls), SUM(cost_nanos) AS cost FROM requests "
        f"GROUP BY session_id ORDER BY cost DESC, session_id LIMIT {limit}"
    ).fetchall()


def sqlite_case(path: Path, repeat: int) -> bool:
    ledger = SQLiteLedger(path, read_only=True)  # what `costguard report` opens
    conn = sqlite3.connect(path)
    n_calls = conn.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0]
    n_reqs = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    n_rollups = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("rollup_calls", "rollup_requests"))
    print(f"ledger {path}: {n_calls:,} model_calls, {n_reqs:,} requests, {n_rollups:,} rollup rows, "
          f"python {sys.version.split()[0]}, pandas {pd.__version__}")
    print()
    print(f"{'group by':<10}{'rollups s':>10}{'peak MiB':>9}   {'rows s':>8}{'peak MiB':>9}  {'speedup':>8}  same output")
    met = True
    for group_by in GROUP_BYS:
        sides: dict[str, Callable[[], Any]] = {
            "rollups": lambda g=group_by: ledger.usage_report(ReportQuery(g)),
            "rows": lambda g=group_by: rows_report(conn, ReportQuery(g)),
        }
        # The warm-up run of each side is also the check that both did the same work.
        outputs = {side: fn().to_json_dict() for side, fn in sides.items()}
        same = outputs["rollups"] == outputs["rows"]
        best = {side: float("inf") for side in sides}
        for run in range(repeat):
            for side in (("rollups", "rows") if run % 2 == 0 else ("rows", "rollups")):
                best[side] = min(best[side], seconds(sides[side]))
        peaks = {side: peak_mib(fn) for side, fn in sides.items()}
        met = met and same and best["rollups"] <= TARGET_REPORT_S and peaks["rollups"] <= TARGET_REPORT_MIB
        total = outputs["rollups"]["totals"].get("cost_usd", outputs["rollups"]["totals"].get("lambda_cost_usd"))
        print(f"{group_by:<10}{best['rollups']:>10.3f}{peaks['rollups']:>9.1f}   {best['rows']:>8.3f}{peaks['rows']:>9.1f}"
              f"  {best['rows'] / best['rollups']:>7.1f}x  {'yes' if same else 'NO'} (${total})")
    top = min(seconds(lambda: top_sessions_from_rows(conn)) for _ in range(repeat))
    (session,) = conn.execute("SELECT session_id FROM requests LIMIT 1").fetchone()
    one = min(seconds(lambda: ledger.session_usage(session)) for _ in range(repeat))
    print()
    print(f"drill-down over the rows: top sessions {top:.3f} s, one session's usage {one:.3f} s")
    print(f"process peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    met = met and top <= TARGET_DRILL_DOWN_S
    print(f"target (each rollup report <= {TARGET_REPORT_S} s and <= {TARGET_REPORT_MIB:.0f} MiB, same output as the rows; "
          f"top sessions <= {TARGET_DRILL_DOWN_S:.0f} s): {'MET' if met else 'NOT MET'}")
    conn.close()
    ledger.close()
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=25_000)
    parser.add_argument("--db", type=Path, default=None, help="reuse/keep this ledger file")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (default 3)")
    parser.add_argument("--quick", action="store_true", help="a small ledger, to check the bench runs")
    parser.add_argument("--dynamodb-workflows", type=int, default=4)
    parser.add_argument("--dynamodb-days", type=int, default=7)
    # moto parses every update expression in Python (~150 ms a request over HTTP): keep it small;
    # the request count per report depends on days and workflows, not on the requests in a day.
    parser.add_argument("--dynamodb-requests", type=int, default=10, help="requests per workflow-day")
    parser.add_argument("--only", choices=("sqlite", "dynamodb"), default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.requests, args.repeat = 20_000, 1_000, 2
        args.dynamodb_workflows, args.dynamodb_days, args.dynamodb_requests = 1, 2, 2
    if args.only == "dynamodb":
        return 0 if dynamodb_case(args.dynamodb_workflows, args.dynamodb_days, args.dynamodb_requests) else 1

    tmp = tempfile.TemporaryDirectory() if args.db is None else None
    path = args.db or Path(tmp.name) / "ledger.db"  # type: ignore[union-attr]
    if not path.exists():
        secs = build(path, args.calls, args.requests)
        print(f"built {args.calls:,} model_calls + {args.requests:,} requests and their rollups in {secs:.2f} s "
              f"({args.calls / secs:,.0f} calls/s)")
    met = sqlite_case(path, args.repeat)
    if tmp is not None:
        tmp.cleanup()
    if args.only == "sqlite":
        return 0 if met else 1
    print()
    dynamodb_met = dynamodb_case(args.dynamodb_workflows, args.dynamodb_days, args.dynamodb_requests)
    return 0 if met and dynamodb_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
