"""Ledger throughput: segments recorded per second, and DynamoDB requests per model call.

Drives each backend the way the meter does for a request: check the kill switch (cached),
reserve an estimate against the workflow's day and month budgets, then record the segment, which
settles the reservation. SQLite runs on a temporary file; DynamoDB on moto's ThreadedMotoServer
over real HTTP, so its rate measures moto and the HTTP stack, not DynamoDB: the number to read
from that row is the request count per model call, counted on the client with a botocore
``before-call`` hook, by operation.

Target for the DynamoDB ledger: <= 2 write requests per model call, and no read on the hot path
other than the kill switch.

    python bench/ledger_throughput.py [--segments 2000] [--calls 5] [--dynamodb-segments 500]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto_server import moto_dynamodb_client  # noqa: E402

from costguard.ledger import Ledger, SQLiteLedger  # noqa: E402
from costguard.ledger.dynamodb import DynamoDBLedger, create_table  # noqa: E402
from costguard.usage import PeriodLimit  # noqa: E402
from tests.support.ledger_data import DAY_START_MS, segment  # noqa: E402

WRITES = {"TransactWriteItems", "UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem"}
PERIODS = [PeriodLimit("day:2026-11-22", 10**15), PeriodLimit("month:2026-11", None)]
REQUESTS_PER_SESSION = 4


def drive(ledger: Ledger, segments: int, calls: int, seed: int = 7) -> float:
    """Run ``segments`` requests of ``calls`` model calls each; returns the elapsed seconds."""
    rng = random.Random(seed)
    start = time.perf_counter()
    for n in range(segments):
        ts = DAY_START_MS + n * 10
        if ledger.kill_switch("bench", ts) is not None:
            raise SystemExit("the bench workflow is blocked")
        estimate = 5_000 * calls
        held = ledger.reserve("bench", PERIODS, estimate)
        if not held.ok:
            raise SystemExit(f"budget refused the bench: {held}")
        ledger.record(
            segment(
                f"req-{n}",
                rng.randint(1, estimate),
                session=f"sess-{n // REQUESTS_PER_SESSION}",
                workflow="bench",
                reservation=held.reservation,
                model_calls=calls,
                ts_ms=ts,
                tool_bytes=rng.randint(100, 20_000),
            )
        )
    return time.perf_counter() - start


def bench_sqlite(segments: int, calls: int) -> tuple[float, Counter[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SQLiteLedger(Path(tmp) / "bench.db")
        try:
            return drive(ledger, segments, calls), Counter()
        finally:
            ledger.close()


def bench_dynamodb(segments: int, calls: int) -> tuple[float, Counter[str]]:
    counts: Counter[str] = Counter()
    with moto_dynamodb_client() as client:
        create_table("costguard-bench", client=client)
        count: Callable[..., None] = lambda model, **_: counts.update([model.name])  # noqa: E731
        client.meta.events.register("before-call.dynamodb", count)
        ledger = DynamoDBLedger("costguard-bench", client=client)
        elapsed = drive(ledger, segments, calls)
        ledger.close()
        return elapsed, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=2_000, help="segments for SQLite (default 2000)")
    # moto parses every update expression in Python (~50 ms a segment): 500 keeps the run short;
    # request counts per model call do not depend on the number of segments.
    parser.add_argument("--dynamodb-segments", type=int, default=500, help="segments for DynamoDB/moto (default 500)")
    parser.add_argument("--calls", type=int, default=5, help="model calls per segment (default 5)")
    args = parser.parse_args(argv)

    rows: list[tuple[str, int, float, Counter[str]]] = []
    elapsed, counts = bench_sqlite(args.segments, args.calls)
    rows.append(("sqlite (tmp file)", args.segments, elapsed, counts))
    elapsed, counts = bench_dynamodb(args.dynamodb_segments, args.calls)
    rows.append(("dynamodb (moto server)", args.dynamodb_segments, elapsed, counts))

    print(f"{'backend':<24} {'segments':>8} {'model calls':>11} {'segments/s':>10} {'calls/s':>9} "
          f"{'writes/call':>11} {'reads/call':>10}  requests by operation")
    target_met: bool | None = None
    for name, segments, elapsed, counts in rows:
        model_calls = segments * args.calls
        writes = sum(v for k, v in counts.items() if k in WRITES)
        # The kill switch is the one read allowed on the hot path (cached in-process).
        reads = sum(v for k, v in counts.items() if k not in WRITES and k != "GetItem")
        kill_reads = counts.get("GetItem", 0)
        detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"
        wpc = f"{writes / model_calls:.3f}" if counts else "-"
        rpc = f"{reads / model_calls:.3f}" if counts else "-"
        print(f"{name:<24} {segments:>8} {model_calls:>11} {segments / elapsed:>10.1f} {model_calls / elapsed:>9.1f} "
              f"{wpc:>11} {rpc:>10}  {detail}")
        if counts:
            target_met = writes / model_calls <= 2 and reads == 0
            print(f"{'':<24} per segment: {writes / segments:.2f} write requests (reserve + record); "
                  f"kill-switch GetItem: {kill_reads} in {segments} requests (in-process cache)")
    print()
    print(f"target (<= 2 write requests per model call, 0 hot-path reads besides the kill switch): "
          f"{'MET' if target_met else 'NOT MET'}")
    return 0 if target_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
