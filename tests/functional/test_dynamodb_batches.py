"""DynamoDB ``record_many``: a batch too big for one transaction is split into whole requests,
and a batch that fails part way says what was written, so the writer never writes it twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from costguard.errors import BatchPartlyWritten
from costguard.ledger.dynamodb import DynamoDBLedger, create_table
from costguard.usage import LeaseSettle, PeriodLimit
from tests.support.ledger_data import segment

DAY = PeriodLimit("day:2026-11-22", None)
MONTH = PeriodLimit("month:2026-11", None)


@pytest.fixture
def ledger() -> Iterator[DynamoDBLedger]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table("batches", client=client)
        yield DynamoDBLedger("batches", client=client)


def settled(request_id: str, cost: int, session: str, **options: Any) -> Any:
    s = segment(request_id, cost, session=session, **options)
    s.lease_settle = LeaseSettle("wf", (DAY.period, MONTH.period), None, cost, 0)
    return s


def test_a_batch_bigger_than_one_transaction_is_split_into_whole_requests(ledger: DynamoDBLedger) -> None:
    # 60 requests in 60 sessions: ~3 items each plus the shared ones, more than 100 items
    batch = [settled(f"r-{n}", 1_000 + n, f"s-{n}") for n in range(60)]
    calls: list[int] = []
    original = ledger._transact

    def counting(what: str, items: list[dict[str, Any]]) -> Any:
        calls.append(len(items))
        return original(what, items)

    ledger._transact = counting  # type: ignore[method-assign]
    ledger.record_many(batch)
    assert len(calls) >= 2 and max(calls) <= 100
    for n in range(60):
        usage = ledger.session_usage(f"s-{n}")
        assert usage is not None and (usage.requests, usage.model_calls, int(usage.cost_usd * 10**9)) == (1, 1, 1_000 + n)
    (day,) = [c for c in ledger.budget_counters("wf") if c.period == DAY.period]
    assert day.spent_nanos == sum(1_000 + n for n in range(60))


def test_segments_of_one_request_in_one_batch_are_merged_into_one_write(ledger: DynamoDBLedger) -> None:
    first = settled("r-1", 300, "s-1", model_calls=2)
    second = settled("r-1", 200, "s-1", previous=first.totals, model_calls=1)
    ledger.record_many([first, second])
    usage = ledger.session_usage("s-1")
    assert usage is not None and (usage.requests, usage.model_calls, usage.tool_calls, int(usage.cost_usd * 10**9)) == (1, 3, 2, 500)


def test_a_batch_failing_part_way_names_what_was_written(ledger: DynamoDBLedger) -> None:
    batch = [settled(f"r-{n}", 1_000, f"s-{n}") for n in range(60)]
    original = ledger._transact
    seen = [0]

    def second_fails(what: str, items: list[dict[str, Any]]) -> Any:
        seen[0] += 1
        if seen[0] == 2:
            from costguard.errors import LedgerError

            raise LedgerError("throttled")
        return original(what, items)

    ledger._transact = second_fails  # type: ignore[method-assign]
    with pytest.raises(BatchPartlyWritten) as caught:
        ledger.record_many(batch)
    written = caught.value.written
    assert 0 < len(written) < 60
    # the writer's retry: only what was not written
    ledger._transact = original  # type: ignore[method-assign]
    ledger.record_many([s for s in batch if id(s) not in written])
    for n in range(60):
        usage = ledger.session_usage(f"s-{n}")
        assert usage is not None and (usage.requests, usage.model_calls) == (1, 1)
    (day,) = [c for c in ledger.budget_counters("wf") if c.period == DAY.period]
    assert day.spent_nanos == 60 * 1_000
