"""DynamoDB requests and write units per model call, made by a real Guard at steady state.

A ``costguard.Guard`` with daily and monthly budgets, per-request caps and a per-session cap
meters stock boto3 clients talking to the local Bedrock endpoint (tests/support/wire.py), with a
DynamoDB ledger on moto's ThreadedMotoServer over real HTTP. Every DynamoDB request the Guard's
client makes is counted by operation with botocore's ``before-call`` hook, so the figures include
everything the meter really does per request: the kill-switch read (cached), the session read,
the reservation and the record. Two APIs are driven: Converse (one model call per request) and
InvokeAgent (a loop of ``--steps`` action-group steps: steps + 2 model calls per request).
Sessions have ``--session-requests`` requests each, as a conversation would. The first
``--warmup`` requests of each API are run and not counted (item creation, caches).

Write units are estimated, because moto does not report consumed capacity for transactions:
each item a write touches is read (by a second, uncounted client) before and after the write,
and costs ceil(max(size before, size after) / 1 KB) write units, doubled inside
TransactWriteItems. Item sizes follow "DynamoDB item sizes and formats" and the write and
transaction capacity rules of the Amazon DynamoDB Developer Guide
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html,
read-write-operations.html, transaction-apis.html; read 2026-12-01).

Targets (issue 11): <= 0.2 write requests and <= 4 write units per model call for each API.
Exits 1 when a target is missed, after printing every figure.

    python bench/ledger_throughput.py [--requests 200] [--steps 40] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

import costguard  # noqa: E402
from bench.guarded_workflow import POLICY  # noqa: E402
from costguard.ledger.dynamodb import DynamoDBLedger, create_table  # noqa: E402
from costguard.policy import PolicySet  # noqa: E402
from tests.support.ledger_data import moto_dynamodb_endpoint  # noqa: E402
from tests.support.traces import agent_loop  # noqa: E402
from tests.support.wire import FakeBedrock  # noqa: E402

WRITE_TARGET = 0.2
WCU_TARGET = 4.0
WRITES = {"TransactWriteItems", "UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem"}
NOVA_MICRO = "amazon.nova-micro-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


# -- write units ----------------------------------------------------------------------------------


def attribute_size(value: dict[str, Any]) -> int:
    """The size of one attribute value in DynamoDB's item-size rules (without its name)."""
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1  # 1 byte per two significant digits, plus 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in inner)
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(attribute_size({"N": n}) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict[str, Any] | None) -> int:
    return sum(len(name.encode()) + attribute_size(v) for name, v in (item or {}).items())


@dataclass
class Counted:
    """DynamoDB requests by operation and the write units they were estimated to consume."""

    requests: Counter[str] = field(default_factory=Counter)
    write_units: int = 0

    def snapshot(self) -> tuple[Counter[str], int]:
        return Counter(self.requests), self.write_units


def count_requests(client: Any, inspector: Any) -> Counted:
    """Count ``client``'s requests; ``inspector`` (another client) reads item sizes uncounted."""
    counted = Counted()

    def targets(model: Any, params: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any] | None, int]]:
        """(table, key, item written by a Put or None, units multiplier) for each item written."""
        name = model.name
        if name == "TransactWriteItems":
            out = []
            for entry in params["TransactItems"]:
                (kind, op), = entry.items()
                if kind == "ConditionCheck":
                    continue
                out.append((op["TableName"], _key(op), op.get("Item"), 2))
            return out
        if name in ("PutItem", "UpdateItem", "DeleteItem"):
            return [(params["TableName"], _key(params), params.get("Item"), 1)]
        return []

    def _key(op: dict[str, Any]) -> dict[str, Any]:
        if "Key" in op:
            return op["Key"]
        return {k: v for k, v in op["Item"].items() if k in ("pk", "sk")}

    def current_size(table: str, key: dict[str, Any]) -> int:
        return item_size(inspector.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item"))

    def before(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        counted.requests[model.name] += 1
        context["costguard_bench_items"] = [
            (table, key, put, factor, current_size(table, key)) for table, key, put, factor in targets(model, params)
        ]

    def after(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if http_response.status_code != 200:
            return  # a refused write consumes capacity too, but the meter's hot path does not refuse here
        for table, key, put, factor, size_before in context.pop("costguard_bench_items", []):
            size_after = item_size(put) if put is not None else current_size(table, key)
            counted.write_units += factor * max(1, math.ceil(max(size_before, size_after) / 1024))

    client.meta.events.register("provide-client-params.dynamodb.*", before)
    client.meta.events.register("after-call.dynamodb.*", after)
    return counted


# -- the run --------------------------------------------------------------------------------------


def dynamodb_client(url: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    ).client("dynamodb", endpoint_url=url, config=Config(retries={"mode": "standard"}))


@dataclass
class Row:
    api: str
    requests: int
    model_calls: int
    seconds: float
    by_operation: Counter[str]
    write_units: int

    @property
    def writes(self) -> int:
        return sum(v for k, v in self.by_operation.items() if k in WRITES)

    def per_call(self, n: int) -> float:
        return n / self.model_calls


def run_api(api: str, guard: costguard.Guard, fake: FakeBedrock, counted: Counted, args: argparse.Namespace) -> Row:
    if api == "Converse":
        client = fake.client("bedrock-runtime")
        calls_per_request = 1

        def one(n: int) -> None:
            fake.queue_converse(1200, 300)
            guard.wrap(client, workflow="bench", session_id=f"c-{n // args.session_requests}").converse(
                modelId=NOVA_MICRO, messages=MESSAGES
            )
    else:
        loop = agent_loop(args.steps, tool_bytes=800)
        agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="bench")
        calls_per_request = loop.model_calls

        def one(n: int) -> None:
            fake.queue_agent_response(loop.events)
            response = agents.invoke_agent(
                agentId="AGENT1", agentAliasId="ALIAS1", sessionId=f"a-{n // args.session_requests}", inputText="x"
            )
            for _ in response["completion"]:
                pass

    for n in range(args.warmup):
        one(n)
    guard.flush()  # the warm-up's rows are written before counting starts
    start_requests, start_units = counted.snapshot()
    started = time.perf_counter()
    for n in range(args.warmup, args.warmup + args.requests):
        one(n)
    guard.flush()  # and the counted requests' rows are all written (and counted) before it ends
    seconds = time.perf_counter() - started
    end_requests, end_units = counted.snapshot()
    return Row(api, args.requests, args.requests * calls_per_request, seconds, end_requests - start_requests, end_units - start_units)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="counted requests per API (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="requests per API run first and not counted")
    parser.add_argument("--steps", type=int, default=40, help="action-group steps per InvokeAgent request (default 40: 42 model calls)")
    parser.add_argument("--session-requests", type=int, default=4, help="requests per session (default 4)")
    parser.add_argument("--quick", action="store_true", help="a few requests, to check the bench runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.steps = 8, 4, 3

    rows: list[Row] = []
    with moto_dynamodb_endpoint() as url, FakeBedrock(pace_seconds=0) as fake:
        create_table("costguard-bench", client=dynamodb_client(url))
        client = dynamodb_client(url)
        counted = count_requests(client, dynamodb_client(url))
        guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=DynamoDBLedger("costguard-bench", client=client))
        try:
            for api in ("Converse", "InvokeAgent"):
                rows.append(run_api(api, guard, fake, counted, args))
        finally:
            guard.close()

    print(f"{'API':<12} {'requests':>8} {'model calls':>11} {'calls/s':>8} {'writes/call':>11} {'WCU/call':>8} "
          f"{'reads/call':>10}  requests by operation (steady state, after {args.warmup} warm-up requests)")
    met = True
    for row in rows:
        reads = sum(v for k, v in row.by_operation.items() if k not in WRITES)
        detail = ", ".join(f"{k}={v}" for k, v in sorted(row.by_operation.items())) or "-"
        print(f"{row.api:<12} {row.requests:>8} {row.model_calls:>11} {row.model_calls / row.seconds:>8.1f} "
              f"{row.per_call(row.writes):>11.3f} {row.per_call(row.write_units):>8.2f} {row.per_call(reads):>10.3f}  {detail}")
        per_request = ", ".join(f"{k}={Decimal(v) / row.requests:.2f}" for k, v in sorted(row.by_operation.items()))
        print(f"{'':<12} per request: {per_request}; {Decimal(row.write_units) / row.requests:.1f} WCU")
        met = met and row.per_call(row.writes) <= WRITE_TARGET and row.per_call(row.write_units) <= WCU_TARGET
    print()
    print(f"target (<= {WRITE_TARGET} write requests and <= {WCU_TARGET:g} WCU per model call, each API): "
          f"{'MET' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
