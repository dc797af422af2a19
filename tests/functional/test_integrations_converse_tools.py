"""Tool calls and tool results at the Converse boundary, for a hand-written loop on a stock boto3
client: what any framework's Converse loop looks like to the meter."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import boto3
import pytest

import costguard
from costguard.errors import ResponseTooLarge
from costguard.meter.client import GuardedClient
from costguard.policy import PolicySet
from tests.support.converse_loop import NOVA_MICRO, guard_with, ledger_rows, nova_micro_nanos, tool_results_sent
from tests.support.wire import FakeBedrock


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant_tool_use(tool_use_id: str, name: str = "search") -> dict[str, Any]:
    return {"role": "assistant", "content": [{"toolUse": {"toolUseId": tool_use_id, "name": name, "input": {}}}]}


def result(tool_use_id: str, *content: dict[str, Any]) -> dict[str, Any]:
    return {"toolResult": {"toolUseId": tool_use_id, "content": list(content)}}


def ask(fake: FakeBedrock, tool_use_id: str, input_tokens: int = 100) -> None:
    fake.queue_converse(input_tokens, 10, stop_reason="tool_use",
                        content=[{"toolUse": {"toolUseId": tool_use_id, "name": "search", "input": {"q": "x"}}}])


def test_each_result_is_sized_once_though_the_history_repeats_it(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_tool_calls: 10")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    history: list[dict[str, Any]] = [user({"text": "go"})]
    ask(fake, "t1")
    ask(fake, "t2")
    fake.queue_converse(300, 20)
    runtime.converse(modelId=NOVA_MICRO, messages=history)
    history += [assistant_tool_use("t1"), user(result("t1", {"text": "é" * 10}))]  # 20 UTF-8 bytes
    runtime.converse(modelId=NOVA_MICRO, messages=history)
    history += [assistant_tool_use("t2"), user(result("t2", {"json": {"a": [1, 2], "b": "ü"}}))]
    runtime.converse(modelId=NOVA_MICRO, messages=history)

    usage = guard.session_usage("s-1")
    compact = '{"a":[1,2],"b":"ü"}'.encode()
    assert (usage.model_calls, usage.tool_calls) == (3, 2)
    assert (usage.tool_response_bytes, usage.max_tool_response_bytes) == (20 + len(compact), 20)
    assert usage.cost_usd * 10**9 == nova_micro_nanos(100, 10) * 2 + nova_micro_nanos(300, 20)
    rows = ledger_rows(guard, "tool_calls")
    assert [(r["name"], r["response_bytes"]) for r in rows] == [("search", None), ("search", 20), ("search", None), ("search", len(compact))]


def test_image_and_document_results_count_their_bytes(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_request:\n  max_tool_response_bytes: 5000")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-img")
    png = b"\x89PNG" + b"\x00" * 3000
    messages = [user({"text": "go"}), assistant_tool_use("t-img"),
                user(result("t-img", {"image": {"format": "png", "source": {"bytes": png}}},
                            {"document": {"format": "txt", "name": "d", "source": {"bytes": b"d" * 2500}}}))]

    with pytest.raises(ResponseTooLarge) as refused:
        runtime.converse(modelId=NOVA_MICRO, messages=messages)

    assert refused.value.observed == len(png) + 2500
    assert fake.requests == []


def test_a_refused_result_is_refused_again_when_the_loop_sends_it_again(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_tool_response_bytes: 1000")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-retry")
    messages = [user({"text": "go"}), assistant_tool_use("t-big"), user(result("t-big", {"text": "z" * 1001}))]
    for _ in range(2):
        with pytest.raises(ResponseTooLarge):
            runtime.converse(modelId=NOVA_MICRO, messages=messages)
    assert fake.requests == []
    assert [v.rule for v in guard.session_usage("s-retry").violations] == ["per_session.max_tool_response_bytes"] * 2


def test_in_shadow_mode_an_oversize_result_is_sent_and_recorded(fake: FakeBedrock, tmp_path: Path) -> None:
    policies = PolicySet.from_yaml("version: 1\nworkflows:\n  wf:\n    mode: shadow\n    per_request:\n      max_tool_response_bytes: 10\n")
    guard = costguard.Guard(policies, ledger=f"sqlite:///{tmp_path}/ledger.db", user_id_key=False)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-shadow")
    fake.queue_converse(50, 5)
    runtime.converse(modelId=NOVA_MICRO, messages=[user({"text": "go"}), assistant_tool_use("t-s"), user(result("t-s", {"text": "y" * 64}))])
    assert tool_results_sent(fake) == [[{"toolUseId": "t-s", "content": [{"text": "y" * 64}]}]]
    usage = guard.session_usage("s-shadow")
    # A result whose call this process never saw (a restored conversation) is counted as a call too.
    assert (usage.tool_calls, usage.tool_response_bytes) == (1, 64)
    (violation,) = usage.violations
    assert (violation.rule, violation.enforced) == ("per_request.max_tool_response_bytes", False)


def test_stream_tool_calls_are_counted_at_their_block_start(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_request:\n  max_tool_calls: 1")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-par")
    starts = [{"contentBlockStart": {"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": f"p{i}", "name": "search"}}}}
              for i in range(2)]
    fake.queue_stream("ConverseStream", [{"messageStart": {"role": "assistant"}}, *starts, {"messageStop": {"stopReason": "tool_use"}}])
    seen = []
    with pytest.raises(costguard.ToolCapExceeded) as stopped:
        for event in runtime.converse_stream(modelId=NOVA_MICRO, messages=[user({"text": "go"})])["stream"]:
            seen.append(next(iter(event)))
    assert seen == ["messageStart", "contentBlockStart"]  # the second parallel call was never handed over
    assert (stopped.value.rule, stopped.value.observed) == ("per_request.max_tool_calls", 2)


def test_wrap_session_hands_out_wrapped_bedrock_runtime_clients_only(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 5")
    session = guard.wrap_session(boto3.Session(region_name="us-east-1"), workflow="wf", session_id="s-ws", user_id="u-ws")
    runtime = session.client("bedrock-runtime", endpoint_url=fake.url)
    agents = session.client(service_name="bedrock-agent-runtime", endpoint_url=fake.url)
    s3 = session.client("s3")
    assert isinstance(runtime, GuardedClient) and isinstance(agents, GuardedClient)
    assert not isinstance(s3, GuardedClient) and session.region_name == "us-east-1"
    fake.queue_converse(40, 4)
    runtime.converse(modelId=NOVA_MICRO, messages=[user({"text": "hi"})])
    usage = guard.session_usage("s-ws")
    assert (usage.workflow, usage.user_id, usage.model_calls) == ("wf", "u-ws", 1)
    with pytest.raises(costguard.PolicyError):
        guard.wrap_session(boto3.Session(), workflow="")
