"""Stuck loops and pinned models over the wire: stock boto3 clients, the local Bedrock endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

import costguard
from costguard.ledger.dynamodb import DynamoDBLedger
from costguard.policy import PolicySet
from tests.functional.test_guard_dynamodb import table  # noqa: F401 - the shared-table fixture
from tests.support.traces import SONNET, Loop
from tests.support.wire import FakeBedrock

NOVA_MICRO = "amazon.nova-micro-v1:0"
HELLO = [{"role": "user", "content": [{"text": "hi"}]}]


def policies(section: dict[str, Any]) -> PolicySet:
    return PolicySet.from_dict({"version": 1, "workflows": {"wf": section}})


def page(n: int) -> list[dict[str, Any]]:
    return [{"name": "page", "type": "integer", "value": str(n)}, {"name": "q", "type": "string", "value": "open claims"}]


def stuck_loop(pages: list[int]) -> Loop:
    """An agent that calls claims::search_claims once per page number given, then answers."""
    loop = Loop().model_call(SONNET, 800, 40, "pre-0", kind="preProcessingTrace")
    for step, n in enumerate(pages):
        loop.model_call(SONNET, 1000, 50, f"t-{step}")
        loop.action_group('{"items": []}', f"t-{step}", function="search_claims", parameters=page(n))
    loop.model_call(SONNET, 1000, 50, f"t-{len(pages)}")
    return loop.answer()


def invoke(agents: Any, session: str = "s-1") -> list[dict[str, Any]]:
    response = agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId=session, inputText="hi")
    return list(response["completion"])


# -- stuck loops: InvokeAgent -----------------------------------------------------------------------


def test_invoke_agent_repeating_one_call_is_stopped_at_the_repeat_after_the_cap(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN an agent asking for page 1 ten times, and at most 3 identical calls per request
    fake.queue_agent_response(stuck_loop([1] * 10).events)
    guard = costguard.Guard(policies({"per_request": {"max_repeated_tool_calls": 3}}), ledger=f"sqlite:///{tmp_path}/l.db")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    # WHEN the stream is read
    with pytest.raises(costguard.LoopCapExceeded) as info:
        invoke(agents)
    # THEN the 4th identical call is the violation, the stream is closed, the usage so far kept
    v = info.value
    assert (v.rule, v.limit, v.observed) == ("per_request.max_repeated_tool_calls", 3, 4)
    assert v.to_dict()["detail"]["tool"] == "claims::search_claims"
    stream = fake.wait_for_stream_end()
    assert stream.client_hung_up and not stream.completed
    usage = guard.session_usage("s-1")
    assert (usage.model_calls, usage.tool_calls) == (5, 4)
    assert [x.rule for x in usage.violations] == ["per_request.max_repeated_tool_calls"]


def test_paging_forward_is_not_a_loop_and_parameter_order_does_not_matter(fake: FakeBedrock, tmp_path: Path) -> None:
    loop = stuck_loop([1, 2, 3, 4, 5, 6])
    fake.queue_agent_response(loop.events)
    guard = costguard.Guard(policies({"per_request": {"max_repeated_tool_calls": 1}}), ledger=f"sqlite:///{tmp_path}/l.db")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    assert invoke(agents) == [{"chunk": {"bytes": b"done"}}]
    # Same parameters in another order: the same call.
    again = Loop().model_call(SONNET, 10, 1, "a")
    again.action_group("{}", "a", function="search_claims", parameters=page(1))
    again.action_group("{}", "b", function="search_claims", parameters=list(reversed(page(1))))
    fake.queue_agent_response(again.answer().events)
    with pytest.raises(costguard.LoopCapExceeded) as info:
        invoke(agents, session="s-2")
    assert (info.value.limit, info.value.observed) == (1, 2)


def test_per_session_repeats_add_up_across_requests_and_guards(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN two requests of one session, each asking for page 1 twice, on two Guards (processes)
    section = {"per_session": {"max_repeated_tool_calls": 3}}
    url = f"sqlite:///{tmp_path}/l.db"
    first_guard = costguard.Guard(policies(section), ledger=url)
    first = first_guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    second = costguard.Guard(policies(section), ledger=url).wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    fake.queue_agent_response(stuck_loop([1, 1]).events)
    fake.queue_agent_response(stuck_loop([1, 1]).events)
    assert invoke(first) == [{"chunk": {"bytes": b"done"}}]
    first_guard.flush()  # what the first process's writer does within a second
    # WHEN the second request repeats the call for the 4th time in the session
    with pytest.raises(costguard.LoopCapExceeded) as info:
        invoke(second)
    # THEN it is stopped there
    assert (info.value.rule, info.value.observed) == ("per_session.max_repeated_tool_calls", 4)
    assert fake.wait_for_stream_end().client_hung_up


def test_shadow_mode_records_the_stuck_loop_and_lets_it_run(fake: FakeBedrock, tmp_path: Path) -> None:
    fake.queue_agent_response(stuck_loop([1] * 4).events)
    guard = costguard.Guard(policies({"mode": "shadow", "per_request": {"max_repeated_tool_calls": 2}}),
                            ledger=f"sqlite:///{tmp_path}/l.db")
    assert invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")) == [{"chunk": {"bytes": b"done"}}]
    (violation,) = guard.session_usage("s-1").violations
    assert (violation.rule, violation.observed, violation.enforced) == ("per_request.max_repeated_tool_calls", "3", False)


# -- stuck loops: Converse -------------------------------------------------------------------------


def converse_loop(runtime: Any, fake: FakeBedrock, turns: int) -> list[dict[str, Any]]:
    """A Converse agent loop whose model asks for search(page=1) every turn."""
    messages: list[dict[str, Any]] = list(HELLO)
    for turn in range(turns):
        tool_use = {"toolUseId": f"tu-{turn}", "name": "search", "input": {"page": 1, "q": "open claims"}}
        fake.queue_converse(100, 20, content=[{"toolUse": tool_use}], stop_reason="tool_use")
        answer = runtime.converse(modelId=NOVA_MICRO, messages=messages)
        messages = [*messages, answer["output"]["message"],
                    {"role": "user", "content": [{"toolResult": {"toolUseId": tool_use["toolUseId"], "content": [{"text": "[]"}]}}]}]
    return messages


def test_converse_loop_is_refused_before_the_request_that_would_repeat_the_call(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN at most 2 identical tool calls per conversation
    guard = costguard.Guard(policies({"per_request": {"max_repeated_tool_calls": 2}}), ledger=f"sqlite:///{tmp_path}/l.db")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-c")
    # WHEN the model asks for the same search three times
    messages = converse_loop(runtime, fake, 3)
    assert len(fake.requests) == 3
    # THEN the request carrying the third identical call's result is refused before it is sent
    with pytest.raises(costguard.LoopCapExceeded) as info:
        runtime.converse(modelId=NOVA_MICRO, messages=messages)
    assert (info.value.rule, info.value.limit, info.value.observed) == ("per_request.max_repeated_tool_calls", 2, 3)
    assert len(fake.requests) == 3
    usage = guard.session_usage("s-c")
    assert usage.model_calls == 3 and [v.rule for v in usage.violations] == ["per_request.max_repeated_tool_calls"]


def test_converse_per_session_counts_each_call_once(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = costguard.Guard(policies({"per_session": {"max_repeated_tool_calls": 2}}), ledger=f"sqlite:///{tmp_path}/l.db")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-c")
    messages = converse_loop(runtime, fake, 3)  # calls 1 and 2 counted by requests 2 and 3
    guard.flush()
    assert list(guard.ledger.tool_repeats("s-c").values()) == [2]
    with pytest.raises(costguard.LoopCapExceeded) as info:
        runtime.converse(modelId=NOVA_MICRO, messages=messages)
    assert (info.value.rule, info.value.observed) == ("per_session.max_repeated_tool_calls", 3)
    assert len(fake.requests) == 3


# -- model pinning ---------------------------------------------------------------------------------


PIN = {"models": {"pin": "session"}}


def test_pinned_session_refuses_a_second_model_before_sending_sqlite(fake: FakeBedrock, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    runtime = costguard.Guard(policies(PIN), ledger=url).wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-p")
    fake.queue_converse(10, 1)
    fake.queue_converse(10, 1)
    # GIVEN a session started on Claude 3.5 Sonnet through a US inference profile
    runtime.converse(modelId="us." + SONNET, messages=HELLO)
    # AND continued on the same model by its ARN (the same model)
    runtime.converse(modelId=f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET}", messages=HELLO)
    # WHEN a call on another model is made, here and from another process
    other = costguard.Guard(policies(PIN), ledger=url).wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-p")
    for client in (runtime, other):
        with pytest.raises(costguard.ModelNotAllowed) as info:
            client.converse(modelId=NOVA_MICRO, messages=HELLO)
        # THEN it is refused before it is sent
        assert (info.value.rule, info.value.limit, info.value.observed) == ("models.pin", SONNET, NOVA_MICRO)
    assert len(fake.requests) == 2
    # AND another session may start on any model
    fake.queue_converse(10, 1)
    other_session = costguard.Guard(policies(PIN), ledger=url).wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-q")
    other_session.converse(modelId=NOVA_MICRO, messages=HELLO)


def test_pinned_session_refuses_a_second_model_before_sending_dynamodb(fake: FakeBedrock, table: str) -> None:  # noqa: F811
    def host() -> Any:
        ledger = DynamoDBLedger(table, client=boto3.client("dynamodb", region_name="us-east-1"))
        return costguard.Guard(policies(PIN), ledger=ledger).wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-p")

    a, b = host(), host()
    fake.queue_converse(10, 1)
    a.converse(modelId=NOVA_MICRO, messages=HELLO)
    with pytest.raises(costguard.ModelNotAllowed) as info:
        b.converse(modelId="global." + SONNET, messages=HELLO)
    assert (info.value.rule, info.value.limit) == ("models.pin", NOVA_MICRO)
    assert len(fake.requests) == 1
    fake.queue_converse(10, 1)
    b.converse(modelId="us." + NOVA_MICRO, messages=HELLO)  # the pinned model, by its profile


def test_pinned_agent_session_stops_the_step_on_another_model(fake: FakeBedrock, tmp_path: Path) -> None:
    loop = Loop().model_call(SONNET, 100, 10, "a").model_call(NOVA_MICRO, 100, 10, "b").answer()
    fake.queue_agent_response(loop.events)
    guard = costguard.Guard(policies(PIN), ledger=f"sqlite:///{tmp_path}/l.db")
    with pytest.raises(costguard.ModelNotAllowed) as info:
        invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    assert (info.value.rule, info.value.observed) == ("models.pin", NOVA_MICRO)
    assert guard.session_usage("s-1").model_calls == 1


def test_a_step_of_unknown_model_does_not_pin_the_session(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN an agent whose trace names no model for its first step (and no default model)
    loop = Loop().model_call(None, 100, 10, "a").model_call(SONNET, 100, 10, "b").answer()
    fake.queue_agent_response(loop.events)
    guard = costguard.Guard(policies(PIN), ledger=f"sqlite:///{tmp_path}/l.db")
    # THEN the session is pinned by the first model that is known
    assert invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")) == [{"chunk": {"bytes": b"done"}}]
    assert guard.ledger.pin_session_model("s-1", NOVA_MICRO, 0) == SONNET


# -- latency split ----------------------------------------------------------------------------------


def test_latency_split_is_recorded_per_request_and_rolled_up_per_session(fake: FakeBedrock, tmp_path: Path) -> None:
    fake.queue_agent_response(stuck_loop([1, 2]).events)
    fake.queue_converse_stream(10, 2)
    guard = costguard.Guard(policies({}), ledger=f"sqlite:///{tmp_path}/l.db")
    invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    stream = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1").converse_stream(
        modelId=NOVA_MICRO, messages=HELLO)
    list(stream["stream"])
    guard.flush()
    rows = guard.ledger.connection().execute(  # type: ignore[attr-defined]
        "SELECT operation, ttft_ms, latency_ms, model_latency_ms, tool_latency_ms FROM requests ORDER BY started_ms"
    ).fetchall()
    agent, converse_stream = rows
    # The trace's metadata says 800 ms per model call (4 calls) and 120 ms per tool call (2 calls).
    assert agent[0] == "InvokeAgent" and (agent[3], agent[4]) == (3200, 240)
    assert converse_stream[0] == "ConverseStream"
    for row in rows:
        assert row[1] is not None and 0 <= row[1] <= row[2]
    usage = guard.session_usage("s-1")
    assert (usage.model_latency_ms, usage.tool_latency_ms) == (3200 + 300, 240)
    assert usage.latency_ms == agent[2] + converse_stream[2]
