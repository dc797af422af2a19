"""The Guard around stock boto3 clients talking to a local endpoint in the real wire formats."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EventStreamError

import costguard
from costguard.metrics import EMFMetricsSink
from costguard.policy import PolicySet
from tests.support.traces import SONNET, Loop, agent_loop
from tests.support.wire import FakeBedrock

NOVA_MICRO = "amazon.nova-micro-v1:0"


def policies(yaml_workflow: str) -> PolicySet:
    return PolicySet.from_yaml("version: 1\nworkflows:\n  wf:\n" + "\n".join("    " + line for line in yaml_workflow.strip().splitlines()))


def guard_for(tmp_path: Path, yaml_workflow: str = "mode: enforce") -> costguard.Guard:
    return costguard.Guard(policies(yaml_workflow), ledger=f"sqlite:///{tmp_path}/ledger.db")


def sonnet_cost(i: int, o: int) -> Decimal:
    return Decimal(i) * Decimal("3.00") / 1_000_000 + Decimal(o) * Decimal("15.00") / 1_000_000


def invoke(agents: Any, session: str = "s-1", **kw: Any) -> list[dict[str, Any]]:
    response = agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId=session, inputText="hi", **kw)
    return list(response["completion"])


def test_normal_loop_exact_totals_and_traces_hidden(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN a 5-step loop served in the event-stream wire format
    loop = agent_loop(5, tool_bytes=700)
    fake.queue_agent_response(loop.events)
    guard = guard_for(tmp_path)
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf", user_id="u-42")
    # WHEN the caller reads the completion without asking for traces
    events = invoke(agents)
    # THEN the caller sees only the chunk, the meter turned tracing on, totals are exact
    assert events == [{"chunk": {"bytes": b"done"}}]
    assert fake.requests[0]["body"]["enableTrace"] is True
    usage = guard.session_usage("s-1")
    assert (usage.requests, usage.model_calls, usage.tool_calls) == (1, loop.model_calls, loop.tool_calls) == (1, 7, 5)
    assert (usage.input_tokens, usage.output_tokens) == (loop.input_tokens, loop.output_tokens)
    assert usage.cost_usd == sonnet_cost(loop.input_tokens, loop.output_tokens)
    assert usage.max_tool_response_bytes == 700 and usage.workflow == "wf"
    # user ids are stored as keyed hashes by default (the key kept with the ledger), never raw
    assert usage.user_id is not None and usage.user_id.startswith("h:") and len(usage.user_id) == 34
    assert usage.violations == []


def test_caller_that_asked_for_traces_gets_them(fake: FakeBedrock, tmp_path: Path) -> None:
    loop = agent_loop(1)
    fake.queue_agent_response(loop.events)
    agents = guard_for(tmp_path).wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    events = invoke(agents, enableTrace=True)
    assert len(events) == len(loop.events)
    assert events[1]["trace"]["trace"] == loop.events[1]["trace"]["trace"]


def test_loop_cap_mid_stream_closes_the_connection(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN a runaway loop of 30 steps and a cap of 12 model calls per request
    loop = agent_loop(30, tool_bytes=300)
    fake.queue_agent_response(loop.events)
    guard = guard_for(tmp_path, "per_request: {max_model_calls: 12}")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    # WHEN the stream is read
    with pytest.raises(costguard.LoopCapExceeded) as caught:
        invoke(agents)
    # THEN the violation says what, where and by how much
    violation = caught.value
    assert (violation.rule, violation.limit, violation.observed) == ("per_request.max_model_calls", 12, 13)
    assert violation.to_dict()["session_id"] == "s-1" and violation.workflow == "wf"
    # AND the endpoint saw the client hang up long before the end
    stream = fake.wait_for_stream_end()
    assert stream.client_hung_up and not stream.completed
    assert stream.events_sent < stream.events_total
    # AND the usage so far is recorded with the enforced violation
    usage = guard.session_usage("s-1")
    assert usage.model_calls == 12
    assert [(v.rule, v.enforced) for v in usage.violations] == [("per_request.max_model_calls", True)]


def test_oversize_action_group_response(fake: FakeBedrock, tmp_path: Path) -> None:
    loop = agent_loop(3, tool_bytes=500)
    big = '{"rows": "' + "é" * 9000 + '"}'  # 18 KB in UTF-8, 9 K characters
    loop.events[6:6] = Loop().action_group(big, "t-x").events
    fake.queue_agent_response(loop.events)
    guard = guard_for(tmp_path, "per_request: {max_tool_response_bytes: 16384}")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    with pytest.raises(costguard.ResponseTooLarge) as caught:
        invoke(agents)
    assert caught.value.observed == len(big.encode()) > 16384 > len(big)
    assert caught.value.detail["tool"] == "claims::get_claim"
    assert guard.session_usage("s-1").max_tool_response_bytes == len(big.encode())


def test_shadow_mode_records_and_blocks_nothing(fake: FakeBedrock, tmp_path: Path) -> None:
    loop = agent_loop(8, tool_bytes=3000)
    fake.queue_agent_response(loop.events)
    guard = guard_for(tmp_path, "mode: shadow\nper_request: {max_model_calls: 3, max_tool_response_bytes: 1000}")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    events = invoke(agents)
    assert events[-1] == {"chunk": {"bytes": b"done"}}
    assert fake.wait_for_stream_end().completed
    usage = guard.session_usage("s-1")
    assert usage.model_calls == loop.model_calls
    rules = sorted((v.rule, v.enforced) for v in usage.violations)
    assert rules == [("per_request.max_model_calls", False), ("per_request.max_tool_response_bytes", False)]


def test_return_control_continuation_is_the_same_request(fake: FakeBedrock, tmp_path: Path) -> None:
    first = Loop().model_call(SONNET, 1000, 50, "t-0")
    first.events.append({"returnControl": {"invocationId": "inv-9", "invocationInputs": [{"functionInvocationInput": {"actionGroup": "claims", "function": "lookup"}}]}})
    second = Loop().model_call(SONNET, 1500, 80, "t-1").model_call(SONNET, 1600, 90, "t-2").answer()
    fake.queue_agent_response(first.events)
    fake.queue_agent_response(second.events)
    guard = guard_for(tmp_path, "per_request: {max_model_calls: 2}")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    assert any("returnControl" in e for e in invoke(agents))
    state = {"invocationId": "inv-9", "returnControlInvocationResults": [{"functionResult": {"actionGroup": "claims", "function": "lookup", "responseBody": {"TEXT": {"body": "42"}}}}]}
    # The continuation's second model call is the request's third: over the cap of 2.
    with pytest.raises(costguard.LoopCapExceeded) as caught:
        invoke(agents, sessionState=state)
    assert caught.value.observed == 3
    assert fake.requests[1]["body"]["sessionState"]["invocationId"] == "inv-9"
    usage = guard.session_usage("s-1")
    assert usage.requests == 1 and usage.model_calls == 2
    request_ids = {v.request_id for v in usage.violations}
    conn = guard.ledger.connection()  # type: ignore[attr-defined]
    assert conn.execute("SELECT COUNT(*), MAX(segments) FROM requests").fetchone() == (1, 2)
    assert request_ids == {conn.execute("SELECT request_id FROM requests").fetchone()[0]}


def test_multi_agent_spend_attributed_to_collaborator(fake: FakeBedrock, tmp_path: Path) -> None:
    sup = "arn:aws:bedrock:us-east-1:111122223333:agent-alias/SUP/A"
    col = "arn:aws:bedrock:us-east-1:111122223333:agent-alias/COL/B"
    loop = Loop().model_call(SONNET, 1000, 100, "r-0", caller_chain=[sup])
    loop.model_call(NOVA_MICRO, 2000, 200, "c-0", caller_chain=[sup, col], collaborator="billing")
    loop.answer()
    fake.queue_agent_response(loop.events)
    guard = guard_for(tmp_path)
    invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    guard.flush()
    rows = guard.ledger.connection().execute("SELECT agent, base_model_id, cost_nanos FROM model_calls ORDER BY id").fetchall()  # type: ignore[attr-defined]
    assert rows == [(None, SONNET, 4_500_000), ("billing", NOVA_MICRO, 98_000)]
    assert guard.session_usage("s-1").cost_usd == Decimal("0.004598")


def test_throttling_mid_stream_records_usage_so_far(fake: FakeBedrock, tmp_path: Path) -> None:
    loop = agent_loop(4)
    fake.queue_agent_response(loop.events, exception_after=6)
    guard = guard_for(tmp_path)
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    with pytest.raises(EventStreamError) as caught:
        invoke(agents)
    assert caught.value.response["Error"]["Code"] == "throttlingException"
    usage = guard.session_usage("s-1")
    # The six events before the exception: pre-processing, one orchestration call, one tool call.
    assert (usage.model_calls, usage.tool_calls, usage.input_tokens) == (2, 1, 1800)
    status = guard.ledger.connection().execute("SELECT status FROM requests").fetchone()[0]  # type: ignore[attr-defined]
    assert status == "throttled"


def test_converse_cap_blocks_before_sending(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path, "per_session: {max_model_calls: 2}\nmodels: {allow: ['amazon.nova-*']}")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="c-1")
    messages = [{"role": "user", "content": [{"text": "hi"}]}]
    fake.queue_converse(100, 10, cache_read=50)
    fake.queue_converse(200, 20)
    runtime.converse(modelId=NOVA_MICRO, messages=messages)
    runtime.converse(modelId=f"us.{NOVA_MICRO}", messages=messages)
    with pytest.raises(costguard.LoopCapExceeded):
        runtime.converse(modelId=NOVA_MICRO, messages=messages)
    with pytest.raises(costguard.ModelNotAllowed):
        runtime.converse(modelId=SONNET, messages=messages)
    assert len(fake.requests) == 2  # the blocked calls never left the process
    usage = guard.session_usage("c-1")
    assert (usage.model_calls, usage.input_tokens, usage.cache_read_tokens) == (2, 300, 50)


def test_daily_budget_exhausted_by_one_session_blocks_the_next(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN a $0.10 daily budget and a loop that costs more than that
    loop = agent_loop(10, tool_bytes=4000, base_input=3000)
    assert sonnet_cost(loop.input_tokens, loop.output_tokens) > Decimal("0.10")
    fake.queue_agent_response(loop.events)
    guard = guard_for(tmp_path, "budget: {daily_usd: 0.10}")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    # WHEN the first session runs, it is stopped when its spend crosses the budget
    with pytest.raises(costguard.BudgetExceeded):
        invoke(agents, session="first")
    # The 7th model call takes the spend over $0.10: pre-processing (800 in, 40 out), then calls
    # of 100 out on a context starting at 3,000 input tokens and growing 1,100 a step
    calls = [(800, 40)] + [(3000 + 1100 * step, 100) for step in range(6)]
    expected = sum((sonnet_cost(i, o) for i, o in calls), Decimal(0))
    assert expected == Decimal("0.1155")
    guard.flush(release_slices=True)
    spent = guard.ledger.budget_counters("wf")[0]
    assert (spent.reserved_nanos, spent.spent_usd, guard.session_usage("first").cost_usd) == (0, expected, expected)
    # AND the next session is refused before anything is sent
    with pytest.raises(costguard.BudgetExceeded) as caught:
        invoke(agents, session="second")
    assert caught.value.rule == "budget.daily_usd" and len(fake.requests) == 1
    assert [v.rule for v in guard.session_usage("second").violations] == ["budget.daily_usd"]


def test_kill_switch_blocks_before_sending(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    guard.ledger.set_kill_switch("wf", "runaway spend", "ops", guard.now_ms())
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    with pytest.raises(costguard.WorkflowBlocked) as caught:
        invoke(agents)
    assert caught.value.detail["reason"] == "runaway spend" and fake.requests == []


def test_converse_stream_and_invoke_model_are_metered(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="rt")
    fake.queue_converse_stream(400, 40)
    events = list(runtime.converse_stream(modelId=NOVA_MICRO, messages=[{"role": "user", "content": [{"text": "x"}]}])["stream"])
    assert "metadata" in events[-1]
    fake.queue_invoke_model({"completion": "hi"}, 30, 3)
    runtime.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=b"{}")
    usage = guard.session_usage("rt")
    assert (usage.model_calls, usage.input_tokens, usage.output_tokens) == (2, 430, 43)
    expected = Decimal(400) * Decimal("0.035") / 10**6 + Decimal(40) * Decimal("0.14") / 10**6 + Decimal(30) * Decimal("0.25") / 10**6 + Decimal(3) * Decimal("1.25") / 10**6
    assert usage.cost_usd == expected


def test_aws_error_before_the_stream_releases_the_reservation(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN a budgeted workflow whose agent is throttled before any event is streamed
    stream = io.StringIO()
    guard = costguard.Guard(policies("budget: {daily_usd: 5}"), ledger=f"sqlite:///{tmp_path}/ledger.db",
                            metrics=EMFMetricsSink(stream=stream))
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    fake.queue_error(429, "ThrottlingException", "slow down", operation="InvokeAgent")
    # WHEN the caller invokes the agent (the test client makes one attempt, no retries)
    with pytest.raises(ClientError) as caught:
        invoke(agents)
    # THEN it is the throttle that stopped it, on the one attempt the client made
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert [r["path"] for r in fake.requests] == ["/agents/AGENT1/agentAliases/ALIAS1/sessions/s-1/text"]
    # AND the meter ended the request as throttled (one Throttles count for the workflow) ...
    guard.flush_metrics()
    throttles = [line for line in map(json.loads, stream.getvalue().splitlines()) if "Throttles" in line]
    assert [(t["Workflow"], t["Throttles"]) for t in throttles] == [("wf", 1)]
    # ... and released what it held
    guard.flush(release_slices=True)
    assert [(c.reserved_nanos, c.spent_nanos) for c in guard.ledger.budget_counters("wf")] == [(0, 0), (0, 0)]


def test_other_methods_pass_through(fake: FakeBedrock, tmp_path: Path) -> None:
    client = fake.client("bedrock-agent-runtime")
    agents = guard_for(tmp_path).wrap(client, workflow="wf")
    assert agents.meta is client.meta
    assert agents.can_paginate("list_sessions") == client.can_paginate("list_sessions")
    with pytest.raises(costguard.PolicyError):
        guard_for(tmp_path).wrap(object(), workflow="wf")
