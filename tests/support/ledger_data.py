"""Builders of ledger records shared by the ledger contract, concurrency tests and the bench."""

from __future__ import annotations

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
# 2026-11-22T00:00:00Z: model call timestamps inside the DAY period.
DAY_START_MS = 1_795_305_600_000


def segment(
    request_id: str,
    cost: int,
    *,
    session: str = "s-1",
    workflow: str = "wf",
    reservation: Reservation | None = None,
    previous: Totals | None = None,
    violations: list[ViolationRecord] | None = None,
    model_calls: int = 1,
    ts_ms: int = 1_500,
    model: str = "m",
    tool_bytes: int = 500,
    priced: bool = True,
) -> RequestSegment:
    """A segment of ``model_calls`` calls costing ``cost`` nano-dollars in all, and one tool call."""
    before = previous or Totals()
    totals = before.copy()
    totals.model_calls += model_calls
    totals.tool_calls += 1
    totals.input_tokens += 100 * model_calls
    totals.output_tokens += 10 * model_calls
    totals.cost_nanos += cost
    totals.tool_response_bytes += tool_bytes
    totals.max_tool_response_bytes = max(totals.max_tool_response_bytes, tool_bytes)
    per_call = [cost // model_calls] * model_calls
    per_call[0] += cost - sum(per_call)  # the calls' costs add up to the segment's exactly
    return RequestSegment(
        request_id=request_id,
        workflow=workflow,
        session_id=session,
        user_id="u-1",
        operation="InvokeAgent",
        agent_id="A1",
        agent_alias_id="AL1",
        started_ms=ts_ms - 500,
        ended_ms=ts_ms + 500,
        status="ok",
        totals=totals,
        delta=totals.minus(before),
        latency_ms=1000,
        model_latency_ms=800,
        tool_latency_ms=100,
        unknown_events=0,
        unpriced_calls=0 if priced else model_calls,
        return_control_id=None,
        model_calls=[
            ModelCallRecord(
                request_id, workflow, session, ts_ms + i, model, model, "ORCHESTRATION", 100, 10, 0, 0, c, priced
            )
            for i, c in enumerate(per_call)
        ],
        tool_calls=[ToolCallRecord(request_id, workflow, session, ts_ms + 100, "ACTION_GROUP", "g::f", tool_bytes, 12)],
        violations=violations or [],
        reservation=reservation,
    )
