"""One behavioural suite every ledger backend must pass: SQLite (embedded) and DynamoDB (moto).

The SQLite ledger's semantics are the spec; a test here that only one backend passes is a bug in
the other one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from costguard.errors import LedgerError
from costguard.ledger import Ledger, SQLiteLedger, open_ledger
from costguard.ledger.dynamodb import DynamoDBLedger, create_table
from costguard.usage import ActionRecord, PeriodLimit, ViolationRecord
from tests.support.ledger_data import DAY, DAY_START_MS, MONTH, segment

TABLE = "costguard-ledger"


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        led: Ledger = SQLiteLedger(tmp_path / "nested" / "ledger.db")
        yield led
        led.close()
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(TABLE, client=client)
        led = DynamoDBLedger(TABLE, client=client)
        yield led
        led.close()


def kill_switch_log(ledger: Ledger) -> list[tuple[str, str]]:
    """(action, actor) of every block/unblock, oldest first: the audit trail each backend keeps."""
    if isinstance(ledger, SQLiteLedger):
        rows = ledger.connection().execute("SELECT action, actor FROM kill_switch_log ORDER BY id").fetchall()
        return [(r[0], r[1]) for r in rows]
    assert isinstance(ledger, DynamoDBLedger)
    return [(action, actor) for action, _, actor, _ in ledger.kill_switch_log("wf")]


# -- budgets ----------------------------------------------------------------------------------------


def test_reserve_refuses_what_does_not_fit_and_reports_why(ledger: Ledger) -> None:
    ok = ledger.reserve("wf", [DAY, MONTH], 600)
    assert ok.ok and ok.reservation is not None and ok.reservation.amount_nanos == 600
    refused = ledger.reserve("wf", [DAY, MONTH], 600)
    assert not refused.ok and refused.reservation is None
    assert (refused.failed_period, refused.limit_nanos, refused.committed_nanos) == ("day:2026-11-22", 1_000, 600)
    # An unlimited period never refuses, but is still counted.
    free = ledger.reserve("wf", [PeriodLimit("day:2026-11-22", None)], 10_000)
    assert free.ok
    counters = {c.period: c for c in ledger.budget_counters("wf")}
    assert counters["day:2026-11-22"].reserved_nanos == 10_600
    assert counters["month:2026-11"].reserved_nanos == 600


def test_refusal_names_the_first_period_without_room_and_holds_nothing(ledger: Ledger) -> None:
    tight_month = PeriodLimit("month:2026-11", 700)
    assert ledger.reserve("wf", [DAY, tight_month], 500).ok
    refused = ledger.reserve("wf", [DAY, tight_month], 300)  # the day has room, the month does not
    assert (refused.ok, refused.failed_period, refused.limit_nanos, refused.committed_nanos) == (
        False, "month:2026-11", 700, 500,
    )
    # More than a whole limit can never fit, even on a fresh counter.
    too_big = ledger.reserve("other", [DAY], 1_001)
    assert (too_big.ok, too_big.failed_period, too_big.committed_nanos) == (False, "day:2026-11-22", 0)
    counters = {(c.workflow, c.period): (c.spent_nanos, c.reserved_nanos) for c in ledger.budget_counters()}
    assert counters == {("wf", "day:2026-11-22"): (0, 500), ("wf", "month:2026-11"): (0, 500)}


def test_exactly_the_limit_fits(ledger: Ledger) -> None:
    assert ledger.reserve("wf", [DAY], 400).ok
    assert ledger.reserve("wf", [DAY], 600).ok
    assert not ledger.reserve("wf", [DAY], 1).ok


def test_record_settles_reservation_to_actual_cost(ledger: Ledger) -> None:
    held = ledger.reserve("wf", [DAY, MONTH], 300).reservation
    assert held is not None
    extended = ledger.extend_reservation(held, 200)
    assert extended.ok and held.amount_nanos == 500
    ledger.record(segment("r1", 420, reservation=held))
    assert held.amount_nanos == 0
    counters = {c.period: (c.spent_nanos, c.reserved_nanos) for c in ledger.budget_counters()}
    assert counters == {"day:2026-11-22": (420, 0), "month:2026-11": (420, 0)}
    usage = ledger.session_usage("s-1")
    assert usage is not None
    assert (usage.requests, usage.model_calls, usage.tool_calls, usage.input_tokens) == (1, 1, 1, 100)
    assert usage.cost_usd == Decimal("0.00000042")
    assert usage.max_tool_response_bytes == 500
    assert (usage.workflow, usage.user_id, usage.tool_response_bytes) == ("wf", "u-1", 500)


def test_settled_spend_counts_against_later_reservations(ledger: Ledger) -> None:
    held = ledger.reserve("wf", [DAY], 500).reservation
    assert held is not None
    ledger.record(segment("r1", 700, reservation=held))  # actual cost outgrew the estimate
    refused = ledger.reserve("wf", [DAY], 301)
    assert (refused.ok, refused.committed_nanos) == (False, 700)
    assert ledger.reserve("wf", [DAY], 300).ok


def test_extend_reservation_is_refused_when_it_does_not_fit(ledger: Ledger) -> None:
    held = ledger.reserve("wf", [DAY], 800).reservation
    assert held is not None
    refused = ledger.extend_reservation(held, 300)
    assert (refused.ok, refused.failed_period, refused.committed_nanos) == (False, "day:2026-11-22", 800)
    assert held.amount_nanos == 800
    assert ledger.extend_reservation(held, 200).ok and held.amount_nanos == 1_000


def test_release_gives_the_hold_back(ledger: Ledger) -> None:
    held = ledger.reserve("wf", [DAY], 900).reservation
    assert held is not None
    ledger.release(held)
    assert held.amount_nanos == 0
    ledger.release(held)  # releasing twice gives nothing back twice
    assert ledger.reserve("wf", [DAY], 1_000).ok
    assert [(c.spent_nanos, c.reserved_nanos) for c in ledger.budget_counters("wf")] == [(0, 1_000)]


def test_budget_counters_list_every_workflow_in_order(ledger: Ledger) -> None:
    for workflow in ("zeta", "alpha", "mid#dle"):
        assert ledger.reserve(workflow, [MONTH, DAY], 10).ok
    got = [(c.workflow, c.period) for c in ledger.budget_counters()]
    assert got == sorted(got) and len(got) == 6
    assert [c.period for c in ledger.budget_counters("mid#dle")] == ["day:2026-11-22", "month:2026-11"]
    assert ledger.budget_counters("never") == []


# -- usage ------------------------------------------------------------------------------------------


def test_continuation_segments_update_one_request_and_count_one_session_request(ledger: Ledger) -> None:
    first = segment("r1", 100)
    first.return_control_id = "inv-1"
    first.status = "return_control"
    ledger.record(first)
    assert ledger.find_return_control("s-1", "inv-1") == "r1"
    assert ledger.find_return_control("s-1", "inv-2") is None
    assert ledger.find_return_control("s-2", "inv-1") is None
    previous = ledger.request_totals("r1")
    assert previous is not None and previous.model_calls == 1
    ledger.record(segment("r1", 50, previous=previous))
    totals = ledger.request_totals("r1")
    assert totals is not None and (totals.model_calls, totals.cost_nanos) == (2, 150)
    usage = ledger.session_usage("s-1")
    assert usage is not None and (usage.requests, usage.model_calls) == (1, 2)
    assert ledger.session_totals("s-1").cost_nanos == 150
    # The continuation finished the request: it no longer waits on that invocation.
    assert ledger.find_return_control("s-1", "inv-1") is None


def test_unknown_session_and_request_read_as_empty(ledger: Ledger) -> None:
    assert ledger.session_totals("nobody").model_calls == 0
    assert ledger.session_totals("nobody").cost_nanos == 0
    assert ledger.request_totals("nothing") is None
    assert ledger.session_usage("nobody") is None


def test_session_counters_add_across_requests_and_keep_the_largest_response(ledger: Ledger) -> None:
    ledger.record(segment("r1", 100, tool_bytes=900))
    ledger.record(segment("r2", 30, tool_bytes=300, model_calls=3))
    totals = ledger.session_totals("s-1")
    assert (totals.model_calls, totals.tool_calls, totals.cost_nanos) == (4, 2, 130)
    assert (totals.tool_response_bytes, totals.max_tool_response_bytes) == (1_200, 900)
    usage = ledger.session_usage("s-1")
    assert usage is not None and (usage.requests, usage.max_tool_response_bytes, usage.input_tokens) == (2, 900, 400)
    assert usage.totals().cost_nanos == 130
    # A request's own counters are its running totals, its largest response included.
    r2 = ledger.request_totals("r2")
    assert r2 is not None and (r2.model_calls, r2.cost_nanos, r2.max_tool_response_bytes) == (3, 30, 300)


def test_a_segment_written_again_for_a_known_request_is_not_a_new_session_request(ledger: Ledger) -> None:
    # Looks like a first segment (totals == delta), but the request already exists.
    ledger.record(segment("r1", 10))
    ledger.record(segment("r1", 10))
    usage = ledger.session_usage("s-1")
    assert usage is not None and (usage.requests, usage.model_calls, usage.cost_usd) == (1, 2, Decimal("0.00000002"))
    totals = ledger.request_totals("r1")
    assert totals is not None and (totals.model_calls, totals.cost_nanos) == (1, 10)  # the request takes the totals
    # And a continuation of a request nobody recorded is still counted as a new request.
    ledger.record(segment("r2", 5, previous=ledger.request_totals("r1")))
    usage = ledger.session_usage("s-1")
    assert usage is not None and usage.requests == 2


def test_a_segment_with_more_rows_than_one_transaction_holds(ledger: Ledger) -> None:
    many = [
        ViolationRecord(i, "wf", "s-1", "r1", "ResponseTooLarge", f"rule-{i:03d}", "1", "2", False)
        for i in range(150)
    ]
    held = ledger.reserve("wf", [DAY], 100).reservation
    ledger.record(segment("r1", 60, violations=many, reservation=held))
    assert len(ledger.violations(session_id="s-1")) == 150
    assert ledger.violations(workflow="wf", limit=1)[0].rule == "rule-149"
    assert [(c.spent_nanos, c.reserved_nanos) for c in ledger.budget_counters("wf")] == [(60, 0)]


def test_a_request_with_thousands_of_calls_is_recorded_exactly(ledger: Ledger) -> None:
    big = segment("big", 3_000_007, model_calls=3_000, ts_ms=DAY_START_MS)
    ledger.record(big)
    totals = ledger.request_totals("big")
    assert totals is not None and (totals.model_calls, totals.cost_nanos) == (3_000, 3_000_007)
    [row] = ledger.daily_usage("2026-11-22", "2026-11-23")
    assert (row.model_calls, row.cost_nanos, row.input_tokens) == (3_000, 3_000_007, 300_000)


def test_daily_usage_groups_by_day_workflow_and_model(ledger: Ledger) -> None:
    day = 86_400_000
    ledger.record(segment("r1", 100, ts_ms=DAY_START_MS + 10, model="b-model", workflow="wf"))
    ledger.record(segment("r2", 200, ts_ms=DAY_START_MS + 20, model="a-model", workflow="wf", model_calls=2))
    ledger.record(segment("r3", 300, ts_ms=DAY_START_MS + 30, model="a-model", workflow="wf", session="s-2"))
    ledger.record(segment("r4", 5, ts_ms=DAY_START_MS + 40, model="a-model", workflow="aaa", priced=False))
    ledger.record(segment("r5", 7, ts_ms=DAY_START_MS + day, model="a-model", workflow="wf"))
    ledger.record(segment("r6", 9, ts_ms=DAY_START_MS - 1, model="a-model", workflow="wf"))  # day before
    rows = ledger.daily_usage("2026-11-22", "2026-11-24")
    got = [(r.day, r.workflow, r.base_model_id, r.model_calls, r.input_tokens, r.output_tokens, r.cost_nanos, r.unpriced_calls) for r in rows]
    assert got == [
        ("2026-11-22", "aaa", "a-model", 1, 100, 10, 5, 1),
        ("2026-11-22", "wf", "a-model", 3, 300, 30, 500, 0),
        ("2026-11-22", "wf", "b-model", 1, 100, 10, 100, 0),
        ("2026-11-23", "wf", "a-model", 1, 100, 10, 7, 0),
    ]
    assert rows[1].cost_usd == Decimal("0.0000005")
    # The end day is exclusive, and an empty range is empty.
    assert [r.day for r in ledger.daily_usage("2026-11-23", "2026-11-24")] == ["2026-11-23"]
    assert ledger.daily_usage("2026-11-24", "2026-11-24") == []
    with pytest.raises(LedgerError, match="YYYY-MM-DD"):
        ledger.daily_usage("22/11/2026", "2026-11-24")


# -- violations -------------------------------------------------------------------------------------


def test_violations_round_trip_newest_first(ledger: Ledger) -> None:
    v1 = ViolationRecord(1, "wf", "s-1", "r1", "LoopCapExceeded", "per_request.max_model_calls", "12", "13", True, {"x": "1"})
    v2 = ViolationRecord(2, "wf", "s-1", "r2", "ResponseTooLarge", "per_request.max_tool_response_bytes", "10", "99", False)
    ledger.record(segment("r1", 1, violations=[v1]))
    ledger.record_violation(v2)
    got = ledger.violations(session_id="s-1")
    assert [v.rule for v in got] == ["per_request.max_tool_response_bytes", "per_request.max_model_calls"]
    assert got[1].detail == {"x": "1"} and got[0].enforced is False and got[1].enforced is True
    assert got[1] == v1
    usage = ledger.session_usage("s-1")
    assert usage is not None and len(usage.violations) == 2
    # A session only ever blocked has no usage but does have its violations.
    ledger.record_violation(ViolationRecord(3, "wf", "s-9", None, "WorkflowBlocked", "kill_switch", "set", "blocked", True))
    blocked_only = ledger.session_usage("s-9")
    assert blocked_only is not None and blocked_only.requests == 0 and len(blocked_only.violations) == 1
    assert blocked_only.workflow == "wf"
    assert ledger.session_usage("never") is None


def test_violations_filter_by_workflow_session_and_limit(ledger: Ledger) -> None:
    records = [
        ViolationRecord(10, "wf", "s-1", "r1", "LoopCapExceeded", "a", "1", "2", True),
        ViolationRecord(30, "other", "s-2", "r2", "BudgetExceeded", "b", "1", "2", True),
        ViolationRecord(20, "wf", None, None, "WorkflowBlocked", "c", "set", "blocked", True),
        ViolationRecord(30, "wf", "s-3", "r3", "LoopCapExceeded", "d", "1", "2", False),
    ]
    for record in records:
        ledger.record_violation(record)
    assert [v.rule for v in ledger.violations()] == ["d", "b", "c", "a"]  # same ts: newest write first
    assert [v.rule for v in ledger.violations(workflow="wf")] == ["d", "c", "a"]
    assert [v.rule for v in ledger.violations(limit=2)] == ["d", "b"]
    assert [v.rule for v in ledger.violations(workflow="wf", limit=1)] == ["d"]
    assert [v.rule for v in ledger.violations(workflow="other", session_id="s-1")] == []
    assert [v.rule for v in ledger.violations(workflow="wf", session_id="s-1")] == ["a"]
    assert ledger.violations(workflow="nobody") == []
    assert ledger.violations(session_id=None, workflow="wf")[1].session_id is None


# -- kill switches ----------------------------------------------------------------------------------


def test_kill_switch_set_expire_clear(ledger: Ledger) -> None:
    assert ledger.kill_switch("wf", 0) is None
    ledger.set_kill_switch("wf", "budget gone", "ops@example.com", 100, expires_at_ms=1_000)
    switch = ledger.kill_switch("wf", 500)
    assert switch is not None and switch.reason == "budget gone" and switch.set_by == "ops@example.com"
    assert (switch.set_at_ms, switch.expires_at_ms) == (100, 1_000)
    assert ledger.kill_switch("wf", 1_000) is None  # expired at period end
    assert [k.workflow for k in ledger.kill_switches(500)] == ["wf"]
    assert ledger.kill_switches(1_000) == []
    assert ledger.clear_kill_switch("wf", "ops", 600) is True
    assert ledger.kill_switch("wf", 700) is None  # clearing is seen at once by the same process
    assert ledger.clear_kill_switch("wf", "ops", 700) is False
    assert kill_switch_log(ledger) == [("block", "ops@example.com"), ("unblock", "ops")]


def test_kill_switches_without_expiry_are_listed_in_workflow_order(ledger: Ledger) -> None:
    assert ledger.kill_switch("b", 10) is None  # a cached "no switch" must not hide the next set
    ledger.set_kill_switch("b", "r", "ops", 1)
    ledger.set_kill_switch("a", "r", "ops", 1, expires_at_ms=50)
    ledger.set_kill_switch("c", "r", "ops", 1)
    assert ledger.kill_switch("b", 10**15) is not None
    assert [k.workflow for k in ledger.kill_switches(10)] == ["a", "b", "c"]
    assert [k.workflow for k in ledger.kill_switches(50)] == ["b", "c"]
    # Setting again replaces the switch (reason, expiry) rather than adding a second one.
    ledger.set_kill_switch("b", "new reason", "ops2", 20, expires_at_ms=30)
    [b] = [k for k in ledger.kill_switches(0) if k.workflow == "b"]
    assert (b.reason, b.set_by, b.set_at_ms, b.expires_at_ms) == ("new reason", "ops2", 20, 30)


# -- alert keys -------------------------------------------------------------------------------------


def test_alert_keys_are_claimed_once_until_released(ledger: Ledger) -> None:
    assert ledger.claim_alert_key("budget|wf|80|2026-11", 200, {"pct": 80}) is True
    assert ledger.claim_alert_key("budget|wf|80|2026-11", 300, {"pct": 80}) is False
    assert ledger.claim_alert_key("budget|wf|100|2026-11", 100, {"pct": Decimal("100.5")}) is True
    assert ledger.claim_alert_key("drift|wf|2026-11-22", 150, {}) is True
    keys = ledger.alert_keys()
    assert [(k.key, k.ts_ms) for k in keys] == [
        ("budget|wf|100|2026-11", 100),
        ("drift|wf|2026-11-22", 150),
        ("budget|wf|80|2026-11", 200),
    ]
    assert keys[2].detail == {"pct": 80} and keys[0].detail == {"pct": "100.5"}
    assert [k.key for k in ledger.alert_keys(prefix="budget|")] == ["budget|wf|100|2026-11", "budget|wf|80|2026-11"]
    assert ledger.alert_keys(prefix="nothing") == []
    ledger.release_alert_key("budget|wf|80|2026-11")
    ledger.release_alert_key("never-claimed")
    assert ledger.claim_alert_key("budget|wf|80|2026-11", 400, {"pct": 80}) is True


# -- action guard -----------------------------------------------------------------------------------


def _action(ts_ms: int, workflow: str, outcome: str, **kw: object) -> ActionRecord:
    return ActionRecord(ts_ms, workflow, "orders /orders GET", "s-1", "r-1", 10_000, 900, 3, 2, 1, outcome, **kw)  # type: ignore[arg-type]


def test_actions_round_trip_oldest_first_with_filters(ledger: Ledger) -> None:
    ledger.record_action(_action(300, "wf", "trimmed", latency_ms=12, agent_id="A1"))
    ledger.record_action(_action(100, "other", "passed"))
    ledger.record_action(_action(300, "wf", "replaced"))
    ledger.record_action(ActionRecord(200, "wf", "fn", None, None, 5, 5, 0, 0, 0, "passed"))
    got = ledger.actions()
    assert [(a.ts_ms, a.workflow, a.outcome) for a in got] == [
        (100, "other", "passed"), (200, "wf", "passed"), (300, "wf", "trimmed"), (300, "wf", "replaced"),
    ]
    assert got[2] == _action(300, "wf", "trimmed", latency_ms=12, agent_id="A1")
    assert got[1].session_id is None and got[1].latency_ms is None
    assert [a.outcome for a in ledger.actions(workflow="wf", since_ms=300)] == ["trimmed", "replaced"]
    assert [a.ts_ms for a in ledger.actions(since_ms=150)] == [200, 300, 300]
    assert ledger.actions(workflow="nobody") == []


# -- idempotency ------------------------------------------------------------------------------------


def test_idempotency_claim_complete_and_replay(ledger: Ledger) -> None:
    assert ledger.claim_idempotency_key("k1", 1_000, 60_000) is None  # ours: run the action
    running = ledger.claim_idempotency_key("k1", 2_000, 60_000)
    assert running is not None and (running.status, running.claimed_at_ms, running.expires_at_ms) == ("in_progress", 1_000, 61_000)
    ledger.complete_idempotency_key("k1", "ab" * 32, 1234, 3_000)
    done = ledger.claim_idempotency_key("k1", 4_000, 60_000)
    assert done is not None and done.status == "completed"
    assert (done.response_sha256, done.response_bytes, done.completed_at_ms) == ("ab" * 32, 1234, 3_000)
    # Releasing a completed key keeps it: only a failed in-progress run is forgotten.
    ledger.release_idempotency_key("k1")
    assert ledger.claim_idempotency_key("k1", 5_000, 60_000) is not None


def test_idempotency_release_and_expiry_let_the_next_caller_run(ledger: Ledger) -> None:
    assert ledger.claim_idempotency_key("k2", 1_000, 10_000) is None
    ledger.release_idempotency_key("k2")
    assert ledger.claim_idempotency_key("k2", 2_000, 10_000) is None
    assert ledger.claim_idempotency_key("k2", 11_999, 10_000) is not None  # still within its expiry
    assert ledger.claim_idempotency_key("k2", 12_000, 10_000) is None  # expired: replaced by this claim
    fresh = ledger.claim_idempotency_key("k2", 13_000, 10_000)
    assert fresh is not None and (fresh.claimed_at_ms, fresh.expires_at_ms) == (12_000, 22_000)
    # Completing a key nobody holds creates nothing.
    ledger.complete_idempotency_key("ghost", "00", 1, 1)
    assert ledger.claim_idempotency_key("ghost", 2, 10) is None
    ledger.release_idempotency_key("never-claimed")


# -- DynamoDB specifics ------------------------------------------------------------------------------


def test_open_ledger_dynamodb_urls_send_no_request() -> None:
    led = open_ledger("dynamodb://my-table?region=eu-west-1&endpoint_url=http://localhost:1")
    assert isinstance(led, DynamoDBLedger) and led.table_name == "my-table"
    assert led.url == "dynamodb://my-table"
    assert led._client.meta.region_name == "eu-west-1"  # noqa: SLF001 - the URL's region reached the client
    assert led._client.meta.endpoint_url == "http://localhost:1"  # noqa: SLF001
    led.close()
    plain = open_ledger("dynamodb://t2")
    assert isinstance(plain, DynamoDBLedger) and plain._client.meta.region_name == "us-east-1"  # noqa: SLF001
    plain.close()
    for bad in ("dynamodb://t?colour=blue", "dynamodb://", "dynamodb://t/extra", "dynamodb://t?region="):
        with pytest.raises(LedgerError):
            open_ledger(bad)


def test_importing_the_ledger_package_builds_no_dynamodb_client() -> None:
    code = (
        "import sys, costguard.ledger as l; "
        "assert 'costguard.ledger.dynamodb' not in sys.modules; "
        "import costguard.ledger.dynamodb; from costguard.ledger import DynamoDBLedger; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_create_table_shape_ttl_pitr_and_idempotence() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        first = create_table("shape", client=client)
        assert first["TableStatus"] == "ACTIVE"
        assert {k["AttributeName"]: k["KeyType"] for k in first["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
        assert first["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        [gsi] = first["GlobalSecondaryIndexes"]
        assert gsi["IndexName"] == "gsi1" and gsi["Projection"]["ProjectionType"] == "ALL"
        assert {k["AttributeName"]: k["KeyType"] for k in gsi["KeySchema"]} == {"gsi1pk": "HASH", "gsi1sk": "RANGE"}
        ttl = client.describe_time_to_live(TableName="shape")["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
        pitr = client.describe_continuous_backups(TableName="shape")["ContinuousBackupsDescription"]
        assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
        # Idempotent, and it repairs a table whose PITR was switched off.
        client.update_continuous_backups(
            TableName="shape", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
        )
        second = create_table("shape", client=client)
        assert second["TableArn"] == first["TableArn"]
        pitr = client.describe_continuous_backups(TableName="shape")["ContinuousBackupsDescription"]
        assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
        # A table of another shape is not adopted.
        client.create_table(
            TableName="foreign",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        with pytest.raises(LedgerError, match="foreign"):
            create_table("foreign", client=client)


def test_missing_table_is_a_ledger_error_naming_table_and_operation() -> None:
    with mock_aws():
        led = DynamoDBLedger("absent", client=boto3.client("dynamodb", region_name="us-east-1"))
        with pytest.raises(LedgerError, match=r"'absent'.*reserving budget.*ResourceNotFoundException"):
            led.reserve("wf", [DAY], 1)
        with pytest.raises(LedgerError, match=r"'absent'.*reading session counters"):
            led.session_totals("s")


def test_dynamodb_record_costs_one_write_request_and_no_read() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(TABLE, client=client)
        led = DynamoDBLedger(TABLE, client=client)
        calls: list[str] = []
        client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
        held = led.reserve("wf", [DAY, MONTH], 100).reservation
        assert calls == ["TransactWriteItems"]
        calls.clear()
        led.record(segment("r1", 90, reservation=held, model_calls=5, tool_bytes=10))
        assert calls == ["TransactWriteItems"]
        calls.clear()
        led.record(segment("r2", 90, model_calls=1, tool_bytes=99_999))  # a new largest response too
        assert calls == ["TransactWriteItems"]
        assert led.session_totals("s-1").max_tool_response_bytes == 99_999
        calls.clear()
        assert led.kill_switch("wf", 0) is None and led.kill_switch("wf", 0) is None
        assert calls == ["GetItem"]  # the second check came from the in-process cache


# -- model pins, repeat counters, latency roll-up, action cost -------------------------------------


def test_the_first_model_pinned_wins_and_every_caller_learns_it(ledger: Ledger) -> None:
    assert ledger.pin_session_model("s-1", "anthropic.claude-3-5-sonnet-20240620-v1:0", 1_000) == (
        "anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert ledger.pin_session_model("s-1", "amazon.nova-micro-v1:0", 2_000) == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert ledger.pin_session_model("s-2", "amazon.nova-micro-v1:0", 2_000) == "amazon.nova-micro-v1:0"
    # A pin is no usage: the session's counters stay empty.
    assert ledger.session_totals("s-1").model_calls == 0


def test_tool_repeat_counters_add_per_session(ledger: Ledger) -> None:
    assert ledger.tool_repeats("s-1") == {}
    ledger.add_tool_repeats("s-1", {"a" * 64: 2, "b" * 64: 1}, 1_000)
    ledger.add_tool_repeats("s-1", {"a" * 64: 1}, 2_000)
    ledger.add_tool_repeats("s-2", {"a" * 64: 5}, 2_000)
    assert ledger.tool_repeats("s-1") == {"a" * 64: 3, "b" * 64: 1}
    ledger.record(segment("r1", 10))
    assert ledger.session_totals("s-1").model_calls == 1  # repeat counters are not usage


def test_latency_rolls_up_per_session_and_ttft_keeps_the_first_segment(ledger: Ledger) -> None:
    first = segment("r1", 10)
    first.latency_ms, first.model_latency_ms, first.tool_latency_ms, first.ttft_ms = 900, 700, 100, 250
    ledger.record(first)
    again = segment("r2", 10)
    again.latency_ms, again.model_latency_ms, again.tool_latency_ms = 100, 60, 20
    ledger.record(again)
    usage = ledger.session_usage("s-1")
    assert usage is not None
    assert (usage.latency_ms, usage.model_latency_ms, usage.tool_latency_ms) == (1_000, 760, 120)


def test_an_action_cost_counts_in_its_session_and_budgets(ledger: Ledger) -> None:
    ledger.record(segment("r1", 100))
    ledger.record_action(ActionRecord(DAY_START_MS + 5, "wf", "claims get_claim", "s-1", "req-1", 10, 10, 0, 0, 0,
                                      "passed", 250, "A1", cost_nanos=4_367, billed_ms=251, memory_mb=1024,
                                      architecture="x86_64"))
    assert ledger.session_totals("s-1").cost_nanos == 100 + 4_367
    (record,) = ledger.actions()
    assert (record.cost_nanos, record.billed_ms, record.memory_mb, record.architecture) == (4_367, 251, 1024, "x86_64")
    # The segment had no reservation, so the counters hold the action's cost alone.
    assert {c.period: c.spent_nanos for c in ledger.budget_counters("wf")} == {DAY.period: 4_367, MONTH.period: 4_367}
