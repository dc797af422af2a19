"""How fast are usage reports on a big ledger? costguard.reports (pandas) vs a plain Python loop.

Builds a ledger with 1,000,000 model_calls rows and 25,000 requests rows (bulk executemany in one
transaction, not record()). Then, for each grouping, times ``costguard.reports.usage_report`` (the
code ``costguard report`` runs) against ``loop_report``, a plain-Python reference that produces the
same Report from the same SQL queries: the rows, the top sessions, the daily series and the cost
of every request. Both sides get the same warm-up run, whose outputs must be identical (compared
as the JSON report); then ``--repeat`` timed runs each, alternating which side goes first, best
run kept. Peak memory is measured on a further run of each under tracemalloc.

Target: usage_report takes no more than the loop's time (speedup >= 1.0) for every grouping.
Exits 1 when it is missed or when the two sides disagree, after printing every row.


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
from costguard.reports import GROUP_BYS, INVOKED_AGENT, Report, ReportQuery, usage_report  # noqa: E402
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


# -- the plain-Python reference ------------------------------------------------------------------

# usage_report's queries, so both sides read the same rows from SQLite and differ only in how
# they aggregate them.
REQUESTS_SQL = (
    "SELECT request_id, workflow, session_id, user_id, started_ms, model_calls, tool_calls, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos FROM requests"
)
VIOLATIONS_SQL = (
    "SELECT v.workflow AS workflow, v.ts_ms AS ts_ms, v.enforced AS enforced, r.user_id AS user_id "
    "FROM violations v LEFT JOIN requests r ON r.request_id = v.request_id"
)
CALL_PARTIALS_SQL = (
    "SELECT {col} AS key, request_id, COUNT(*) AS model_calls, SUM(input_tokens) AS input_tokens, "
    "SUM(output_tokens) AS output_tokens, SUM(cache_read_tokens) AS cache_read_tokens, "
    "SUM(cache_write_tokens) AS cache_write_tokens, SUM(cost_nanos) AS cost_nanos FROM model_calls "
    "GROUP BY request_id, key"
)
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
EPOCH = date(1970, 1, 1)


def day_label(day_number: int) -> str:
    return (EPOCH + timedelta(days=day_number)).isoformat()


def sort_rows(rows: list[dict[str, Any]], name: str, group_by: str) -> list[dict[str, Any]]:
    if group_by == "day":
        rows.sort(key=lambda r: r[name])
    else:
        rows.sort(key=lambda r: (-r["_nanos"], "" if r[name] is None else str(r[name])))
    for row in rows:
        del row["_nanos"]
    return rows


def _loop_workflow_picture(conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
    """Lambda spend and nearest-rank latency percentiles per workflow, by loops."""
    ttft: dict[str, list[int]] = {}
    latency: dict[str, list[int]] = {}
    for wf, lat, first in conn.execute("SELECT workflow, latency_ms, ttft_ms FROM requests"):
        if lat is not None:
            latency.setdefault(wf, []).append(int(lat))
        if first is not None:
            ttft.setdefault(wf, []).append(int(first))
    lambda_nanos = dict(conn.execute("SELECT workflow, SUM(cost_nanos) FROM actions GROUP BY workflow").fetchall())

    def rank(values: list[int], pct: int) -> int | None:
        if not values:
            return None
        ordered = sorted(values)
        index = -(-pct * len(ordered) // 100) - 1
        return ordered[max(0, index)]

    for row in rows:
        wf = row["workflow"]
        row["lambda_cost_usd"] = nanos_to_usd(int(lambda_nanos.get(wf) or 0))
        row["ttft_p50_ms"], row["ttft_p95_ms"] = rank(ttft.get(wf, []), 50), rank(ttft.get(wf, []), 95)
        row["latency_p50_ms"], row["latency_p95_ms"] = rank(latency.get(wf, []), 50), rank(latency.get(wf, []), 95)


def loop_report(conn: sqlite3.Connection, group_by: str) -> Report:
    """The Report usage_report builds for the whole ledger, with dicts and loops instead of pandas."""
    by_key: dict[Any, list[int]] = {}  # requests, model_calls, tool_calls, 4 token counts, nanos
    sessions_of: dict[Any, set[str]] = {}
    per_session: dict[str, list[Any]] = {}  # model_calls, nanos, requests, first workflow
    per_day_workflow: dict[tuple[int, str], int] = {}
    cost_per_request: list[Decimal] = []
    for rid, wf, session, user, started, mc, tc, i, o, cr, cw, nanos in conn.execute(REQUESTS_SQL):
        day = started // DAY_MS
        cost_per_request.append(nanos_to_usd(nanos))
        s = per_session.get(session)
        if s is None:
            per_session[session] = [mc, nanos, 1, wf]
        else:
            s[0] += mc; s[1] += nanos; s[2] += 1  # noqa: E702
        per_day_workflow[(day, wf)] = per_day_workflow.get((day, wf), 0) + nanos
        if group_by in ("workflow", "day", "user"):
            key = day if group_by == "day" else (wf if group_by == "workflow" else user)
            acc = by_key.get(key)
            if acc is None:
                acc = by_key[key] = [0] * 8
                sessions_of[key] = set()
            sessions_of[key].add(session)
            acc[0] += 1; acc[1] += mc; acc[2] += tc; acc[3] += i; acc[4] += o; acc[5] += cr; acc[6] += cw; acc[7] += nanos  # noqa: E702

    rows: list[dict[str, Any]] = []
    if group_by in ("workflow", "day", "user"):
        violations: dict[Any, list[int]] = {}
        for wf, ts, enforced, user in conn.execute(VIOLATIONS_SQL):
            key = ts // DAY_MS if group_by == "day" else (wf if group_by == "workflow" else user)
            counts = violations.setdefault(key, [0, 0])
            counts[0 if enforced else 1] += 1
        for key in [*by_key, *(k for k in violations if k not in by_key)]:
            acc = by_key.get(key, [0] * 8)
            enforced, shadow = violations.get(key, (0, 0))
            row: dict[str, Any] = {group_by: day_label(key) if group_by == "day" else key,
                                   "sessions": len(sessions_of.get(key, ())), "requests": acc[0],
                                   "model_calls": acc[1], "tool_calls": acc[2]}
            row.update(zip(TOKENS, acc[3:7], strict=True))
            row.update(cost_usd=nanos_to_usd(acc[7]), violations=enforced, shadow_violations=shadow, _nanos=acc[7])
            rows.append(row)
        if group_by == "workflow":
            _loop_workflow_picture(conn, rows)
    else:
        calls: dict[Any, list[int]] = {}
        requests_of: dict[Any, set[str]] = {}
        sql = CALL_PARTIALS_SQL.format(col="base_model_id" if group_by == "model" else "agent")
        # the invoked agent's own steps name no collaborator: they go under the request's agent id
        agent_of = dict(conn.execute("SELECT request_id, agent_id FROM requests")) if group_by == "agent" else {}
        for key, rid, mc, i, o, cr, cw, nanos in conn.execute(sql):
            if group_by == "agent" and key is None:
                key = agent_of.get(rid) or INVOKED_AGENT
            acc = calls.get(key)
            if acc is None:
                acc = calls[key] = [0] * 6
                requests_of[key] = set()
            requests_of[key].add(rid)
            acc[0] += mc; acc[1] += i; acc[2] += o; acc[3] += cr; acc[4] += cw; acc[5] += nanos  # noqa: E702
        for key, acc in calls.items():
            row = {group_by: key, "requests": len(requests_of[key]), "model_calls": acc[0]}
            row.update(zip(TOKENS, acc[1:5], strict=True))
            row.update(cost_usd=nanos_to_usd(acc[5]), _nanos=acc[5])
            rows.append(row)

    ranked = sorted(per_session.items(), key=lambda kv: (-kv[1][1], kv[0]))[:10]
    top_sessions = [{"session_id": sid, "workflow": s[3], "requests": s[2], "model_calls": s[0], "cost_usd": nanos_to_usd(s[1])}
                    for sid, s in ranked]
    daily = [{"day": day_label(day), "workflow": wf, "cost_usd": nanos_to_usd(n)} for (day, wf), n in sorted(per_day_workflow.items())]
    return Report(group_by=group_by, rows=sort_rows(rows, group_by, group_by), top_sessions=top_sessions, daily=daily,
                  cost_per_request=cost_per_request, since=None, until=None)


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
        print(f"built {args.calls:,} model_calls + {args.requests:,} requests in {secs:.2f} s ({args.calls / secs:,.0f} rows/s)")
    conn = sqlite3.connect(path)
    n_calls = conn.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0]
    n_reqs = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    print(f"ledger {path}: {n_calls:,} model_calls, {n_reqs:,} requests, python {sys.version.split()[0]}, pandas {pd.__version__}")

    print()
    print(f"{'group by':<10}{'rows read':>11}  {'report s':>9}{'peak MiB':>9}   {'loop s':>8}{'peak MiB':>9}  {'speedup':>7}  same output")
    met = True
    for group_by in ("workflow", "day", "user", "model", "agent"):
        rows_read = n_reqs if group_by in ("workflow", "day", "user") else n_calls
        sides: dict[str, Callable[[], Report]] = {
            "report": lambda g=group_by: usage_report(conn, since_ms=None, until_ms=None, workflow=None, group_by=g),
            "loop": lambda g=group_by: loop_report(conn, g),
        }
        # The warm-up run of each side is also the check that both did the same work.
        outputs = {side: fn().to_json_dict() for side, fn in sides.items()}
        same = outputs["report"] == outputs["loop"]
        best = {side: float("inf") for side in sides}
        for run in range(args.repeat):
            for side in (("report", "loop") if run % 2 == 0 else ("loop", "report")):
                best[side] = min(best[side], seconds(sides[side]))
        peaks = {side: peak_mib(fn) for side, fn in sides.items()}
        speedup = best["loop"] / best["report"]
        met = met and same and speedup >= 1.0
        total = outputs["report"]["totals"]["cost_usd"]
        print(f"{group_by:<10}{rows_read:>11,}  {best['report']:>9.3f}{peaks['report']:>9.1f}   {best['loop']:>8.3f}"
              f"{peaks['loop']:>9.1f}  {speedup:>6.2f}x  {'yes' if same else 'NO'} (${total})")
    print()
    print(f"process peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"target (usage_report no slower than the loop, same output, every grouping): {'MET' if met else 'NOT MET'}")
    conn.close()
    if tmp is not None:
        tmp.cleanup()
    if args.only == "sqlite":
        return 0 if met else 1
    print()
    dynamodb_met = dynamodb_case(args.dynamodb_workflows, args.dynamodb_days, args.dynamodb_requests)
    return 0 if met and dynamodb_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
