"""Ids that do not fit a DynamoDB key are hashed inside keys; ids no ledger can store are refused.

Before (issue 12): a session id over about 2 KB (or about 230 CJK characters) let the model call
go out, then failed to record it (moto, like DynamoDB, refuses a partition key over 2,048 bytes
and a sort key over 1,024); the hold leaked.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from costguard.errors import CostguardError, InvalidIdError
from costguard.ledger import Ledger, SQLiteLedger
from costguard.ledger.base import MAX_ID_BYTES, check_storable_id
from costguard.ledger.dynamodb import DynamoDBLedger, create_table
from costguard.usage import PeriodLimit, ViolationRecord
from tests.support.ledger_data import segment

LONG_ASCII = "s" * 3_000  # 3 KB
CJK = "会话" * 400  # 800 characters, 2,400 bytes of UTF-8, 7,200 once percent-encoded
DAY = PeriodLimit("day:2026-11-22", 1_000_000)


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        led: Ledger = SQLiteLedger(tmp_path / "ledger.db")
        yield led
        led.close()
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table("costguard-ledger", client=client)
        led = DynamoDBLedger("costguard-ledger", client=client)
        yield led
        led.close()


@pytest.mark.parametrize("session", [LONG_ASCII, CJK], ids=["3KB-ascii", "800-cjk"])
def test_long_ids_are_recorded_and_read_back_by_the_original_id(ledger: Ledger, session: str) -> None:
    request = "r-" + session  # as long as the session id: a partition key and a sort key part
    workflow = "wf-" + "w" * 600  # inside the daily-usage sort key next to the model id
    model = "m-" + "模" * 300
    held = ledger.reserve(workflow, [DAY], 700)
    assert held.ok and held.reservation is not None
    violation = ViolationRecord(1_500, workflow, session, request, "LoopCapExceeded", "per_request.max_model_calls", "1", "2", True)
    seg = dataclasses.replace(
        segment(request, 700, session=session, workflow=workflow, model=model, reservation=held.reservation, violations=[violation]),
        return_control_id="inv-" + session,
    )
    ledger.record(seg)

    totals = ledger.session_totals(session)
    assert (totals.cost_nanos, totals.model_calls, totals.tool_calls) == (700, 1, 1)
    request_totals = ledger.request_totals(request)
    assert request_totals is not None and request_totals.cost_nanos == 700
    assert ledger.find_return_control(session, "inv-" + session) == request
    usage = ledger.session_usage(session)
    assert usage is not None
    assert (usage.session_id, usage.workflow, usage.cost_usd) == (session, workflow, Decimal("0.0000007"))
    assert [(v.session_id, v.request_id) for v in usage.violations] == [(session, request)]
    assert [(v.session_id, v.request_id) for v in ledger.violations(workflow=workflow)] == [(session, request)]
    assert [(c.workflow, c.spent_nanos, c.reserved_nanos) for c in ledger.budget_counters(workflow)] == [(workflow, 700, 0)]
    (daily,) = ledger.daily_usage("1970-01-01", "1970-01-02")  # segment() calls are at ts 1,500 ms or [None]
    assert daily is not None and (daily.workflow, daily.base_model_id, daily.model_calls) == (workflow, model, 1)


def test_long_workflow_kill_switch_round_trips(ledger: Ledger) -> None:
    workflow = "工作流" * 200  # 1,800 bytes: over a sort key as it is
    ledger.set_kill_switch(workflow, "runaway", "ops", 1_000)
    switch = ledger.kill_switch(workflow, 2_000)
    assert switch is not None and (switch.workflow, switch.reason) == (workflow, "runaway")
    assert [s.workflow for s in ledger.kill_switches(2_000)] == [workflow]
    assert ledger.clear_kill_switch(workflow, "ops", 3_000)
    assert ledger.kill_switch(workflow, 4_000) is None


def test_short_ids_keep_their_readable_keys() -> None:
    from costguard.ledger.dynamodb import _q

    assert _q("sess#1/ü") == "sess%231%2F%C3%BC"
    assert _q("s" * 500) == "s" * 500
    hashed = _q("s" * 501)
    assert hashed.startswith("%H") and len(hashed) == 66


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("session", 42, "must be a string, got int"),
        ("session", None, "must be a string, got NoneType"),
        ("request", b"r-1", "must be a string, got bytes"),
        ("workflow", "", "must not be empty"),
        ("session", "abc\ud800", "is not valid Unicode (a lone surrogate at character 3)"),
        ("user", "\udfff", "is not valid Unicode (a lone surrogate at character 0)"),
        ("session", "é" * (MAX_ID_BYTES // 2 + 1), f"is {MAX_ID_BYTES + 2} bytes of UTF-8, over the 8192-byte limit"),
    ],
)
def test_check_storable_id_refuses_what_no_ledger_can_store(kind: str, value: object, reason: str) -> None:
    with pytest.raises(InvalidIdError) as info:
        check_storable_id(kind, value)
    assert isinstance(info.value, CostguardError)
    assert (info.value.kind, info.value.reason, str(info.value)) == (kind, reason, f"{kind} id {reason}")


@pytest.mark.parametrize(
    ("kind", "value"),
    [("user", None), ("user", ""), ("agent", None), ("session", LONG_ASCII), ("session", CJK), ("session", "s" * MAX_ID_BYTES)],
)
def test_check_storable_id_accepts_what_every_ledger_stores(kind: str, value: object) -> None:
    assert check_storable_id(kind, value) is None
