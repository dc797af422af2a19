from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from costguard.ledger import SQLiteLedger
from costguard.reports import Report, render, table_columns, usage_report
from costguard.usage import ActionRecord, ModelCallRecord, RequestSegment, Totals, ToolCallRecord, ViolationRecord

DAY_MS = 86_400_000
D1 = 1_763_769_600_000  # 2025-11-22T00:00:00Z
D2 = D1 + DAY_MS  # 2025-11-23


def call(
    request_id: str,
    workflow: str,
    session: str,
    ts: int,
    cost: int,
    *,
    model: str = "anthropic.claude-3-5-sonnet",
    agent: str | None = None,
    inp: int = 100,
    out: int = 10,
    user: str | None = "u-1",
) -> ModelCallRecord:
    return ModelCallRecord(
        request_id, workflow, session, ts, "us." + model, model, "ORCHESTRATION", inp, out, 0, 0, cost, True,
        agent=agent, user_id=user,
    )


def segment(
    request_id: str,
    calls: list[ModelCallRecord],
    *,
    workflow: str = "wf-a",
    session: str = "s-1",
    user: str | None = "u-1",
    started: int = D1,
    tools: int = 0,
    violations: list[ViolationRecord] | None = None,
) -> RequestSegment:
    totals = Totals()
    totals.model_calls = len(calls)
    totals.tool_calls = tools
    totals.input_tokens = sum(c.input_tokens for c in calls)
    totals.output_tokens = sum(c.output_tokens for c in calls)
    totals.cache_read_tokens = sum(c.cache_read_tokens for c in calls)
    totals.cache_write_tokens = sum(c.cache_write_tokens for c in calls)
    totals.cost_nanos = sum(c.cost_nanos for c in calls)
    return RequestSegment(
        request_id=request_id,
        workflow=workflow,
        session_id=session,
        user_id=user,
        operation="InvokeAgent",
        agent_id="A1",
        agent_alias_id="AL1",
        started_ms=started,
        ended_ms=started + 1000,
        status="ok",
        totals=totals,
        delta=totals.minus(Totals()),
        latency_ms=1000,
        model_latency_ms=800,
        tool_latency_ms=100,
        unknown_events=0,
        unpriced_calls=0,
        return_control_id=None,
        model_calls=calls,
        tool_calls=[ToolCallRecord(request_id, workflow, session, started + 5, "ACTION_GROUP", "g::f", 10) for _ in range(tools)],
        violations=violations or [],
        reservation=None,
    )


def violation(workflow: str, session: str, request_id: str | None, ts: int, enforced: bool) -> ViolationRecord:
    return ViolationRecord(ts, workflow, session, request_id, "max_model_calls", "per_request.max_model_calls", "1", "2", enforced)


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    led = SQLiteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


@pytest.fixture()
def populated(ledger: SQLiteLedger) -> SQLiteLedger:
    # wf-a, day 1: session s-1 two requests, session s-2 one request (user u-2).
    ledger.record(
        segment(
            "r1",
            [call("r1", "wf-a", "s-1", D1 + 10, 1_000, agent=None), call("r1", "wf-a", "s-1", D1 + 20, 2_000, agent="sub")],
            tools=1,
            violations=[violation("wf-a", "s-1", "r1", D1 + 30, True)],
        )
    )
    ledger.record(
        segment("r2", [call("r2", "wf-a", "s-1", D1 + 110, 500, model="amazon.nova-pro")], started=D1 + 100, tools=2)
    )
    ledger.record(
        segment(
            "r3",
            [call("r3", "wf-a", "s-2", D1 + 210, 7, user="u-2")],
            session="s-2",
            user="u-2",
            started=D1 + 200,
            violations=[violation("wf-a", "s-2", "r3", D1 + 220, False)],
        )
    )
    # wf-b, day 2: one request, u-1, no agent.
    ledger.record(
        segment(
            "r4",
            [call("r4", "wf-b", "s-3", D2 + 10, 123_456_789, model="amazon.nova-pro", inp=1_000, out=200)],
            workflow="wf-b",
            session="s-3",
            started=D2,
        )
    )
    return ledger


def rows_by(report: Report) -> dict[object, dict[str, object]]:
    key = table_columns(report)[0]
    return {r[key]: r for r in report.rows}


def test_by_workflow_report_shows_lambda_spend_and_latency_percentiles(ledger: SQLiteLedger) -> None:
    # GIVEN five requests of wf-a (total latency and time to first token per request)
    for n, (latency, ttft) in enumerate([(300, 70), (100, 50), (1000, None), (200, 60), (400, 80)]):
        seg = segment(f"r{n}", [call(f"r{n}", "wf-a", "s-1", D1 + n, 1000)], started=D1 + n)
        seg.latency_ms, seg.ttft_ms = latency, ttft
        ledger.record(seg)
    # AND action group Lambda spend in wf-a, and in wf-tools (a workflow with no model calls)
    for workflow, nanos in (("wf-a", 16_867), ("wf-a", 8_533), ("wf-tools", 6_867)):
        ledger.record_action(ActionRecord(D1, workflow, "claims get_claim", "s-1", None, 10, 10, 0, 0, 0, "passed",
                                          cost_nanos=nanos, billed_ms=1000, memory_mb=1024, architecture="x86_64"))
    report = usage_report(ledger.connection(), group_by="workflow")
    rows = rows_by(report)
    a = rows["wf-a"]
    assert (a["cost_usd"], a["lambda_cost_usd"]) == (Decimal("0.000005"), Decimal("0.0000254"))
    # Nearest rank: p50 of 5 is the 3rd smallest, p95 the 5th; of 4 ttfts, the 2nd and the 4th.
    assert (a["latency_p50_ms"], a["latency_p95_ms"], a["ttft_p50_ms"], a["ttft_p95_ms"]) == (300, 1000, 60, 80)
    tools = rows["wf-tools"]
    assert (tools["requests"], tools["cost_usd"], tools["lambda_cost_usd"]) == (0, Decimal(0), Decimal("0.000006867"))
    assert tools["latency_p50_ms"] is None
    assert report.totals()["lambda_cost_usd"] == Decimal("0.000032267")
    assert "latency_p50_ms" not in report.totals()
    # AND the action report carries each action's Lambda spend
    actions = usage_report(ledger.connection(), group_by="action")
    assert {(r["workflow"], r["lambda_cost_usd"]) for r in actions.rows} == {
        ("wf-a", Decimal("0.0000254")), ("wf-tools", Decimal("0.000006867"))}
    for fmt in ("json", "csv", "markdown"):
        assert "lambda_cost_usd" in render(report, fmt) and "ttft_p95_ms" in render(report, fmt)
    assert "lambda cost usd" in render(report, "html")


def test_group_by_workflow_exact_totals(populated: SQLiteLedger) -> None:
    report = usage_report(populated.connection(), since_ms=None, until_ms=None, workflow=None, group_by="workflow")
    rows = rows_by(report)
    assert list(rows) == ["wf-b", "wf-a"]  # most expensive first
    a = rows["wf-a"]
    assert (a["sessions"], a["requests"], a["model_calls"], a["tool_calls"]) == (2, 3, 4, 3)
    assert (a["input_tokens"], a["output_tokens"], a["cache_read_tokens"], a["cache_write_tokens"]) == (400, 40, 0, 0)
    assert a["cost_usd"] == Decimal("0.000003507")
    assert (a["violations"], a["shadow_violations"]) == (1, 1)
    b = rows["wf-b"]
    assert (b["sessions"], b["requests"], b["model_calls"], b["cost_usd"]) == (1, 1, 1, Decimal("0.123456789"))
    assert (b["violations"], b["shadow_violations"]) == (0, 0)
    assert table_columns(report) == [
        "workflow", "sessions", "requests", "model_calls", "tool_calls", "input_tokens", "output_tokens",
        "cache_read_tokens", "cache_write_tokens", "cost_usd", "violations", "shadow_violations",
        "lambda_cost_usd", "ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms",
    ]
    assert report.totals()["cost_usd"] == Decimal("0.123460296")
    assert [s["session_id"] for s in report.top_sessions] == ["s-3", "s-1", "s-2"]
    s1 = report.top_sessions[1]
    assert (s1["workflow"], s1["requests"], s1["model_calls"], s1["cost_usd"]) == ("wf-a", 2, 3, Decimal("0.0000035"))
    assert report.daily == [
        {"day": "2025-11-22", "workflow": "wf-a", "cost_usd": Decimal("0.000003507")},
        {"day": "2025-11-23", "workflow": "wf-b", "cost_usd": Decimal("0.123456789")},
    ]
    assert sorted(report.cost_per_request) == [
        Decimal("0.000000007"), Decimal("0.0000005"), Decimal("0.000003"), Decimal("0.123456789"),
    ]


def test_group_by_day(populated: SQLiteLedger) -> None:
    report = usage_report(populated.connection(), since_ms=None, until_ms=None, workflow=None, group_by="day")
    assert [r["day"] for r in report.rows] == ["2025-11-22", "2025-11-23"]
    d1, d2 = report.rows
    assert (d1["sessions"], d1["requests"], d1["model_calls"], d1["cost_usd"]) == (2, 3, 4, Decimal("0.000003507"))
    assert (d1["violations"], d1["shadow_violations"]) == (1, 1)
    assert (d2["sessions"], d2["requests"], d2["input_tokens"], d2["output_tokens"]) == (1, 1, 1_000, 200)


def test_group_by_user(populated: SQLiteLedger) -> None:
    report = usage_report(populated.connection(), since_ms=None, until_ms=None, workflow=None, group_by="user")
    rows = rows_by(report)
    assert set(rows) == {"u-1", "u-2"}
    assert (rows["u-1"]["requests"], rows["u-1"]["sessions"], rows["u-1"]["cost_usd"]) == (3, 2, Decimal("0.123460289"))
    assert (rows["u-2"]["requests"], rows["u-2"]["cost_usd"], rows["u-2"]["shadow_violations"]) == (
        1, Decimal("0.000000007"), 1,
    )
    assert rows["u-1"]["violations"] == 1


def test_group_by_model(populated: SQLiteLedger) -> None:
    report = usage_report(populated.connection(), since_ms=None, until_ms=None, workflow=None, group_by="model")
    assert table_columns(report) == [
        "model", "requests", "model_calls", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_tokens", "cost_usd",
    ]
    rows = rows_by(report)
    nova, claude = rows["amazon.nova-pro"], rows["anthropic.claude-3-5-sonnet"]
    assert (nova["requests"], nova["model_calls"], nova["input_tokens"], nova["cost_usd"]) == (
        2, 2, 1_100, Decimal("0.123457289"),
    )
    assert (claude["requests"], claude["model_calls"], claude["output_tokens"], claude["cost_usd"]) == (
        2, 3, 30, Decimal("0.000003007"),
    )
    assert list(rows) == ["amazon.nova-pro", "anthropic.claude-3-5-sonnet"]


def test_group_by_agent(populated: SQLiteLedger) -> None:
    report = usage_report(populated.connection(), since_ms=None, until_ms=None, workflow=None, group_by="agent")
    rows = rows_by(report)
    # the invoked agent's own steps carry the agent id the request was made to
    assert set(rows) == {"A1", "sub"}
    assert (rows["sub"]["requests"], rows["sub"]["model_calls"], rows["sub"]["cost_usd"]) == (1, 1, Decimal("0.000002"))
    invoked = rows["A1"]
    assert (invoked["requests"], invoked["model_calls"], invoked["cost_usd"]) == (4, 4, Decimal("0.123458296"))


def test_date_and_workflow_filters(populated: SQLiteLedger) -> None:
    conn = populated.connection()
    day1 = usage_report(conn, since_ms=D1, until_ms=D2, workflow=None, group_by="workflow")
    assert [r["workflow"] for r in day1.rows] == ["wf-a"]
    assert day1.rows[0]["requests"] == 3
    # until is exclusive: a window ending at r2's start leaves r2 (and r3) out.
    early = usage_report(conn, since_ms=D1, until_ms=D1 + 100, workflow=None, group_by="workflow")
    assert (early.rows[0]["requests"], early.rows[0]["cost_usd"]) == (1, Decimal("0.000003"))
    assert (early.rows[0]["violations"], early.rows[0]["shadow_violations"]) == (1, 0)
    day2 = usage_report(conn, since_ms=D2, until_ms=None, workflow=None, group_by="model")
    assert [r["model"] for r in day2.rows] == ["amazon.nova-pro"]
    assert day2.rows[0]["cost_usd"] == Decimal("0.123456789")
    only_b = usage_report(conn, since_ms=None, until_ms=None, workflow="wf-b", group_by="day")
    assert [(r["day"], r["requests"]) for r in only_b.rows] == [("2025-11-23", 1)]
    assert [s["session_id"] for s in only_b.top_sessions] == ["s-3"]


def test_decimal_exactness(ledger: SQLiteLedger) -> None:
    ledger.record(
        segment("r1", [call("r1", "wf-a", "s-1", D1 + i, 1) for i in range(3)])
    )
    for group_by in ("workflow", "day", "user", "model", "agent"):
        report = usage_report(ledger.connection(), since_ms=None, until_ms=None, workflow=None, group_by=group_by)
        assert report.rows[0]["cost_usd"] == Decimal("0.000000003")
    doc = json.loads(render(report, "json"))
    assert doc["rows"][0]["cost_usd"] == "0.000000003"
    assert doc["totals"]["cost_usd"] == "0.000000003"
    assert doc["cost_per_request"] == ["0.000000003"]
    assert render(report, "csv").splitlines()[1].endswith(",0.000000003")


def test_empty_ledger_renders_everything(ledger: SQLiteLedger) -> None:
    for group_by in ("workflow", "day", "user", "model", "agent"):
        report = usage_report(ledger.connection(), since_ms=D1, until_ms=D2, workflow=None, group_by=group_by)
        assert report.rows == [] and report.top_sessions == [] and report.daily == [] and report.cost_per_request == []
        doc = json.loads(render(report, "json"))
        assert doc["rows"] == [] and doc["group_by"] == group_by and doc["since"].startswith("2025-11-22")
        page = render(report, "html", budgets={"wf-a": Decimal("100")})
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
        assert "<svg" in page  # the budget chart still draws with no spend
        assert render(report, "csv").strip() == ",".join(table_columns(report))
        assert "(no usage)" in render(report, "markdown")


def test_renderers(populated: SQLiteLedger) -> None:
    report = usage_report(populated.connection(), since_ms=None, until_ms=None, workflow=None, group_by="workflow")
    doc = json.loads(render(report, "json"))
    assert doc["rows"][0]["cost_usd"] == "0.123456789"
    assert doc["daily"][0] == {"day": "2025-11-22", "workflow": "wf-a", "cost_usd": "0.000003507"}
    parsed = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [r["workflow"] for r in parsed] == ["wf-b", "wf-a"]
    assert parsed[1]["cost_usd"] == "0.000003507" and parsed[1]["sessions"] == "2"
    md = render(report, "markdown")
    assert "| workflow | sessions |" in md and "| wf-a | 2 | 3 |" in md
    page = render(report, "html", budgets={"wf-b": Decimal("0.10"), "wf-a": Decimal("5")})
    assert page.count("<svg") == 4  # daily, two burn charts, histogram
    assert "<script" not in page and "<link" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "Budget burn" in page and "wf-b" in page
    assert "<svg" in render(report, "html")
    with pytest.raises(ValueError):
        render(report, "xml")
    with pytest.raises(ValueError):
        usage_report(populated.connection(), since_ms=None, until_ms=None, workflow=None, group_by="team")


def test_html_escapes_names(ledger: SQLiteLedger) -> None:
    nasty = '<script>alert("x")</script>'
    ledger.record(segment("r1", [call("r1", nasty, "s&1", D1, 5, model=nasty)], workflow=nasty, session="s&1", user=nasty))
    for group_by in ("workflow", "user", "model"):
        report = usage_report(ledger.connection(), since_ms=None, until_ms=None, workflow=None, group_by=group_by)
        page = render(report, "html", budgets={nasty: Decimal("1")})
        assert "<script" not in page
        assert "&lt;script&gt;" in page and "s&amp;1" in page
    md = render(usage_report(ledger.connection(), since_ms=None, until_ms=None, workflow=None), "markdown")
    assert "s&1" in md
