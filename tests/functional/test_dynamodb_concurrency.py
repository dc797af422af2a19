"""Many threads sharing one DynamoDB budget over real HTTP (moto's threaded server), and failures.

Each thread has its own boto3 client, as separate ECS tasks or Lambdas would: the only thing they
share is the table, so every guarantee below comes from DynamoDB's conditional updates.
"""

from __future__ import annotations

import random
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import logging

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from costguard.errors import LedgerError
from costguard.ledger.dynamodb import DynamoDBLedger, create_table
from costguard.usage import PeriodLimit
from tests.support.ledger_data import DAY_START_MS, moto_dynamodb_like_aws, segment
from tests.support.workers import run_threads

LIMIT = 120_000
THREADS = 8
SESSIONS_PER_THREAD = 50


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # werkzeug logs every request at INFO: thousands of lines that bury a failure's report.
    werkzeug_log = logging.getLogger("werkzeug")
    monkeypatch.setattr(werkzeug_log, "level", logging.ERROR)
    with moto_dynamodb_like_aws():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        try:
            yield url
        finally:
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
            server.stop()


def _client(endpoint_url: str) -> Any:
    # Credentials come from the environment (tests/conftest.py sets dummy ones).
    return boto3.session.Session().client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=4),
    )


def test_threads_sharing_one_daily_budget_never_lose_an_increment(endpoint: str) -> None:
    table = "concurrency"
    create_table(table, client=_client(endpoint))
    day = PeriodLimit("day:2026-11-22", LIMIT)
    recorded: list[int] = []
    refused: list[int] = []
    in_flight_peak: list[int] = []
    guard = threading.Lock()
    in_flight = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        ledger = DynamoDBLedger(table, client=_client(endpoint))
        try:
            for n in range(SESSIONS_PER_THREAD):
                estimate = rng.randint(500, 1_000)
                result = ledger.reserve("shared", [day], estimate)
                if not result.ok:
                    with guard:
                        refused.append(estimate)
                    continue
                with guard:
                    in_flight[0] += estimate
                    in_flight_peak.append(in_flight[0])
                cost = rng.randint(0, estimate)  # the actual cost never exceeds what was held
                ledger.record(
                    segment(
                        f"r-{seed}-{n}",
                        cost,
                        session=f"s-{seed}-{n}-{uuid.uuid4().hex[:6]}",
                        workflow="shared",
                        reservation=result.reservation,
                        model_calls=2,
                        ts_ms=DAY_START_MS + n,
                    )
                )
                with guard:
                    in_flight[0] -= estimate
                    recorded.append(cost)
        finally:
            ledger.close()

    run_threads(worker, [(seed,) for seed in range(THREADS)], timeout_s=120)
    assert len(recorded) + len(refused) == THREADS * SESSIONS_PER_THREAD

    ledger = DynamoDBLedger(table, client=_client(endpoint))
    [counter] = ledger.budget_counters("shared")
    # THEN no increment was lost, nothing is left reserved, and the budget was never overspent
    assert counter.spent_nanos == sum(recorded)
    assert counter.reserved_nanos == 0
    assert counter.spent_nanos <= LIMIT
    assert refused, "the budget should have run out for some callers"
    # Every hold was granted against spent + reserved <= limit, so holds in flight never exceeded it.
    assert max(in_flight_peak) <= LIMIT
    [daily] = ledger.daily_usage("2026-11-22", "2026-11-23")
    assert (daily.cost_nanos, daily.model_calls) == (sum(recorded), 2 * len(recorded))
    ledger.close()


def test_unreachable_dynamodb_is_a_ledger_error() -> None:
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{_free_port()}",  # nothing listens there
        config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"mode": "standard", "max_attempts": 1}),
    )
    ledger = DynamoDBLedger("t", client=client)
    with pytest.raises(LedgerError, match=r"'t'.*reserving budget.*cannot reach DynamoDB"):
        ledger.reserve("wf", [PeriodLimit("day:2026-11-22", 10)], 1)
    with pytest.raises(LedgerError, match=r"'t'.*reading the kill switch"):
        ledger.kill_switch("wf", 0)


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"])
def test_throttling_is_a_ledger_error(code: str) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    ledger = DynamoDBLedger("t", client=client)
    with Stubber(client) as stub:
        stub.add_client_error("query", service_error_code=code, service_message="slow down")
        with pytest.raises(LedgerError, match=rf"'t'.*reading session counters.*{code}.*throttling"):
            ledger.session_totals("s-1")
        stub.add_client_error("transact_write_items", service_error_code=code, service_message="slow down")
        with pytest.raises(LedgerError, match="throttling"):
            ledger.record(segment("r1", 10, tool_bytes=0))


def test_a_closed_ledger_refuses_work() -> None:
    ledger = DynamoDBLedger("t", client=boto3.client("dynamodb", region_name="us-east-1"))
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.session_totals("s")
