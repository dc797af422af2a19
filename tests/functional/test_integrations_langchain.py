"""LangChain (langchain-aws from PyPI): ChatBedrockConverse in a tool-calling agent loop and
ChatBedrock streaming, on a costguard client, against the local Bedrock endpoint. Workflow,
session and user come from each run's config."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costguard.errors import LoopCapExceeded, PolicyViolation, ResponseTooLarge, ToolCapExceeded
from tests.support.converse_loop import (
    NOVA_MICRO,
    guard_with,
    ledger_bytes,
    ledger_rows,
    nanos,
    nova_micro_nanos,
    queue_answer,
    queue_tool_use,
    tool_results_sent,
)
from tests.support.wire import FakeBedrock

langchain_aws = pytest.importorskip("langchain_aws", reason="langchain-aws is not installed: pip install 'costguard[langchain]'")
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from costguard.integrations.langchain import govern  # noqa: E402

# Published on-demand price, USD per 1M tokens (https://aws.amazon.com/bedrock/pricing/):
# Anthropic Claude 3.5 Haiku 0.80 input / 4.00 output.
HAIKU_35 = "anthropic.claude-3-5-haiku-20241022-v1:0"
PROMPT = "Where is parcel PRC-SECRET-PROMPT-77?"
TOOL_TEXT = "parcel PRC-77: TOOL-OUTPUT-SECRET in transit"
ANSWER = "Parcel ANSWER-SECRET-TEXT is in transit."
STREAMING = [pytest.param(False, id="converse"), pytest.param(True, id="converse_stream")]


def tracker(output: str = TOOL_TEXT) -> tuple[Any, list[str]]:
    calls: list[str] = []

    @tool
    def parcel_status(parcel_id: str) -> str:
        """Where a parcel is."""
        calls.append(parcel_id)
        return output

    return parcel_status, calls


def run_loop(llm: Any, tool_fn: Any, *, streaming: bool, config: dict[str, Any], max_turns: int = 6) -> list[BaseMessage]:
    """The classic LangChain tool loop: ask the model, run the tools it calls, feed the results back."""
    bound = llm.bind_tools([tool_fn])
    messages: list[BaseMessage] = [HumanMessage(PROMPT)]
    for _ in range(max_turns):
        if streaming:
            reply: Any = None
            for chunk in bound.stream(messages, config=config):
                reply = chunk if reply is None else reply + chunk
        else:
            reply = bound.invoke(messages, config=config)
        messages.append(reply)
        if not reply.tool_calls:
            return messages
        messages.extend(tool_fn.invoke(call) for call in reply.tool_calls)
    return messages


def converse_model(fake: FakeBedrock, guard: Any) -> Any:
    llm = langchain_aws.ChatBedrockConverse(model=NOVA_MICRO, client=fake.client("bedrock-runtime"), region_name="us-east-1")
    return govern(llm, guard, workflow="wf")


def ask_for_tool(fake: FakeBedrock, streaming: bool, turn: int) -> None:
    queue_tool_use(fake, streaming=streaming, tool_use_id=f"tooluse_{turn}", name="parcel_status",
                   tool_input={"parcel_id": "PRC-77"}, input_tokens=300 + 100 * turn, output_tokens=25)


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_finished_loop_is_metered_per_session_from_the_run_config(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 4")
    llm = converse_model(fake, guard)
    tool_fn, calls = tracker()
    ask_for_tool(fake, streaming, 0)
    queue_answer(fake, streaming=streaming, text=ANSWER, input_tokens=520, output_tokens=35)

    messages = run_loop(llm, tool_fn, streaming=streaming, config={"metadata": {"session_id": "lc-1", "user_id": "u-9"}})

    assert isinstance(messages[-1], AIMessage) and ANSWER in str(messages[-1].content) and calls == ["PRC-77"]
    usage = guard.session_usage("lc-1")
    assert (usage.workflow, usage.user_id, usage.model_calls, usage.tool_calls) == ("wf", "u-9", 2, 1)
    assert (usage.input_tokens, usage.output_tokens, usage.tool_response_bytes) == (820, 60, len(TOOL_TEXT.encode()))
    assert usage.cost_usd == Decimal(nova_micro_nanos(300, 25) + nova_micro_nanos(520, 35)) / 10**9
    assert guard.session_usage("").model_calls == 0  # nothing fell back to the unbound session
    stored = ledger_bytes(guard)
    for text in ("PRC-SECRET-PROMPT", "TOOL-OUTPUT-SECRET", "ANSWER-SECRET-TEXT", "PRC-77"):
        assert text.encode() not in stored


def test_one_model_object_serves_sessions_named_by_each_run(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 1")
    llm = converse_model(fake, guard)
    fake.queue_converse(100, 10)
    fake.queue_converse(200, 20)
    llm.invoke("one", config={"metadata": {"session_id": "a"}})
    llm.invoke("two", config={"configurable": {"thread_id": "ignored"}, "metadata": {"thread_id": "b"}})
    with pytest.raises(LoopCapExceeded):
        llm.invoke("three", config={"metadata": {"costguard_session_id": "a"}})
    assert len(fake.requests) == 2
    assert [(u.model_calls, u.input_tokens) for u in (guard.session_usage("a"), guard.session_usage("b"))] == [(1, 100), (1, 200)]


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_model_that_keeps_asking_for_a_tool_is_stopped_by_max_model_calls(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 3")
    llm = converse_model(fake, guard)
    tool_fn, calls = tracker()
    for turn in range(3):
        ask_for_tool(fake, streaming, turn)

    with pytest.raises(LoopCapExceeded) as stopped:
        run_loop(llm, tool_fn, streaming=streaming, config={"metadata": {"session_id": "lc-loop"}})

    assert (stopped.value.rule, stopped.value.observed) == ("per_session.max_model_calls", 4)
    assert len(fake.requests) == 3 and len(calls) == 3
    usage = guard.session_usage("lc-loop")
    assert (usage.model_calls, usage.tool_calls, usage.input_tokens) == (3, 3, 300 + 400 + 500)


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_model_that_keeps_asking_for_a_tool_is_stopped_by_max_tool_calls(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_tool_calls: 2")
    llm = converse_model(fake, guard)
    tool_fn, calls = tracker()
    for turn in range(3):
        ask_for_tool(fake, streaming, turn)

    with pytest.raises(ToolCapExceeded) as stopped:
        run_loop(llm, tool_fn, streaming=streaming, config={"metadata": {"session_id": "lc-tools"}})

    assert (stopped.value.rule, stopped.value.limit, stopped.value.observed) == ("per_session.max_tool_calls", 2, 3)
    assert len(fake.requests) == 3 and len(calls) == 2
    assert guard.session_usage("lc-tools").tool_calls == 3


@pytest.mark.parametrize("streaming", STREAMING)
def test_a_100_kb_tool_result_is_refused_before_the_request_carrying_it_is_sent(fake: FakeBedrock, tmp_path: Path, streaming: bool) -> None:
    guard = guard_with(tmp_path, "per_request:\n  max_tool_response_bytes: 65536")
    llm = converse_model(fake, guard)
    tool_fn, calls = tracker("é" * 50_000)  # 100,000 UTF-8 bytes
    ask_for_tool(fake, streaming, 0)

    with pytest.raises(ResponseTooLarge) as stopped:
        run_loop(llm, tool_fn, streaming=streaming, config={"metadata": {"session_id": "lc-big"}})

    assert (stopped.value.rule, stopped.value.observed) == ("per_request.max_tool_response_bytes", 100_000)
    assert calls == ["PRC-77"] and len(fake.requests) == 1 and tool_results_sent(fake) == [[]]
    assert guard.session_usage("lc-big").violations[0].rule == "per_request.max_tool_response_bytes"


def test_chat_bedrock_streams_through_invoke_model_with_response_stream_metered(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 1")
    llm = govern(
        langchain_aws.ChatBedrock(model_id=HAIKU_35, client=fake.client("bedrock-runtime"), region_name="us-east-1", streaming=True),
        guard,
        workflow="wf",
    )
    chunks = [
        {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "content": [],
                                              "model": HAIKU_35, "usage": {"input_tokens": 900, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ANSWER}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 45}},
        {"type": "message_stop"},
    ]
    fake.queue_invoke_model_stream(chunks, {"inputTokenCount": 900, "outputTokenCount": 45, "invocationLatency": 321, "firstByteLatency": 90})
    config = {"metadata": {"session_id": "cb-1"}}

    text = "".join(str(chunk.content) for chunk in llm.stream(PROMPT, config=config))

    assert text == ANSWER
    assert fake.requests[0]["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"
    (row,) = ledger_rows(guard, "model_calls")
    assert (row["session_id"], row["input_tokens"], row["output_tokens"]) == ("cb-1", 900, 45)
    assert row["cost_nanos"] == nanos(900, "0.80") + nanos(45, "4.00")
    with pytest.raises(PolicyViolation):
        llm.invoke(PROMPT, config=config)
    assert len(fake.requests) == 1


def test_concurrent_async_runs_are_each_bound_to_their_own_session(fake: FakeBedrock, tmp_path: Path) -> None:
    import asyncio

    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 1")
    llm = converse_model(fake, guard)
    fake.queue_converse(100, 10)
    fake.queue_converse(100, 10)
    fake.queue_converse_stream(70, 7)

    async def runs() -> None:
        await asyncio.gather(*(llm.ainvoke(PROMPT, config={"metadata": {"session_id": s}}) for s in ("x", "y")))
        async for _ in llm.astream(PROMPT, config={"metadata": {"session_id": "z"}}):
            pass

    asyncio.run(runs())

    usage = {s: guard.session_usage(s) for s in ("x", "y", "z", "")}
    assert [(usage[s].model_calls, usage[s].input_tokens) for s in ("x", "y", "z", "")] == [(1, 100), (1, 100), (1, 70), (0, 0)]
