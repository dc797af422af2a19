"""A real Strands Agents loop (strands-agents from PyPI) metered through costguard, against the
local Bedrock endpoint, over Converse and over ConverseStream."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from costguard.errors import LoopCapExceeded, ResponseTooLarge, ToolCapExceeded
from tests.support.converse_loop import (
    NOVA_MICRO,
    guard_with,
    ledger_bytes,
    ledger_rows,
    nova_micro_nanos,
    queue_answer,
    queue_tool_use,
    tool_results_sent,
)
from tests.support.wire import FakeBedrock

strands = pytest.importorskip("strands", reason="strands-agents is not installed: pip install 'costguard[strands]'")
from strands.models import BedrockModel  # noqa: E402

from costguard.integrations.strands import meter_agent  # noqa: E402

PROMPT = "Find the status of claim CLM-SECRET-PROMPT-0042"
TOOL_TEXT = "claim CLM-0042 status: TOOL-OUTPUT-SECRET approved"
ANSWER = "The claim ANSWER-SECRET-TEXT is approved."
STREAMING = [pytest.param(False, id="converse"), pytest.param(True, id="converse_stream")]


def agent_on(fake: FakeBedrock, *, streaming: bool, tool_output: str = TOOL_TEXT) -> tuple[Any, list[str]]:
    calls: list[str] = []

    @strands.tool
    def claim_status(claim_id: str) -> str:
        """Look up a claim's status."""
        calls.append(claim_id)
        return tool_output

    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    model = BedrockModel(
        model_id=NOVA_MICRO,
        streaming=streaming,
        boto_session=session,
        endpoint_url=fake.url,
        boto_client_config=Config(retries={"total_max_attempts": 1}, read_timeout=10),
    )
    agent = strands.Agent(model=model, tools=[claim_status], callback_handler=None, name="claims")
    return agent, calls


def ask_for_tool(fake: FakeBedrock, streaming: bool, turn: int) -> None:
    queue_tool_use(fake, streaming=streaming, tool_use_id=f"tooluse_{turn}", name="claim_status",
                   tool_input={"claim_id": "CLM-0042"}, input_tokens=400 + 100 * turn, output_tokens=30)


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_finished_run_is_metered_to_the_token_and_the_nano_dollar(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 5")
    agent, calls = agent_on(fake, streaming=streaming)
    run_agent = meter_agent(agent, guard, workflow="wf", session_id="s-1", user_id="u-1")
    ask_for_tool(fake, streaming, 0)
    queue_answer(fake, streaming=streaming, text=ANSWER, input_tokens=650, output_tokens=45)

    run = run_agent(PROMPT)

    assert not run.stopped and run.violation is None
    assert ANSWER in run.text and calls == ["CLM-0042"]
    assert len(fake.requests) == 2
    usage = guard.session_usage("s-1")
    assert (usage.model_calls, usage.tool_calls) == (2, 1)
    assert (usage.input_tokens, usage.output_tokens) == (400 + 650, 30 + 45)
    assert usage.tool_response_bytes == len(TOOL_TEXT.encode())
    assert usage.cost_usd == Decimal(nova_micro_nanos(400, 30) + nova_micro_nanos(650, 45)) / 10**9
    assert [r["cost_nanos"] for r in ledger_rows(guard, "model_calls")] == [nova_micro_nanos(400, 30), nova_micro_nanos(650, 45)]
    assert [(r["kind"], r["name"]) for r in ledger_rows(guard, "tool_calls")] == [("TOOL_USE", "claim_status")] * 2
    stored = ledger_bytes(guard)
    for text in (PROMPT, "CLM-SECRET-PROMPT", "TOOL-OUTPUT-SECRET", "ANSWER-SECRET-TEXT", "CLM-0042"):
        assert text.encode() not in stored


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_model_that_keeps_asking_for_a_tool_is_stopped_by_max_model_calls(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 3")
    agent, calls = agent_on(fake, streaming=streaming)
    run_agent = meter_agent(agent, guard, workflow="wf", session_id="s-loop")
    for turn in range(3):
        ask_for_tool(fake, streaming, turn)

    run = run_agent(PROMPT)

    assert run.stopped and isinstance(run.violation, LoopCapExceeded)
    assert (run.violation.rule, run.violation.limit, run.violation.observed) == ("per_session.max_model_calls", 3, 4)
    assert len(fake.requests) == 3 and len(calls) == 3  # the fourth call never left the process
    assert run.messages[0]["content"][0]["text"] == PROMPT and len(run.messages) == 7  # the partial conversation
    usage = guard.session_usage("s-loop")
    assert (usage.model_calls, usage.tool_calls, usage.input_tokens) == (3, 3, 400 + 500 + 600)
    assert usage.cost_usd * 10**9 == sum(nova_micro_nanos(400 + 100 * t, 30) for t in range(3))


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_model_that_keeps_asking_for_a_tool_is_stopped_by_max_tool_calls(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_tool_calls: 2")
    agent, calls = agent_on(fake, streaming=streaming)
    run_agent = meter_agent(agent, guard, workflow="wf", session_id="s-tools")
    for turn in range(3):
        ask_for_tool(fake, streaming, turn)

    run = run_agent(PROMPT)

    assert run.stopped and isinstance(run.violation, ToolCapExceeded)
    assert (run.violation.rule, run.violation.limit, run.violation.observed) == ("per_session.max_tool_calls", 2, 3)
    assert len(fake.requests) == 3 and len(calls) == 2  # the third call was asked for, never run
    usage = guard.session_usage("s-tools")
    assert (usage.model_calls, usage.tool_calls) == (3, 3)
    rows = ledger_rows(guard, "model_calls")
    assert [r["input_tokens"] for r in rows[:2]] == [400, 500]
    if streaming:
        # Stopped at the toolUse block start, before the stream's usage: the call is priced at an estimate.
        assert rows[2]["flags"] == "estimated,usage_unknown"
    else:
        assert (rows[2]["input_tokens"], rows[2]["cost_nanos"]) == (600, nova_micro_nanos(600, 30))


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_100_kb_tool_result_is_refused_before_the_request_carrying_it_is_sent(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_tool_response_bytes: 65536")
    big = "r" * 100_000
    agent, calls = agent_on(fake, streaming=streaming, tool_output=big)
    run_agent = meter_agent(agent, guard, workflow="wf", session_id="s-big")
    ask_for_tool(fake, streaming, 0)

    run = run_agent(PROMPT)

    assert run.stopped and isinstance(run.violation, ResponseTooLarge)
    assert (run.violation.rule, run.violation.limit, run.violation.observed) == ("per_session.max_tool_response_bytes", 65536, 100_000)
    assert calls == ["CLM-0042"]
    assert len(fake.requests) == 1 and tool_results_sent(fake) == [[]]  # the 100 KB never reached the endpoint
    usage = guard.session_usage("s-big")
    assert (usage.model_calls, usage.tool_calls, usage.tool_response_bytes) == (1, 1, 0)
    (violation,) = usage.violations
    assert (violation.rule, violation.observed) == ("per_session.max_tool_response_bytes", "100000")
    assert big[:1000].encode() not in ledger_bytes(guard)


def test_workflow_session_and_user_default_to_the_agent_name_and_state(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 2", workflow="claims")
    agent, _ = agent_on(fake, streaming=False)
    agent.state.set("session_id", "from-state")
    agent.state.set("user_id", "user-from-state")
    run_agent = meter_agent(agent, guard)
    again = meter_agent(agent, guard, workflow="claims")  # metering twice rewraps the raw client
    queue_answer(fake, streaming=False, text=ANSWER, input_tokens=80, output_tokens=8)

    run = again(PROMPT)

    assert run.violation is None and run_agent.session_id == again.session_id == "from-state"
    assert again.client.unwrapped is run_agent.client.unwrapped
    usage = guard.session_usage("from-state")
    assert (usage.workflow, usage.user_id, usage.model_calls, usage.input_tokens) == ("claims", "user-from-state", 1, 80)
