"""Meter overhead on a real boto3 InvokeAgent stream, wrapped vs unwrapped, side by side.

Serves the same InvokeAgent response (a 40-step loop: ~165 events in the AWS event-stream wire
format) from a local endpoint to a stock boto3 client, REQUESTS times unwrapped and REQUESTS
times through ``Guard.wrap`` with a SQLite ledger and enforcing policies, in alternating rounds
so both see the same machine state. Prints per-request times and the wrapped/unwrapped ratio.

    python bench/meter_overhead.py [--requests 200] [--steps 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import costguard  # noqa: E402
from costguard.policy import PolicySet  # noqa: E402
from tests.support.traces import agent_loop  # noqa: E402
from tests.support.wire import FakeBedrock  # noqa: E402

POLICY = """
version: 1
workflows:
  bench:
    per_request: {max_model_calls: 100, max_tool_calls: 100, max_tokens: 100000000, max_cost_usd: 1000, max_tool_response_bytes: 1000000}
    per_session: {max_model_calls: 100000000}
    budget: {daily_usd: 1000000, monthly_usd: 10000000}
"""


def serve(events: list, total: int, conn: Connection) -> None:
    """The endpoint runs in its own process so it does not share the meter's GIL."""
    with FakeBedrock(pace_seconds=0) as fake:
        fake.queue_agent_response(events, repeat=total)
        conn.send(fake.url)
        conn.recv()  # until the parent is done


def client_for(url: str) -> object:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock-agent-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def consume(client: object, requests: int) -> float:
    start = time.perf_counter()
    for i in range(requests):
        response = client.invoke_agent(  # type: ignore[attr-defined]
            agentId="AGENT1", agentAliasId="ALIAS1", sessionId=f"s-{i % 50}", inputText="x", enableTrace=True
        )
        for _ in response["completion"]:
            pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    loop = agent_loop(args.steps, tool_bytes=1200)
    parent, child = multiprocessing.Pipe()
    total = 10 + 2 * args.requests * args.rounds
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(loop.events, total, child), daemon=True)
    server.start()
    url = parent.recv()
    with tempfile.TemporaryDirectory() as scratch:
        raw = client_for(url)
        guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=f"sqlite:///{scratch}/bench.db")
        wrapped = guard.wrap(client_for(url), workflow="bench")
        consume(raw, 5)  # warm both connection pools
        consume(wrapped, 5)
        plain_times, metered_times = [], []
        for round_no in range(args.rounds):
            plain_times.append(consume(raw, args.requests))
            metered_times.append(consume(wrapped, args.requests))
            print(f"round {round_no + 1}: unwrapped {plain_times[-1]:.3f}s  wrapped {metered_times[-1]:.3f}s", flush=True)
        usage = guard.ledger.connection().execute("SELECT COUNT(*), SUM(model_calls) FROM requests").fetchone()  # type: ignore[attr-defined]
        guard.close()
    parent.send("done")
    server.join(10)
    # The best round of each is the least disturbed by whatever else the machine was doing;
    # the median is printed beside it so a reader can see the spread.
    plain, metered = min(plain_times), min(metered_times)
    median_ratio = statistics.median(metered_times) / statistics.median(plain_times)
    per_req = lambda t: 1000 * t / args.requests  # noqa: E731
    print(f"\n{args.requests} requests x {len(loop.events)} events ({loop.model_calls} model calls each), best of {args.rounds} alternating rounds")
    print(f"unwrapped: {per_req(plain):.3f} ms/request")
    print(f"wrapped:   {per_req(metered):.3f} ms/request  (ledger rows: {usage[0]} requests, {usage[1]} model calls)")
    print(f"ratio wrapped/unwrapped: {metered / plain:.3f} best-vs-best, {median_ratio:.3f} median-vs-median  (target <= 1.05)")


if __name__ == "__main__":
    main()
