"""What an endpoint or a caller can send that once broke the meter or slipped past it.

The "before" of each case (issue: nothing a caller, an endpoint or an attacker sends breaks the
meter) is in its docstring; each test asserts the "after". Everything goes over the wire to the
local endpoint with stock boto3 clients, and the caller must see exactly what unwrapped boto3
would have given it.
"""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

import costguard
from tests.support.converse_loop import guard_for, ledger_rows
from tests.support.traces import SONNET, part
from tests.support.wire import FakeBedrock

NOVA_MICRO = "amazon.nova-micro-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hello"}]}]


def model_rows(guard: costguard.Guard) -> list[dict[str, Any]]:
    return ledger_rows(guard, "model_calls")


def malformed_agent_events() -> list[dict[str, Any]]:
    def call(trace_id: str, model: Any, usage: dict[str, Any]) -> list[dict[str, Any]]:
        mii = {"traceId": trace_id, "type": "ORCHESTRATION", "foundationModel": model}
        mio = {"traceId": trace_id, "metadata": {"usage": usage, "totalTimeMs": 10}}
        return [part({"orchestrationTrace": {"modelInvocationInput": mii}}), part({"orchestrationTrace": {"modelInvocationOutput": mio}})]

    tool = "claims\ud800"  # a lone surrogate, as a JSON "\ud800" escape decodes to
    return [
        *call("t1", 123, {"inputTokens": 100, "outputTokens": 10}),  # a non-string model id
        *call("t2", SONNET, {"inputTokens": 2**62, "outputTokens": 1}),  # absurd count
        *call("t3", SONNET, {"inputTokens": "250", "outputTokens": 2.9}),  # string and float counts
        *call("t4", SONNET, {"inputTokens": -5, "outputTokens": None}),  # negative and null
        part({"orchestrationTrace": {"invocationInput": {"traceId": "t5", "invocationType": "ACTION_GROUP",
                                                         "actionGroupInvocationInput": {"actionGroupName": tool, "function": "f"}}}}),
        part({"orchestrationTrace": {"observation": {"traceId": "t5", "type": "ACTION_GROUP",
                                                     "actionGroupInvocationOutput": {"text": "ok\udfff"}}}}),
        {"chunk": {"bytes": b"done"}},
    ]


def test_malformed_trace_fields_reach_the_caller_untouched_and_are_recorded_as_suspect(fake: FakeBedrock, tmp_path: Path) -> None:
    """Before: a non-string foundationModel raised TypeError into the caller; inputTokens 2**62
    raised OverflowError, recorded nothing and left the daily budget held; a lone surrogate in a
    tool name raised UnicodeEncodeError; string, float or negative counts silently became 0."""
    events = malformed_agent_events()
    fake.queue_agent_response(events)
    fake.queue_agent_response(events)
    raw = fake.client("bedrock-agent-runtime")
    unwrapped = list(raw.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId="s-0", inputText="hi", enableTrace=True)["completion"])
    guard = guard_for(tmp_path, "budget: {daily_usd: 1000}")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    wrapped = list(agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId="s-1", inputText="hi", enableTrace=True)["completion"])
    assert wrapped == unwrapped
    rows = model_rows(guard)
    assert [r["model_id"] for r in rows] == ["123", SONNET, SONNET, SONNET]
    assert [(r["input_tokens"], r["output_tokens"]) for r in rows] == [(100, 10), (10_000_000, 1), (250, 2), (0, 0)]
    assert [r["flags"] for r in rows] == ["unpriced", "usage_suspect", "usage_suspect", "usage_suspect"]
    usage = guard.session_usage("s-1")
    assert (usage.model_calls, usage.tool_calls, usage.max_tool_response_bytes) == (4, 1, len("ok\ufffd".encode()))
    guard.flush(release_slices=True)  # the slice's unspent hold goes back to the budget
    assert all(c.reserved_nanos == 0 for c in guard.ledger.budget_counters("wf"))
    conn = sqlite3.connect(guard.ledger.path)  # type: ignore[attr-defined]
    try:
        (name,) = conn.execute("SELECT name FROM tool_calls").fetchone()
    finally:
        conn.close()
    assert name == "claims\ufffd::f"


def test_every_converse_attempt_that_timed_out_is_settled_at_an_estimate(fake: FakeBedrock, tmp_path: Path) -> None:
    """Before: on read timeouts the endpoint served 4 requests and the meter recorded 0."""
    guard = guard_for(tmp_path, "budget: {daily_usd: 1000}")
    runtime = guard.wrap(fake.client("bedrock-runtime", attempts=3, read_timeout=0.3), workflow="wf", session_id="s-t")
    for _ in range(3):
        fake.queue_converse(100, 10, delay=0.6)
    with pytest.raises(ReadTimeoutError):
        runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES, inferenceConfig={"maxTokens": 50})
    assert len(fake.requests) == 3
    rows = model_rows(guard)
    assert len(rows) == 3
    assert {r["flags"] for r in rows} == {"estimated,usage_unknown"}
    assert {r["output_tokens"] for r in rows} == {50}  # maxTokens: the most the model could have written
    assert all(r["cost_nanos"] > 0 for r in rows)
    guard.flush(release_slices=True)
    assert all(c.reserved_nanos == 0 for c in guard.ledger.budget_counters("wf"))
    assert guard.session_usage("s-t").model_calls == 3


def test_a_timed_out_attempt_followed_by_a_success_counts_both(fake: FakeBedrock, tmp_path: Path) -> None:
    """Before: a timed-out first attempt followed by a success metered 1 of 2."""
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime", attempts=2, read_timeout=0.3), workflow="wf", session_id="s-r")
    fake.queue_converse(100, 10, delay=0.6)
    fake.queue_converse(120, 12)
    response = runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    assert response["usage"]["inputTokens"] == 120
    rows = model_rows(guard)
    assert [(r["flags"], r["input_tokens"]) for r in rows][1] == ("", 120)
    assert rows[0]["flags"] == "estimated,usage_unknown"
    assert guard.session_usage("s-r").model_calls == 2


def test_an_abandoned_stream_gives_its_hold_back_and_its_connection_up(fake: FakeBedrock, tmp_path: Path) -> None:
    """Before: a stream never iterated, or broken out of, kept its hold and its HTTP connection
    until garbage collection."""
    guard = guard_for(tmp_path, "budget: {daily_usd: 1000}")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-a")
    fake.queue_converse_stream(10, 1)
    with runtime.converse_stream(modelId=NOVA_MICRO, messages=MESSAGES)["stream"] as stream:
        next(iter(stream))
    guard.flush(release_slices=True)
    assert all(c.reserved_nanos == 0 for c in guard.ledger.budget_counters("wf"))
    assert fake.wait_for_stream_end().client_hung_up or fake.wait_for_stream_end().completed
    (row,) = model_rows(guard)
    assert "usage_unknown" in row["flags"]  # broken off before its usage: priced at an estimate
    fake.queue_converse_stream(10, 1)
    response = runtime.converse_stream(modelId=NOVA_MICRO, messages=MESSAGES)
    del response
    gc.collect()
    guard.flush(release_slices=True)
    assert all(c.reserved_nanos == 0 for c in guard.ledger.budget_counters("wf"))


def test_wrap_refuses_ids_no_ledger_can_store_before_anything_is_sent(fake: FakeBedrock, tmp_path: Path) -> None:
    """Before: a session id no ledger key could hold let the model call go out, then failed to
    record it, and the hold leaked."""
    guard = guard_for(tmp_path)
    client = fake.client("bedrock-runtime")
    for bad in ("x" * 9000, "s\ud800", 42):
        with pytest.raises(costguard.CostguardError):
            guard.wrap(client, workflow="wf", session_id=bad)  # type: ignore[arg-type]
    assert fake.requests == []


def test_raw_user_ids_only_by_explicit_opt_in(fake: FakeBedrock, tmp_path: Path) -> None:
    hashed = guard_for(tmp_path)
    raw = costguard.Guard(hashed.policies, ledger=f"sqlite:///{tmp_path}/raw.db", user_id_key=False)
    for guard in (hashed, raw):
        fake.queue_converse(10, 1)
        guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-u", user_id="alice@example.com").converse(
            modelId=NOVA_MICRO, messages=MESSAGES)
    assert hashed.session_usage("s-u").user_id != "alice@example.com"
    assert raw.session_usage("s-u").user_id == "alice@example.com"
    hashed.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*") if p.is_file())
    assert stored and b"alice@example.com" not in stored
