from __future__ import annotations

import multiprocessing
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from costguard.errors import LedgerError
from costguard.ledger import SQLiteLedger, open_ledger
from costguard.ledger.sqlite import SCHEMA_VERSION
from costguard.usage import (
    ModelCallRecord,
    PeriodLimit,
    RequestSegment,
    Reservation,
    Totals,
    ToolCallRecord,
    ViolationRecord,
)

DAY = PeriodLimit("day:2026-11-22", 1_000)
MONTH = PeriodLimit("month:2026-11", 5_000)


def segment(
    request_id: str,
    cost: int,
    *,
    session: str = "s-1",
    workflow: str = "wf",
    reservation: Reservation | None = None,
    previous: Totals | None = None,
    violations: list[ViolationRecord] | None = None,
) -> RequestSegment:
    before = previous or Totals()
    totals = before.copy()
    totals.model_calls += 1
    totals.tool_calls += 1
    totals.input_tokens += 100
    totals.output_tokens += 10
    totals.cost_nanos += cost
    totals.tool_response_bytes += 500
    totals.max_tool_response_bytes = max(totals.max_tool_response_bytes, 500)
    return RequestSegment(
        request_id=request_id,
        workflow=workflow,
        session_id=session,
        user_id="u-1",
        operation="InvokeAgent",
        agent_id="A1",
        agent_alias_id="AL1",
        started_ms=1_000,
        ended_ms=2_000,
        status="ok",
        totals=totals,
        delta=totals.minus(before),
        latency_ms=1000,
        model_latency_ms=800,
        tool_latency_ms=100,
        unknown_events=0,
        unpriced_calls=0,
        return_control_id=None,
        model_calls=[
            ModelCallRecord(request_id, workflow, session, 1500, "m", "m", "ORCHESTRATION", 100, 10, 0, 0, cost, True)
        ],
        tool_calls=[ToolCallRecord(request_id, workflow, session, 1600, "ACTION_GROUP", "g::f", 500, 12)],
        violations=violations or [],
        reservation=reservation,
    )


@pytest.fixture()
def ledger(tmp_path: Path) -> SQLiteLedger:
    led = SQLiteLedger(tmp_path / "nested" / "ledger.db")
    yield led
    led.close()


def test_reserve_refuses_what_does_not_fit_and_reports_why(ledger: SQLiteLedger) -> None:
    ok = ledger.reserve("wf", [DAY, MONTH], 600)
    assert ok.ok and ok.reservation is not None and ok.reservation.amount_nanos == 600
    refused = ledger.reserve("wf", [DAY, MONTH], 600)
    assert not refused.ok
    assert (refused.failed_period, refused.limit_nanos, refused.committed_nanos) == ("day:2026-11-22", 1_000, 600)
    # An unlimited period never refuses, but is still counted.
    free = ledger.reserve("wf", [PeriodLimit("day:2026-11-22", None)], 10_000)
    assert free.ok
    counters = {c.period: c for c in ledger.budget_counters("wf")}
    assert counters["day:2026-11-22"].reserved_nanos == 10_600
    assert counters["month:2026-11"].reserved_nanos == 600


def test_record_settles_reservation_to_actual_cost(ledger: SQLiteLedger) -> None:
    held = ledger.reserve("wf", [DAY, MONTH], 300).reservation
    assert held is not None
    extended = ledger.extend_reservation(held, 200)
    assert extended.ok and held.amount_nanos == 500
    ledger.record(segment("r1", 420, reservation=held))
    counters = {c.period: (c.spent_nanos, c.reserved_nanos) for c in ledger.budget_counters()}
    assert counters == {"day:2026-11-22": (420, 0), "month:2026-11": (420, 0)}
    usage = ledger.session_usage("s-1")
    assert usage is not None
    assert (usage.requests, usage.model_calls, usage.tool_calls, usage.input_tokens) == (1, 1, 1, 100)
    assert usage.cost_usd == Decimal("0.00000042")
    assert usage.max_tool_response_bytes == 500


def test_release_gives_the_hold_back(ledger: SQLiteLedger) -> None:
    held = ledger.reserve("wf", [DAY], 900).reservation
    assert held is not None
    ledger.release(held)
    assert ledger.reserve("wf", [DAY], 1_000).ok


def test_continuation_segments_update_one_request_and_count_one_session_request(ledger: SQLiteLedger) -> None:
    first = segment("r1", 100)
    first.return_control_id = "inv-1"
    first.status = "return_control"
    ledger.record(first)
    assert ledger.find_return_control("s-1", "inv-1") == "r1"
    previous = ledger.request_totals("r1")
    assert previous is not None and previous.model_calls == 1
    ledger.record(segment("r1", 50, previous=previous))
    totals = ledger.request_totals("r1")
    assert totals is not None and (totals.model_calls, totals.cost_nanos) == (2, 150)
    usage = ledger.session_usage("s-1")
    assert usage is not None and (usage.requests, usage.model_calls) == (1, 2)
    assert ledger.session_totals("s-1").cost_nanos == 150


def test_violations_round_trip_newest_first(ledger: SQLiteLedger) -> None:
    v1 = ViolationRecord(1, "wf", "s-1", "r1", "LoopCapExceeded", "per_request.max_model_calls", "12", "13", True, {"x": "1"})
    v2 = ViolationRecord(2, "wf", "s-1", "r2", "ResponseTooLarge", "per_request.max_tool_response_bytes", "10", "99", False)
    ledger.record(segment("r1", 1, violations=[v1]))
    ledger.record_violation(v2)
    got = ledger.violations(session_id="s-1")
    assert [v.rule for v in got] == ["per_request.max_tool_response_bytes", "per_request.max_model_calls"]
    assert got[1].detail == {"x": "1"} and got[0].enforced is False
    usage = ledger.session_usage("s-1")
    assert usage is not None and len(usage.violations) == 2
    # A session only ever blocked has no usage but does have its violations.
    ledger.record_violation(ViolationRecord(3, "wf", "s-9", None, "WorkflowBlocked", "kill_switch", "set", "blocked", True))
    blocked_only = ledger.session_usage("s-9")
    assert blocked_only is not None and blocked_only.requests == 0 and len(blocked_only.violations) == 1
    assert ledger.session_usage("never") is None


def test_kill_switch_set_expire_clear(ledger: SQLiteLedger) -> None:
    assert ledger.kill_switch("wf", 0) is None
    ledger.set_kill_switch("wf", "budget gone", "ops@example.com", 100, expires_at_ms=1_000)
    switch = ledger.kill_switch("wf", 500)
    assert switch is not None and switch.reason == "budget gone" and switch.set_by == "ops@example.com"
    assert ledger.kill_switch("wf", 1_000) is None  # expired at period end
    assert [k.workflow for k in ledger.kill_switches(500)] == ["wf"]
    assert ledger.clear_kill_switch("wf", "ops", 600) is True
    assert ledger.clear_kill_switch("wf", "ops", 700) is False
    log = ledger.connection().execute("SELECT action, actor FROM kill_switch_log ORDER BY id").fetchall()
    assert log == [("block", "ops@example.com"), ("unblock", "ops")]


def test_corrupt_file_is_a_ledger_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="bad.db"):
        SQLiteLedger(bad)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    led = SQLiteLedger(tmp_path / "l.db")
    led.connection().execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    led.close()
    with pytest.raises(LedgerError, match="newer costguard"):
        SQLiteLedger(tmp_path / "l.db")


def test_open_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    led = open_ledger(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(led, SQLiteLedger) and led.path == tmp_path / "a.db"
    assert open_ledger(led) is led
    led.close()
    monkeypatch.chdir(tmp_path)
    rel = open_ledger("sqlite:///rel.db")
    assert isinstance(rel, SQLiteLedger) and rel.path == Path("rel.db")
    rel.close()
    monkeypatch.setenv("COSTGUARD_LEDGER", f"sqlite:///{tmp_path}/env.db")
    env = open_ledger(None)
    assert isinstance(env, SQLiteLedger) and env.path == tmp_path / "env.db"
    env.close()
    for bad in ("sqlite:///", "ftp://x", "sqlite://host/x"):
        with pytest.raises(LedgerError):
            open_ledger(bad)
    with pytest.raises(LedgerError, match="DynamoDB"):
        open_ledger("dynamodb://table")


def _spend(path: str, workflow: str, rounds: int, amount: int) -> None:
    led = SQLiteLedger(path)
    for _ in range(rounds):
        result = led.reserve(workflow, [PeriodLimit("day:2026-11-22", 50_000)], amount)
        if result.ok:
            led.record(segment(uuid.uuid4().hex, amount, session=uuid.uuid4().hex, workflow=workflow, reservation=result.reservation))
    led.close()


def _check_budget_invariants(path: Path, workflow: str, limit: int) -> None:
    led = SQLiteLedger(path)
    conn = led.connection()
    spent, reserved = conn.execute(
        "SELECT spent_nanos, reserved_nanos FROM budget_counters WHERE workflow = ? AND period = 'day:2026-11-22'",
        (workflow,),
    ).fetchone()
    rows = conn.execute("SELECT SUM(cost_nanos) FROM model_calls WHERE workflow = ?", (workflow,)).fetchone()[0]
    led.close()
    # THEN no increment was lost, nothing is left reserved, and the budget was never overspent
    assert spent == rows
    assert reserved == 0
    assert spent <= limit


def test_threads_sharing_one_budget_never_lose_an_increment(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SQLiteLedger(path).close()
    threads = [threading.Thread(target=_spend, args=(str(path), "wf", 40, 700)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_budget_invariants(path, "wf", 50_000)


def test_processes_sharing_one_budget_never_lose_an_increment(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SQLiteLedger(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spend, args=(str(path), "wf", 30, 900)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    _check_budget_invariants(path, "wf", 50_000)
